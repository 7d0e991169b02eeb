"""The banks of issue 12: the AlgoPerf converter (on a tiny fixture), the night bank reader, the
replay of a bank that is not a grid, learned-with-history, and the per-bank summary and rule."""

from __future__ import annotations

import csv
import gzip
import json
import math

import pytest

from benchmarks.curve_bank import algoperf, grid
from benchmarks.curve_bank.bank import ALGOPERF_DIR, NIGHT_BANK_PATH, load_bank, run_from_dict
from benchmarks.pruning import bench
from benchmarks.pruning.banks import load_cases
from benchmarks.pruning.simulate import Settings, simulate

# ---- AlgoPerf conversion on a tiny fixture -------------------------------------------------

TRIAL_COLS = ["trial_id", "leaderboard", "ruleset", "submission", "study", "workload", "trial",
              "has_grad_norm", "n_train_points", "n_evals", "max_step", "final_val_loss", "hparams"]
SPEC = {"w": {"workload": "toy_vit", "batch_size": 4, "budget_steps": 600},
        "c": {"workload": "toy_conformer", "batch_size": 2, "budget_steps": 400}}


def _write_fixture(src):
    """Six toy ViT trials (kept, too short, diverged, non-finite, lawa, no grad norm) and one
    toy Conformer trial (no evaluations). Logged every 100 steps, from step 0."""
    trials, train, evals = [], [], []

    def trial(name, workload, submission="baseline", last=800, loss0=7.0, slope=0.005, grad=1.0,
              has_grad="True", val=None, nan_at=None):
        tid = f"lb/external_tuning/{submission}/study_0/{workload}/{name}"
        trials.append([tid, "lb", "external_tuning", submission, "study_0", workload, name, has_grad,
                       0, 0, last, "", json.dumps({"lr": 0.001})])
        if has_grad == "True":
            for step in range(0, last + 1, 100):
                loss = "nan" if nan_at == step else loss0 - slope * step
                train.append([tid, step, loss, grad + step / 1000])
        for step, v in val or []:
            evals.append([tid, step, step / 10, 0, v, v, 0, 0, 0])

    trial("trial_1", "toy_vit", val=[(1, 6.9), (500, 3.0), (700, 2.0)])  # val at 600: 2.5
    trial("trial_2", "toy_vit", last=300, val=[(1, 6.9), (300, 5.0)])  # ends before the budget
    trial("trial_3", "toy_vit", val=[(1, 6.9), (700, 9.0)])  # diverged: above the step-0 loss
    trial("trial_4", "toy_vit", nan_at=200, val=[(1, 6.9), (700, 2.0)])  # non-finite loss
    trial("trial_5", "toy_vit", submission="lawa_ema", val=[(1, 6.9), (700, 2.0)])
    trial("trial_6", "toy_vit", has_grad="False", val=[(1, 6.9), (700, 2.0)])
    trial("trial_1", "toy_conformer", last=500, loss0=5.0, slope=0.01)
    src.mkdir()
    with open(src / algoperf.TRIALS, "w", newline="") as f:
        csv.writer(f).writerows([TRIAL_COLS, *trials])
    with gzip.open(src / algoperf.TRAIN, "wt", newline="") as f:
        csv.writer(f).writerows([["trial_id", "global_step", "loss", "grad_norm"], *train])
    with gzip.open(src / algoperf.EVAL, "wt", newline="") as f:
        csv.writer(f).writerows([["trial_id", "global_step", "accumulated_submission_time", "train/loss",
                                  "validation/loss", "test/loss", "train/accuracy", "validation/accuracy",
                                  "preemption_count"], *evals])
    (src / algoperf.LICENSE).write_text("Apache License 2.0 (fixture)\n")


