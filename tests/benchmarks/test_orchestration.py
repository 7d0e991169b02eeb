"""benchmarks/orchestration.py: the wall/ideal arithmetic, the sweep it runs (a valid replay spec),
and the store section's recorder path on a small SQLite store."""

from __future__ import annotations

import pytest

from benchmarks.orchestration import compare, over_ideal
from benchmarks.orchestration_store import recorder_rate, sqlite_url
from benchmarks.orchestration_sweeps import replay_settings, sweep_spec
from sweepd.spec import Capacity, parse_spec


def test_wall_over_ideal_packs_every_trial_onto_the_slots():
    # 16 trials of 2 s on 8 slots: ideal 4 s; a 5 s wall is 1.25x of it
    assert over_ideal(5.0, [2.0] * 16, 8) == {"wall_seconds": 5.0, "ideal_seconds": 4.0, "wall_over_ideal": 1.25}
    # trials stopped early count the time they replayed
    assert over_ideal(3.0, [2.0, 0.5, 0.5, 1.0], 2)["ideal_seconds"] == 2.0


def test_sweepd_over_stock_and_the_verdicts():
    verdict = compare(1.1, 1.25)
    assert verdict == {"sweepd_over_stock": 0.88, "sweepd_within_target": True, "sweepd_not_worse_than_stock": True}
    verdict = compare(1.5, 1.2)
    assert verdict["sweepd_over_stock"] == pytest.approx(1.25)
    assert not verdict["sweepd_within_target"] and not verdict["sweepd_not_worse_than_stock"]


def test_the_benchmark_sweep_is_a_valid_replay_spec():
    spec = parse_spec(sweep_spec(1000, 8, 0.25, replay_settings()), capacity=Capacity(cpus=2, gpus=0))
    assert spec.planned_trials == 1000 and spec.search.max_concurrent == 8
    assert spec.model.replay.max_reports == 50 and spec.model.replay.seconds_per_step * 50 == pytest.approx(2.0)
    assert spec.pruner.type == "asha" and spec.pruner_config()["max_t"] == 4096


def test_the_store_section_stores_every_result(tmp_path):
    figures = recorder_rate(sqlite_url(tmp_path), results=500, steps_per_trial=20, concurrency=4)
    assert figures["results"] == figures["stored_points"] == 500
    assert figures["trials"] == 28  # 7 rounds of 4 trials: the curve bank's 32-step runs hold 20 reports too
    assert figures["results_per_second"] > 0
