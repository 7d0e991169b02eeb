"""builtin:replay (trainer/replay.py): nearest-run mapping, pacing, budgets, resampling, and the
messages for bad settings, on the recorded banks in benchmarks/data."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweepd.spec import Capacity, SpecError, parse_spec
from trainer.config import ConfigError, parse_trial_config
from trainer.replay import replay_trial
from trainer.replay_bank import ReplayError, load_curves, resample
from trainer.replay_config import BUILTIN_CURVES
from trainer.reporting import STEP_KEYS, InMemoryReporter

CAP = Capacity(cpus=2, gpus=0)


def replay_cfg(replay: dict | None = None, *, batch=32, lr=4e-3, warmup=0, schedule="constant",
               budget=None, seed=0):
    return parse_trial_config({
        "model": {"path": "builtin:replay", "replay": {"seconds_per_step": 0, **(replay or {})}},
        "hparams": {"effective_batch_size": batch, "learning_rate": lr, "warmup_steps": warmup,
                    "lr_scheduler": schedule},
        "budget": budget or {"max_samples": 4096}, "seed": seed,
    })


def recorded(curves: str = "builtin:curve_bank") -> dict[str, dict]:
    """The bank's run lines by id, read straight from the file (not through the replay's reader)."""
    with gzip.open(BUILTIN_CURVES[curves], "rt") as fh:
        return {d["id"]: d for d in map(json.loads, fh) if d.get("kind") != "meta"}


# ---- which run ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("hparams", "expected"), [
    ({"batch": 32, "lr": 4e-3}, "b32_lr4e-03_w0_constant_s0"),                      # exactly a grid point
    ({"batch": 30, "lr": 3.5e-3}, "b32_lr4e-03_w0_constant_s0"),                    # near one
    ({"batch": 128, "lr": 1e-6}, "b128_lr2e-04_w0_constant_s0"),                    # below the grid: its edge
    ({"batch": 8, "lr": 2e-2, "warmup": 10, "schedule": "cosine"}, "b8_lr2e-02_w10_cosine_s0"),
    ({"batch": 8, "lr": 2e-2, "warmup": 9, "schedule": "linear"}, "b8_lr2e-02_w10_constant_s0"),  # no linear runs
    ({"batch": 32, "lr": 4e-3, "seed": 1}, "b32_lr4e-03_w0_constant_s1"),          # a config recorded twice: the seed
    ({"batch": 32, "lr": 4e-3, "seed": 7}, "b32_lr4e-03_w0_constant_s0"),          # an unknown seed: the first
])
def test_a_trial_replays_the_nearest_recorded_run(hparams, expected):
    reporter = InMemoryReporter()
    result = replay_trial(replay_cfg(**hparams), reporter)
    assert result["replayed_run"] == expected


def test_the_nearest_run_weighs_learning_rate_on_a_log_scale():
    # 1e-2 is nearer 4e-3 than 2e-2 on a plain scale, but nearer 2e-2 on a log scale (midpoint 8.9e-3)
    assert replay_trial(replay_cfg(lr=1.0e-2), InMemoryReporter())["replayed_run"] == "b32_lr2e-02_w0_constant_s0"
    assert replay_trial(replay_cfg(lr=8.5e-3), InMemoryReporter())["replayed_run"] == "b32_lr4e-03_w0_constant_s0"


def test_a_fixed_run_is_replayed_whatever_the_hyperparameters():
    result = replay_trial(replay_cfg({"run": "b8_lr2e-04_w10_cosine_s0"}, batch=128, lr=2e-2), InMemoryReporter())
    assert result["replayed_run"] == "b8_lr2e-04_w10_cosine_s0"


def test_algoperf_runs_map_by_learning_rate_and_report_their_objective():
    bank = load_curves(BUILTIN_CURVES["builtin:vit"])
    with_lr = [c for c in bank.curves if c.hparams["lr"]]
    target = with_lr[len(with_lr) // 2]
    result = replay_trial(replay_cfg({"curves": "builtin:vit"}, batch=1024, lr=target.hparams["lr"],
                                     budget={"max_steps": 70_000}), InMemoryReporter())
    assert bank.by_id[result["replayed_run"]].hparams["lr"] == target.hparams["lr"]
    assert result["eval_loss"] == recorded("builtin:vit")[result["replayed_run"]]["final"]["val_loss"]


# ---- what is reported --------------------------------------------------------------------------


def test_every_recorded_step_is_reported_with_the_trainers_keys_then_the_recorded_objective():
    reporter = InMemoryReporter()
    result = replay_trial(replay_cfg(), reporter)
    run = recorded()["b32_lr4e-03_w0_constant_s0"]
    assert len(reporter.steps) == len(run["steps"]["step"]) == 128
    assert all(set(s) == set(STEP_KEYS) for s in reporter.steps)
    for key in ("step", "samples", "tokens", "loss", "grad_norm", "lr"):
        assert [s[key] for s in reporter.steps] == run["steps"][key]
    assert reporter.result == result
    assert result["status"] == "completed" and result["steps"] == 128 and result["samples"] == 4096
    for key in ("eval_loss", "exact_match", "mc_accuracy", "train_loss"):
        assert result[key] == run["final"][key]
    assert "replay_cut_at_step" not in result


def test_the_budget_stops_the_replay_there():
    reporter = InMemoryReporter()
    result = replay_trial(replay_cfg(budget={"max_samples": 1000}), reporter)
    assert [s["samples"] for s in reporter.steps][-1] == 992 and len(reporter.steps) == 31  # whole steps of 32
    assert result["replay_cut_at_step"] == 31 and result["train_loss"] == reporter.steps[-1]["loss"]
    reporter = InMemoryReporter()
    replay_trial(replay_cfg(budget={"max_steps": 10}), reporter)
    assert [s["step"] for s in reporter.steps] == list(range(1, 11))


def test_a_stop_request_ends_the_replay_without_an_objective():
    reporter = InMemoryReporter(stop_after_steps=5)
    result = replay_trial(replay_cfg(), reporter)
    assert len(reporter.steps) == 5
    assert result["status"] == "stopped" and result["reason"] == "stop requested after step 5"
    assert "eval_loss" not in result


def test_max_reports_resamples_evenly_and_keeps_the_last_step():
    reporter = InMemoryReporter()
    replay_trial(replay_cfg({"max_reports": 10}), reporter)
    steps = [s["step"] for s in reporter.steps]
    assert len(steps) == 10 and steps[-1] == 128
    gaps = {b - a for a, b in zip(steps, steps[1:])}
    assert gaps <= {12, 13}
    run = recorded()["b32_lr4e-03_w0_constant_s0"]
    assert [s["loss"] for s in reporter.steps] == [run["steps"]["loss"][k - 1] for k in steps]
    assert resample(5, 10) == [0, 1, 2, 3, 4] and resample(10, 1) == [9]


def test_the_replay_keeps_the_recorded_pace_times_speed():
    run = recorded()["b32_lr4e-03_w0_constant_s0"]
    speed = 200
    cfg = parse_trial_config({"model": {"path": "builtin:replay", "replay": {"speed": speed, "max_reports": 8}},
                              "hparams": {"effective_batch_size": 32, "learning_rate": 4e-3},
                              "budget": {"max_samples": 4096}})
    reporter = InMemoryReporter()
    started = time.monotonic()
    replay_trial(cfg, reporter)
    took = time.monotonic() - started
    expected = run["steps"]["seconds"][-1] / speed
    assert reporter.steps[-1]["seconds"] == pytest.approx(expected, abs=1e-3)
    assert expected <= took < expected + 1.0


def test_a_fixed_pace_reports_every_seconds_per_step():
    reporter = InMemoryReporter()
    started = time.monotonic()
    replay_trial(replay_cfg({"seconds_per_step": 0.05, "max_reports": 6}), reporter)
    took = time.monotonic() - started
    assert [s["seconds"] for s in reporter.steps] == pytest.approx([0.05 * k for k in range(1, 7)])
    assert 0.3 <= took < 1.3


def test_the_replay_path_imports_no_torch():
    code = ("import sys; from trainer.replay import replay_trial; from trainer.reporting import InMemoryReporter; "
            "from trainer.config import parse_trial_config; "
            "replay_trial(parse_trial_config({'model': {'path': 'builtin:replay', 'replay': {'seconds_per_step': 0}},"
            " 'budget': {'max_steps': 5}}), InMemoryReporter()); "
            "import sweepd.spec; print(sorted(m for m in ('torch', 'deepspeed', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"



def run_cli(tmp_path, model: dict) -> subprocess.CompletedProcess:
    """`python -m trainer run` on a 5-step replay trial, reporting which heavy modules it imported."""
    import yaml

    trial = tmp_path / "trial.yaml"
    trial.write_text(yaml.safe_dump({"model": model, "budget": {"max_steps": 5}}))
    code = ("import atexit, sys; atexit.register(lambda: print('loaded:', sorted(m for m in ('torch', 'deepspeed',"
            " 'transformers') if m in sys.modules), file=sys.stderr)); from trainer.__main__ import main; "
            f"sys.exit(main(['run', {str(trial)!r}, '--metrics-out', {str(tmp_path / 'm.jsonl')!r}]))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_the_trainer_cli_replays_without_importing_torch(tmp_path):
    out = run_cli(tmp_path, {"path": "builtin:replay", "replay": {"seconds_per_step": 0}})
    assert out.returncode == 0, out.stderr
    assert "loaded: []" in out.stderr
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines[:-1]] == [1, 2, 3, 4, 5]


def test_the_trainer_cli_names_a_bad_curves_file_in_one_line(tmp_path):
    bad = tmp_path / "curves.jsonl"
    bad.write_text("not json\n")
    out = run_cli(tmp_path, {"path": "builtin:replay", "replay": {"curves": str(bad)}})
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("error: ") and "curves.jsonl" in out.stderr

# ---- messages ----------------------------------------------------------------------------------


def replay_spec(replay: dict | None = None, **sections) -> dict:
    raw = {"name": "replay", "model": {"path": "builtin:replay", "replay": replay or {}},
           "search": {"num_trials": 2, "space": {"learning_rate": {"loguniform": [1e-4, 1e-2]}}},
           "budget": {"max_samples": 4096}}
    return {**raw, **sections}


def errors_of(raw: dict, **kw) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_spec(raw, capacity=CAP, **kw)
    return dict(info.value.errors)


def test_a_replay_sweep_needs_no_data_section(tmp_path):
    spec = parse_spec(replay_spec(), capacity=CAP, base_dir=tmp_path, data_roots=[tmp_path])
    assert spec.data.train == [] and spec.model.replay.curves == "builtin:curve_bank"
    cfg = spec.trial_config({"learning_rate": 1e-3})
    assert cfg.model.replay.curves == "builtin:curve_bank"


def test_an_unknown_run_names_close_ones_and_how_to_list_them():
    errors = errors_of(replay_spec({"run": "b32_lr4e-03_w0_constant"}))
    message = errors["model.replay.run"]
    assert "no run 'b32_lr4e-03_w0_constant' in curve_bank.jsonl.gz" in message
    assert "'b32_lr4e-03_w0_constant_s0'" in message and "python -m trainer.replay runs" in message
    with pytest.raises(ReplayError, match="known: b8_lr2e-04_w0_constant_s0"):
        load_curves(BUILTIN_CURVES["builtin:curve_bank"]).run("zzz")


def test_a_missing_curves_file_is_named(tmp_path):
    errors = errors_of(replay_spec({"curves": "curves/none.jsonl.gz"}), base_dir=tmp_path, data_roots=[tmp_path])
    assert "'curves/none.jsonl.gz' does not exist" in errors["model.replay.curves"]
    assert str(tmp_path / "curves" / "none.jsonl.gz") in errors["model.replay.curves"]


def test_a_curves_file_that_is_no_bank_names_its_line(tmp_path):
    bad = tmp_path / "bank.jsonl"
    bad.write_text('{"kind": "meta"}\n{"kind": "run", "id": "r1", "steps": {"step": [1], "samples": [8]}}\n')
    errors = errors_of(replay_spec({"curves": "bank.jsonl"}), base_dir=tmp_path, data_roots=[tmp_path])
    assert errors["model.replay.curves"] == f"{bad}:2: run 'r1' has no steps.loss"
    bad.write_text("not json\n")
    assert "bank.jsonl:1: not valid JSON" in errors_of(replay_spec({"curves": str(bad)}), data_roots=[tmp_path])[
        "model.replay.curves"]


def test_a_curves_file_of_ones_own_is_replayed(tmp_path):
    bank = tmp_path / "mine.jsonl"
    bank.write_text(json.dumps({"kind": "run", "id": "only", "config": {"batch": 4, "lr": 0.1},
                                "steps": {"step": [1, 2], "samples": [4, 8], "loss": [2.0, 1.5]},
                                "final": {"eval_loss": 1.7}}) + "\n")
    spec = parse_spec(replay_spec({"curves": "mine.jsonl", "seconds_per_step": 0}, budget={"max_steps": 2}),
                      capacity=CAP, base_dir=tmp_path, data_roots=[tmp_path])
    reporter = InMemoryReporter()
    result = replay_trial(spec.trial_config({"learning_rate": 1e-3}), reporter)
    assert [s["loss"] for s in reporter.steps] == [2.0, 1.5] and result["eval_loss"] == 1.7


@pytest.mark.parametrize(("replay", "sections", "field", "fragment"), [
    ({"speed": 2, "seconds_per_step": 1}, {}, "model.replay", "give speed or seconds_per_step, not both"),
    ({"speed": 0}, {}, "model.replay.speed", "greater than 0"),
    ({"pace": 2}, {}, "model.replay.pace", "unknown field 'pace'"),
    ({"curves": "builtin:mnist"}, {}, "model.replay", "unknown builtin curves 'builtin:mnist'; known: builtin:curve_bank"),
    ({"curves": "builtin:conformer"}, {}, "objective.metric", "'eval_loss' is not recorded in conformer.jsonl.gz; "
                                                              "its runs recorded train_loss"),
    ({}, {"budget": {"epochs": 2}}, "budget.epochs", "a replay reads no data to count epochs in"),
    ({}, {"resources": {"workers_per_trial": 2}}, "resources.workers_per_trial", "a replay trial runs in one process"),
    ({}, {"pruner": {"signal": "objective"}}, "pruner.signal", "a replay recorded none during training"),
])
def test_bad_replay_settings_name_their_field(replay, sections, field, fragment):
    errors = errors_of(replay_spec(replay, **sections))
    assert field in errors and fragment in errors[field], errors


def test_replay_settings_belong_to_builtin_replay_only(tmp_path):
    with pytest.raises(ConfigError, match="model.replay is only for path builtin:replay"):
        parse_trial_config({"model": {"path": "builtin:tiny", "replay": {}}, "data": {"train": [{"path": "x"}]}})
    with pytest.raises(ConfigError, match="data.train: empty: give at least one train file"):
        parse_trial_config({"model": {"path": "builtin:tiny"}, "data": {"train": []}})
    raw = replay_spec()
    raw["model"] = {"path": "builtin:tiny"}
    raw["data"] = {"train": []}
    assert "empty: give at least one train file" in errors_of(raw, base_dir=tmp_path, data_roots=[tmp_path])["data.train"]
    del raw["data"]
    assert errors_of(raw)["data"] == "missing (required)"


def test_replay_sweeps_over_different_curves_have_different_fingerprints(tmp_path):
    """A replay sweep reads no data: its curves are what make two sweeps comparable (warm start)."""
    import yaml

    from sweepd.engine.fingerprint import fingerprint
    from sweepd.spec import load_spec

    example = Path(__file__).resolve().parents[2] / "examples" / "replay.yaml"
    raw = yaml.safe_load(example.read_text())
    raw["model"]["replay"]["curves"] = "builtin:night_bank"
    other = tmp_path / "night.yaml"
    other.write_text(yaml.safe_dump(raw))
    same = fingerprint(load_spec(example, check_paths=False))
    assert same == fingerprint(load_spec(example, check_paths=False))
    assert same != fingerprint(load_spec(other, check_paths=False))
