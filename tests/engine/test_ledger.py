"""compute_ledger against figures worked out by hand."""

from __future__ import annotations

import pytest

from sweepd.engine.ledger import TrialCost, compute_ledger


def test_a_stopped_trial_would_have_spent_its_full_budget_at_its_own_rate():
    ledger = compute_ledger([
        TrialCost("completed", samples=100, tokens=5000, seconds=10.0, full_samples=100),
        # a quarter of its budget: at full length 100 samples, 4000 tokens, 10 s; 75, 3000, 7.5 s more
        TrialCost("stopped", samples=25, tokens=1000, seconds=2.5, full_samples=100),
        # failed and diverged trials count at what they spent, with nothing saved
        TrialCost("failed", samples=10, tokens=400, seconds=1.0, full_samples=100),
        TrialCost("diverged", samples=20, tokens=900, seconds=1.25, full_samples=100),
    ])
    assert ledger == {
        "spent": {"samples": 155, "tokens": 7300, "seconds": 14.75},
        "stopped_trials_would_have_spent": {"samples": 75, "tokens": 3000, "seconds": 7.5},
        "without_pruning": {"samples": 230, "tokens": 10300, "seconds": 22.25},
        "fraction_saved": 0.3261,  # 75 / 230
        "trials_stopped": 1,
    }


def test_two_stopped_trials_of_different_budgets():
    ledger = compute_ledger([
        TrialCost("stopped", samples=64, tokens=3200, seconds=4.0, full_samples=256),  # x4: +192, +9600, +12 s
        TrialCost("stopped", samples=32, tokens=1000, seconds=1.0, full_samples=96),  # x3: +64, +2000, +2 s
        TrialCost("completed", samples=96, tokens=3000, seconds=3.0, full_samples=96),
    ])
    assert ledger["spent"] == {"samples": 192, "tokens": 7200, "seconds": 8.0}
    assert ledger["stopped_trials_would_have_spent"] == {"samples": 256, "tokens": 11600, "seconds": 14.0}
    assert ledger["without_pruning"] == {"samples": 448, "tokens": 18800, "seconds": 22.0}
    assert ledger["fraction_saved"] == pytest.approx(256 / 448, abs=5e-5) and ledger["fraction_saved"] == 0.5714
    assert ledger["trials_stopped"] == 2


def test_a_trial_stopped_before_its_first_sample_saves_samples_but_no_extrapolated_time():
    ledger = compute_ledger([TrialCost("stopped", samples=0, tokens=0, seconds=0.0, full_samples=50),
                             TrialCost("completed", samples=50, tokens=500, seconds=5.0, full_samples=50)])
    assert ledger["stopped_trials_would_have_spent"] == {"samples": 50, "tokens": 0, "seconds": 0.0}
    assert ledger["fraction_saved"] == 0.5


def test_nothing_stopped_nothing_saved_and_an_empty_sweep():
    ran = compute_ledger([TrialCost("completed", 10, 100, 1.0, 10), TrialCost("running", 3, 30, 0.3, 10)])
    assert ran["spent"] == ran["without_pruning"] == {"samples": 13, "tokens": 130, "seconds": 1.3}
    assert (ran["fraction_saved"], ran["trials_stopped"]) == (0.0, 0)
    empty = compute_ledger([])
    assert empty["without_pruning"] == {"samples": 0, "tokens": 0, "seconds": 0.0} and empty["fraction_saved"] == 0.0