def test_algoperf_conversion_keeps_comparable_trials_and_reads_the_objective_at_the_budget(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _write_fixture(src)
    summary = algoperf.convert(src, out, every=2, workloads=SPEC)
    assert (out / algoperf.LICENSE).read_text().startswith("Apache")
    assert summary["w"]["kept"] == 1
    assert summary["w"]["dropped"] == {"ends before the budget": 1, "diverged (objective above the step-0 loss)": 1,
                                       "non-finite loss or grad norm": 1, "lawa (broken global_step)": 1,
                                       "no grad norm": 1}
    vit = load_bank(out / "w.jsonl.gz")
    assert vit.meta["objective"] == "val_loss" and vit.meta["sampler"] == "random"
    assert vit.meta["budget_samples"] == 600 * 4
    (run,) = vit.runs
    # every 2nd logged point up to the budget (steps 100 ... 600), step 0 left out
    assert run.steps["step"] == [100, 300, 500, 600]
    assert run.steps["samples"] == [400, 1200, 2000, 2400]
    assert run.steps["seconds"] == [1.0, 3.0, 5.0, 6.0]
    assert run.steps["loss"] == pytest.approx([6.5, 5.5, 4.5, 4.0])
    assert run.steps["grad_norm"] == pytest.approx([1.1, 1.3, 1.5, 1.6])
    assert run.objective("val_loss") == pytest.approx(2.5)  # between the evals at 500 and 700
    assert run.budget == 2400 and run.config["hparams"] == {"lr": 0.001}
    conformer = load_bank(out / "c.jsonl.gz")
    assert conformer.meta["objective"] == "train_loss_at_budget"
    (c,) = conformer.runs
    # no evaluations: the mean of the last 10 logged training losses up to step 400 (0 ... 400)
    assert c.objective("train_loss_at_budget") == pytest.approx(sum(5.0 - 0.01 * s for s in range(0, 401, 100)) / 5)
    assert c.steps["step"][-1] == 400 and c.budget == 800


@pytest.mark.skipif(not (ALGOPERF_DIR / "vit.jsonl.gz").exists(), reason="no converted AlgoPerf banks")
def test_the_stored_algoperf_banks_carry_the_licence_and_comparable_runs():
    assert "Apache License" in (ALGOPERF_DIR / algoperf.LICENSE).read_text()
    assert (ALGOPERF_DIR / "README.md").exists()
    for name in ("vit", "conformer"):
        bank = load_bank(ALGOPERF_DIR / f"{name}.jsonl.gz")
        assert len(bank.runs) >= 60 and bank.meta["workload"] == algoperf.WORKLOADS[name]["workload"]
        objective = bank.meta["objective"]
        assert len({r.config_id for r in bank.runs}) == len(bank.runs)
        for r in bank.runs:
            assert r.budget == bank.meta["budget_samples"]
            assert r.steps["step"][-1] == bank.meta["budget_steps"]
            assert all(math.isfinite(v) for v in r.steps["loss"] + r.steps["grad_norm"])
            assert r.objective(objective) is not None


# ---- the night bank -----------------------------------------------------------------------


@pytest.mark.skipif(not NIGHT_BANK_PATH.exists(), reason="no night bank (generate --bank night)")
def test_the_night_bank_holds_both_nights_of_the_same_grid():
    bank = load_bank(NIGHT_BANK_PATH)
    assert bank.meta["bank"] == "night" and bank.meta["budget_samples"] == grid.NIGHT_BUDGET_SAMPLES
    lrs = grid.NIGHT_LEARNING_RATES
    assert len(lrs) >= 10 and max(lrs) / min(lrs) >= 99  # two decades
    n1, n2 = bank.night(1), bank.night(2)
    assert len(n1) == len(n2) == len(grid.NIGHT_BATCH_SIZES) * len(lrs)
    assert {r.config_id for r in n1} == {r.config_id for r in n2}
    assert {r.id for r in n1}.isdisjoint({r.id for r in n2})
    for r in n1 + n2:
        assert r.budget == grid.NIGHT_BUDGET_SAMPLES and r.n_steps == r.budget // r.config["batch"]
        assert r.objective("eval_loss") is not None
    # the two nights disagree somewhere: different data, not a copy
    e1 = {r.config_id: r.objective("eval_loss") for r in n1}
    assert any(abs(e1[r.config_id] - r.objective("eval_loss")) > 1e-6 for r in n2)


def test_night_runs_name_both_nights_and_share_config_ids():
    runs = grid.night_runs()
    assert len(runs) == 2 * len(grid.NIGHT_BATCH_SIZES) * len(grid.NIGHT_LEARNING_RATES)
    ids = [grid.ids_of(r) for r in runs]
    assert len({i for i, _ in ids}) == len(runs)
    assert len({c for _, c in ids}) == len(runs) // 2
    assert grid.ids_of({"batch": 8, "lr": 4e-3, "warmup": 0, "schedule": "constant", "seed": 1}) == (
        "b8_lr4e-03_w0_constant_s1", "b8_lr4e-03_w0_constant")


def test_load_cases_brings_night1_along_as_night2s_history(tmp_path):
    cases = load_cases(["night2"])
    if not NIGHT_BANK_PATH.exists():
        assert cases == []
        return
    assert [c.name for c in cases] == ["night1", "night2"]
    assert cases[1].history_from == "night1" and cases[1].grace == grid.NIGHT_BUDGET_SAMPLES / 16
    assert all(c.sampler == "tpe" and c.tiny for c in cases)


# ---- a bank that is not a grid, and history ------------------------------------------------


def toy_bank(n=8):
    """``n`` configs with no grid keys; final loss = the early loss (so loss pruning is right)."""
    runs = []
    for i in range(n):
        loss = 1.0 + 0.1 * ((i * 5) % n)
        runs.append(run_from_dict({
            "id": f"x{i}", "config_id": f"x{i}", "config": {"submission": "s", "seed": 0},
            "steps": {"step": [1, 2, 3, 4], "samples": [8, 16, 24, 32], "loss": [loss] * 4,
                      "grad_norm": [1.0] * 4, "seconds": [1.0, 2.0, 3.0, 4.0]},
            "final": {"val_loss": loss, "wall_seconds": 5.0},
        }))  # fmt: skip
    return runs


def test_a_bank_that_is_not_a_grid_is_sampled_by_config_id_without_repeats():
    s = Settings(n_trials=6, workers=2, sampler="random", objective="val_loss", grace=8, reduction_factor=2, window=1)
    for pruner in ("none", "asha_loss", "asha_loss_sweepd", "median_loss"):
        r = simulate(toy_bank(), pruner, seed=1, settings=s)
        assert len({t.config_id for t in r.trials}) == 6, pruner
        assert r.grid_samples == 8 * 32 and 0 <= r.regret_frac <= 1
    r = simulate(toy_bank(), "none", seed=1, settings=s)
    assert r.compute == 6 / 8


def test_history_is_what_the_earlier_sweep_saw():
    s = Settings(n_trials=5, workers=1, sampler="random", objective="val_loss", grace=8, reduction_factor=2, window=1)
    runs = toy_bank()
    earlier = simulate(runs, "asha_loss_sweepd", seed=0, settings=s)
    history = bench.history_of(earlier, {r.config_id: r for r in runs})
    assert len(history) == 5
    for t, h in zip(earlier.trials, history):
        assert h["curve"][-1]["samples"] == t.samples
        assert set(h["curve"][0]) == {"step", "samples", "loss", "grad_norm"}
        assert h["objective"] == (t.value if t.state == "complete" else None)
    assert any(h["objective"] is None for h in history) and any(h["objective"] is not None for h in history)
    whole = bench.history_of_bank(runs, "val_loss")
    assert [len(h["curve"]) for h in whole] == [4] * 8
    assert [h["objective"] for h in whole] == [r.objective("val_loss") for r in runs]


@pytest.mark.skipif(bench.learned_available() is not None, reason="the learned signal is not there yet")
def test_learned_with_history_replays_and_rejects_history_it_cannot_use():
    s = Settings(n_trials=5, workers=2, sampler="random", objective="val_loss", grace=8, reduction_factor=2, window=1)
    runs = toy_bank()
    history = bench.history_of(simulate(runs, "learned", seed=0, settings=s), {r.config_id: r for r in runs})
    r = simulate(runs, "learned_history", seed=1, settings=s, history=history)
    assert len(r.trials) == 5
    with pytest.raises(ValueError, match="history"):
        simulate(runs, "learned", seed=1, settings=s, history=history)
    with pytest.raises(ValueError, match="history"):
        simulate(runs, "learned_history", seed=1, settings=s)


# ---- the per-bank summary and the rule ---------------------------------------------------


def _curve(points):
    return [{"n_trials": i, "compute": c, "regret_frac": r, "regret_frac_se": se}
            for i, (c, r, se) in enumerate(points)]


def test_read_curve_interpolates_regret_and_error_and_marks_reads_off_the_curve():
    at = bench.read_curve(_curve([(0.08, 0.04, 0.01), (0.16, 0.02, 0.005), (0.25, 0.01, 0.003)]))
    assert at["0.05"] == {"regret": 0.04, "se": 0.01, "read": "below_curve"}
    assert at["0.10"]["regret"] == pytest.approx(0.035) and at["0.10"]["se"] == pytest.approx(0.00875)
    assert at["0.20"]["read"] == "on_curve"
    assert at["0.30"] == {"regret": 0.01, "se": 0.003, "read": "above_curve"}
    assert bench.curve_sizes(48) == [2, 4, 8, 12, 16, 24, 32, 48]
    assert bench.curve_sizes(40) == [2, 3, 7, 10, 13, 20, 27, 40]


def _tables(**banks):
    """bank -> pruner -> constant regret/se at every compute."""
    return {b: {n: bench.bank_table({n: _curve([(0.04, r, se), (0.5, r, se)])})[n] for n, (r, se) in p.items()}
            for b, p in banks.items()}


def test_the_rule_prefers_a_qualifying_learned_signal_else_the_best_qualifier():
    ref = {"none": (0.010, 0.002), "asha_loss": (0.012, 0.002)}
    # learned is worse than none by 0.002 on bank b: within the SE of the difference (0.0028)
    tables = _tables(a={**ref, "learned": (0.008, 0.001), "asha_loss_sweepd": (0.005, 0.001),
                        "paper": (0.5, 0.01), "grad_norm": (0.3, 0.01)},
                     b={**ref, "learned": (0.012, 0.001), "asha_loss_sweepd": (0.004, 0.001),
                        "paper": (0.5, 0.01), "grad_norm": (0.3, 0.01)})
    choice = bench.choose_default(tables)
    assert choice["default"] == "learned" and "preferred" in choice["rule"]
    assert set(choice["qualifying"]) == {"none", "asha_loss_sweepd", "learned"}
    # now learned misses by more than one SE on bank b: the best qualifier wins
    tables["b"]["learned"] = _tables(x={"learned": (0.02, 0.001)})["x"]["learned"]
    choice = bench.choose_default(tables)
    assert choice["default"] == "asha_loss_sweepd" and choice["asha_signal"] == "loss"
    miss = [m for m in choice["rows"]["learned"]["misses"] if m["reference"] == "none"]
    assert len(miss) == 4 and miss[0]["excess_beyond_1se"] == pytest.approx(0.01 - math.sqrt(0.001**2 + 0.002**2))


def test_when_nothing_qualifies_the_lowest_mean_regret_wins():
    tables = _tables(a={"none": (0.0, 0.0), "asha_loss": (0.0, 0.0), "asha_loss_sweepd": (0.02, 0.001),
                        "learned": (0.01, 0.001), "paper": (0.5, 0.0), "grad_norm": (0.5, 0.0)},
                     b={"none": (0.3, 0.0), "asha_loss": (0.0, 0.0), "asha_loss_sweepd": (0.02, 0.001),
                        "learned": (0.03, 0.001), "paper": (0.5, 0.0), "grad_norm": (0.5, 0.0)})
    choice = bench.choose_default(tables)
    assert choice["qualifying"] == [] and choice["default"] == "asha_loss_sweepd"
    assert "nothing qualifies" in choice["rule"]


def test_targets_report_the_tiny_banks_and_the_history_run():
    cases = {c.name: c for c in load_cases(["night2"])}
    if not cases:
        pytest.skip("no night bank")
    tables = {"night1": {"learned": bench.bank_table({"learned": _curve([(0.05, 0.02, 0.0), (0.3, 0.0, 0.0)])})["learned"]},
              "night2": {"learned": bench.bank_table({"learned": _curve([(0.05, 0.02, 0.0), (0.3, 0.0, 0.0)])})["learned"],
                         "learned_history": bench.bank_table({"x": _curve([(0.05, 0.0, 0.0), (0.1, 0.0, 0.0)])})["x"]}}
    t = bench.check_targets(tables, cases, "learned")
    assert t["tiny_1pct_by_20pct"]["banks"]["night1"]["compute_to_1pct"] == pytest.approx(0.175)
    assert t["tiny_1pct_by_20pct"]["met"] and t["learned_history_1pct_by_10pct"]["met"]


@pytest.mark.skipif(not NIGHT_BANK_PATH.exists() or bench.learned_available() is not None,
                    reason="no night bank or no learned signal")
def test_bench_quick_on_night2_replays_learned_with_night1_history(tmp_path, capsys):
    assert bench.main(["--quick", "--banks", "night2", "--pruners",
                       "none,asha_loss,learned,learned_history,learned_history_sweep", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0:2] for line in out[:-1]] == [
        ["bank=night1", "pruner=none"], ["bank=night1", "pruner=asha_loss"], ["bank=night1", "pruner=learned"],
        ["bank=night2", "pruner=none"], ["bank=night2", "pruner=asha_loss"], ["bank=night2", "pruner=learned"],
        ["bank=night2", "pruner=learned_history"], ["bank=night2", "pruner=learned_history_sweep"]]
    data = json.loads((tmp_path / "pruning_quick.json").read_text())
    assert "learned_history_1pct_by_10pct" in data["targets"]
    assert "learned_history" not in data["banks"]["night1"]["table"]
