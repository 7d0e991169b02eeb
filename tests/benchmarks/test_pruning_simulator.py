"""The pruning simulator on a hand-made bank whose answer is worked out by hand.

Six configs (learning rates c0..c5), batch 8, budget 32 samples = 4 steps; every curve is flat,
so smoothing changes nothing. Step k is reported at k seconds, a finished run holds its worker
for 5 s. Rungs (sweepd ASHA, grace 8, reduction factor 2) at 8 and 16 samples; a cohort needs
2 scores, the top ceil(n/2) continue, a score equal to the cut-off continues.

    config       c0   c1   c2   c3   c4   c5
    grad norm     5    4    6    1    3    2      lowest: c3, the true best
    loss        2.0  2.5  1.0  3.0  2.2  1.5      highest: c3 (the paper's sign)
    eval loss   1.5  1.4  1.3  1.0  1.2  2.0      best c3 (1.0), range 1.0

One worker, fixed order c0..c5:
- grad_norm stops only c2 (at 8: 6 > cut-off 5)            -> 168/192 samples, picks c3, regret 0
- ASHA on loss stops c1, c3 at 8 and c4 at 16 (3rd of 3)    -> 128/192 samples, picks c2, regret 0.3
"""

from __future__ import annotations

import pytest

from benchmarks.curve_bank.bank import run_from_dict
from benchmarks.pruning.simulate import PRUNERS, Settings, simulate

GRAD = [5.0, 4.0, 6.0, 1.0, 3.0, 2.0]
LOSS = [2.0, 2.5, 1.0, 3.0, 2.2, 1.5]
EVAL = [1.5, 1.4, 1.3, 1.0, 1.2, 2.0]
LRS = [1e-4, 2e-4, 3e-4, 4e-4, 5e-4, 6e-4]


def hand_bank():
    runs = []
    for i in range(6):
        runs.append(run_from_dict({
            "id": f"c{i}_s0", "config_id": f"c{i}",
            "config": {"batch": 8, "lr": LRS[i], "warmup": 0, "schedule": "constant", "seed": 0},
            "steps": {"step": [1, 2, 3, 4], "samples": [8, 16, 24, 32], "tokens": [80, 160, 240, 320],
                      "loss": [LOSS[i]] * 4, "grad_norm": [GRAD[i]] * 4, "lr": [LRS[i]] * 4,
                      "seconds": [1.0, 2.0, 3.0, 4.0]},
            "final": {"eval_loss": EVAL[i], "exact_match": 0.1 * i, "mc_accuracy": 0.25,
                      "wall_seconds": 5.0},
        }))  # fmt: skip
    return runs


ORDER = Settings(n_trials=6, workers=1, sampler="order", order=tuple(f"c{i}" for i in range(6)),
                 grace=8, reduction_factor=2, window=1)


def summary(result):
    return [(t.config_id, t.state, t.samples, t.start, t.end) for t in result.trials]


def test_grad_norm_finds_the_best_and_stops_only_the_worst_gradient():
    r = simulate(hand_bank(), "grad_norm", seed=0, settings=ORDER)
    assert summary(r) == [
        ("c0", "complete", 32, 0.0, 5.0),
        ("c1", "complete", 32, 5.0, 10.0),
        ("c2", "pruned", 8, 10.0, 11.0),
        ("c3", "complete", 32, 11.0, 16.0),
        ("c4", "complete", 32, 16.0, 21.0),
        ("c5", "complete", 32, 21.0, 26.0),
    ]
    assert r.samples == 168 and r.grid_samples == 192
    assert r.compute == 168 / 192
    assert (r.chosen, r.chosen_value, r.best, r.best_value) == ("c3", 1.0, "c3", 1.0)
    assert r.regret == 0.0 and r.regret_frac == 0.0 and r.hit
    assert r.makespan == 26.0
    stop = [d for d in r.decisions if d.stop]
    assert [(d.trial_id, d.rung_time, d.cutoff) for d in stop] == [("t002", 8, 5.0)]


def test_asha_on_loss_keeps_the_low_loss_runs_and_misses_the_best():
    r = simulate(hand_bank(), "asha_loss_sweepd", seed=0, settings=ORDER)
    assert summary(r) == [
        ("c0", "complete", 32, 0.0, 5.0),
        ("c1", "pruned", 8, 5.0, 6.0),
        ("c2", "complete", 32, 6.0, 11.0),
        ("c3", "pruned", 8, 11.0, 12.0),
        ("c4", "pruned", 16, 12.0, 14.0),
        ("c5", "complete", 32, 14.0, 19.0),
    ]
    assert r.samples == 128 and r.compute == 128 / 192
    assert (r.chosen, r.chosen_value) == ("c2", 1.3)
    assert r.regret == pytest.approx(0.3) and r.regret_frac == pytest.approx(0.3)
    assert not r.hit and r.n_pruned == 3


def test_no_pruning_runs_everything_two_workers_at_a_time():
    r = simulate(hand_bank(), "none", seed=0, settings=Settings(**{**ORDER.__dict__, "workers": 2}))
    assert [(t.config_id, t.start, t.end) for t in r.trials] == [
        ("c0", 0.0, 5.0), ("c1", 0.0, 5.0), ("c2", 5.0, 10.0),
        ("c3", 5.0, 10.0), ("c4", 10.0, 15.0), ("c5", 10.0, 15.0),
    ]
    assert r.compute == 1.0 and r.regret == 0.0 and r.hit and r.makespan == 15.0


def test_a_maximised_objective_picks_the_largest():
    s = Settings(**{**ORDER.__dict__, "objective": "exact_match"})
    r = simulate(hand_bank(), "none", seed=0, settings=s)
    assert (r.best, r.chosen) == ("c5", "c5") and r.regret == 0.0
    r = simulate(hand_bank(), "grad_norm", seed=0, settings=Settings(**{**s.__dict__, "n_trials": 3}))
    assert r.chosen == "c1" and r.regret == pytest.approx(0.4) and r.regret_frac == pytest.approx(0.8)


@pytest.mark.parametrize("pruner", PRUNERS)
@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_every_pruner_runs_distinct_configs_and_accounts_for_its_samples(pruner, sampler):
    s = Settings(n_trials=5, workers=2, sampler=sampler, grace=8, reduction_factor=2)
    r = simulate(hand_bank(), pruner, seed=3, settings=s)
    assert len({t.config_id for t in r.trials}) == 5  # a repeated proposal is not run again
    assert r.samples == sum(t.samples for t in r.trials) <= 5 * 32
    assert all(t.samples == 32 for t in r.trials if t.state == "complete")
    assert all(t.samples in (8, 16, 24) for t in r.trials if t.state == "pruned")
    assert 0.0 <= r.regret_frac <= 1.0
    again = simulate(hand_bank(), pruner, seed=3, settings=s)
    assert summary(again) == summary(r)  # deterministic for a seed
