"""The stored curve bank, and the report and the pruning benchmark run from it (quick settings)."""

from __future__ import annotations

import json
import re

import pytest

from benchmarks.curve_bank import grid
from benchmarks.curve_bank.bank import BANK_PATH, ROOT, load_bank
from benchmarks.pruning.simulate import PRUNERS

pytestmark = pytest.mark.skipif(not BANK_PATH.exists(), reason="no stored curve bank (make curve-bank)")


@pytest.fixture(scope="module")
def bank():
    return load_bank()


def test_the_bank_holds_the_whole_grid_at_full_budget(bank):
    runs = bank.grid(0)
    assert len(runs) == len(grid.grid_configs()) == 48
    assert {r.config_id for r in runs} == {
        grid.config_id(c["batch"], c["lr"], c["warmup"], c["schedule"]) for c in grid.grid_configs()
    }
    assert len(bank.pairs()) >= 8  # second seeds: the noise
    for r in bank.runs:
        assert r.budget == bank.meta["budget_samples"] == grid.BUDGET_SAMPLES
        assert r.n_steps == r.budget // r.config["batch"]
        assert r.steps["step"] == list(range(1, r.n_steps + 1))
        assert all(v is not None for v in r.steps["loss"])
        assert r.steps["seconds"] == sorted(r.steps["seconds"])
        assert r.seconds_total >= r.steps["seconds"][-1]
        for name in ("eval_loss", "exact_match", "mc_accuracy"):
            assert r.objective(name) is not None
    assert (ROOT / "benchmarks" / "data" / "base_model" / "config.json").exists()


def test_report_runs_from_the_stored_bank(tmp_path):
    from benchmarks.curve_bank import report

    assert report.main(["--out", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    for heading in ("## Headline findings", "## Early signals vs final objectives", "## Which configs win",
                    "## Larger batch with a lower learning rate?", "## Seed noise"):
        assert heading in text
    for png in re.findall(r"\]\((report_[a-z_]+\.png)\)", text):
        assert (tmp_path / png).stat().st_size > 1000


def test_bench_pruning_quick_prints_one_line_per_pruner_and_a_default(tmp_path, capsys):
    from benchmarks.pruning import bench

    assert bench.main(["--quick", "--banks", "curve_bank", "--pruners", "none,asha_loss,asha_loss_sweepd,paper",
                       "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    pattern = re.compile(r"^bank=curve_bank pruner=(\w+) r5=(\d\.\d{4}) r10=(\d\.\d{4}) r20=(\d\.\d{4}) r30=(\d\.\d{4})$")
    matches = [pattern.match(line) for line in lines[:-1]]
    assert all(matches), lines
    assert [m.group(1) for m in matches] == ["none", "asha_loss", "asha_loss_sweepd", "paper"]
    assert re.match(r"^default=(\w+)$", lines[-1]) and lines[-1].split("=")[1] in PRUNERS
    data = json.loads((tmp_path / "pruning_quick.json").read_text())
    none = data["banks"]["curve_bank"]["curves"]["none"]
    assert [p["n_trials"] for p in none] == [8, 16]
    assert none[1]["compute"] == pytest.approx(16 / 48)  # 16 full runs of 48
    for name, curve in data["banks"]["curve_bank"]["curves"].items():
        assert all(q["compute"] <= p["compute"] + 1e-9 for p, q in zip(none, curve)), name
    assert (tmp_path / "pruning_regret_vs_compute_quick.png").stat().st_size > 1000
