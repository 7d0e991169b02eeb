"""The pure pruner core: rung arithmetic, ASHA cut-offs and ties, signals, smoothing, median,
none, save/restore, argument checks. No Ray here."""

from __future__ import annotations

import json
import math
import random

import pytest
from pydantic import BaseModel

from sweepd.pruners import ASHAPruner, Decision, MedianPruner, NopPruner, make_pruner

SPS = 512  # samples per step in the hand-made curves


def report(step, loss=2.0, grad_norm=1.0, sps=SPS, **extra):
    return {"step": step, "samples": step * sps, "tokens": step * sps * 100, "loss": loss,
            "grad_norm": grad_norm, "lr": 1e-5, "seconds": step * 0.1, **extra}  # fmt: skip


def run_trial(pruner, trial_id, steps, loss=2.0, grad_norm=1.0, **extra) -> list[Decision]:
    """Feed a flat curve until the pruner stops the trial or the steps run out."""
    out = []
    for step in range(1, steps + 1):
        out += pruner.on_result_all(trial_id, report(step, loss, grad_norm, **extra))
        if out and out[-1].stop:
            break
    return out


def stopped(pruner, trials: dict[str, tuple[float, float]], steps=8) -> set[str]:
    """Run flat (loss, grad_norm) trials one after another; the ids of those stopped."""
    out = set()
    for trial_id, (loss, grad_norm) in trials.items():
        decisions = run_trial(pruner, trial_id, steps, loss, grad_norm)
        if decisions and decisions[-1].stop:
            out.add(trial_id)
        else:
            pruner.on_trial_complete(trial_id, None)
    return out


def asha(**kw):
    # These hand-made curves rank trials by grad norm (the default signal is loss).
    return ASHAPruner(**{"signal": "grad_norm", "grace": 1024, "reduction_factor": 3, "max_t": 4096, **kw})


# ---- rung arithmetic ------------------------------------------------------------------------


def test_rungs_are_grace_times_powers_of_eta_below_max_t():
    assert asha(max_t=8192).rung_times() == [1024, 3072]
    # a rung at max_t itself is left out: it would only stop a trial that has spent it all
    assert ASHAPruner(signal="grad_norm", grace=1000, reduction_factor=2, max_t=8000).rung_times() == [1000, 2000, 4000]
    assert ASHAPruner(signal="grad_norm", grace=1024, max_t=None).rung_times(upto=10_000) == [1024, 3072, 9216]
    assert MedianPruner(signal="grad_norm", grace=100, interval=50, max_t=300).rung_times() == [100, 150, 200, 250]


def test_a_report_crossing_several_rungs_is_judged_at_each():
    pruner = ASHAPruner(signal="grad_norm", grace=100, reduction_factor=2, max_t=1000)
    decisions = pruner.on_result_all("a", {"step": 1, "samples": 450, "loss": 2, "grad_norm": 1})
    assert [(d.rung, d.rung_time, d.time) for d in decisions] == [(0, 100, 450), (1, 200, 450),
                                                                 (2, 400, 450)]  # fmt: skip
    assert pruner.on_result("a", {"step": 2, "samples": 600, "loss": 2, "grad_norm": 1}) is None

    # c is stopped at rung 0 (2nd of 2); b continues through all three
    assert pruner.on_result_all("c", {"step": 1, "samples": 450, "grad_norm": 5})[-1].stop
    decisions = pruner.on_result_all("b", {"step": 1, "samples": 450, "grad_norm": 0.5})
    assert [d.action for d in decisions] == ["continue", "continue", "continue"]
    # f only reaches rung 0, where it is 4th of 4 (the top 2 continue)
    assert pruner.on_result_all("f", {"step": 1, "samples": 150, "grad_norm": 9})[-1].stop
    # d is 3rd of 5 at rung 0 (the top 3 continue) and 3rd of 3 at rung 1 (top 2): stopped there
    decisions = pruner.on_result_all("d", {"step": 1, "samples": 450, "grad_norm": 1.2})
    assert [(d.rung, d.action) for d in decisions] == [(0, "continue"), (1, "stop")]
    assert "d" not in pruner.state_dict()["rungs"][2]
    assert pruner.on_result_all("d", {"step": 2, "samples": 900, "grad_norm": 0.1}) == []


def test_steps_time_axis_reads_the_step_key():
    pruner = ASHAPruner(signal="grad_norm", grace=100, reduction_factor=3, time_attr="steps", max_t=1000)
    assert pruner.on_result("a", {"step": 99, "samples": 10**6, "grad_norm": 1}) is None
    decision = pruner.on_result("a", {"step": 100, "samples": 10**6, "grad_norm": 1})
    assert decision.rung_time == 100 and decision.time_attr == "steps"
    assert decision.reason.startswith("continued at 100 steps: only 1 score recorded")


# ---- the signals disagree -------------------------------------------------------------------

# A: low loss, high grad norm; B: high loss, low grad norm; N1, N2 in between, judged first.
DISAGREE = {"N1": (2.0, 1.5), "N2": (2.1, 1.6), "A": (1.0, 3.0), "B": (3.0, 0.5)}


@pytest.mark.parametrize(
    "signal, expected",
    [("loss", {"B"}), ("grad_norm", {"A"}), ("paper", {"A"})],
)
def test_stock_asha_on_loss_and_the_grad_norm_signal_keep_different_trials(signal, expected):
    assert stopped(asha(signal=signal), DISAGREE) == expected


def test_decision_carries_its_inputs_and_a_readable_reason():
    pruner = asha(signal="grad_norm")
    stopped(pruner, {k: DISAGREE[k] for k in ("N1", "N2")})
    (decision,) = run_trial(pruner, "A", 8, *DISAGREE["A"])
    assert decision.reason == (
        "stopped at 1,024 samples: grad norm 3 is 3rd of 3 at this rung; the top 1 continues"
    )
    assert (decision.action, decision.rung, decision.rung_time, decision.time) == (
        "stop", 0, 1024, 1024)  # fmt: skip
    assert (decision.cohort, decision.rank, decision.keep, decision.cutoff) == (3, 3, 1, 1.5)
    assert decision.values == {"loss": 1.0, "grad_norm": 3.0, "objective": None}
    assert (decision.score, decision.signal, decision.pruner, decision.needed) == (
        3.0, "grad_norm", "asha", 3)  # fmt: skip
    json.dumps(decision.to_dict(), allow_nan=False)


def test_paper_signal_is_the_mean_rank_of_low_grad_norm_and_high_loss():
    pruner = asha(signal="paper")
    stopped(pruner, {k: DISAGREE[k] for k in ("N1", "N2", "A")})
    decision = run_trial(pruner, "B", 8, *DISAGREE["B"])[0]
    # B has the highest loss and the lowest grad norm of the four: rank 1 on both
    assert decision.score == 1.0 and decision.rank == 1 and decision.action == "continue"
    assert decision.reason == (
        "continued at 1,024 samples: paper score 1 (mean rank of low grad norm 0.5 and high "
        "loss 3) is 1st of 4 at this rung; the top 2 continue"
    )


# ---- ASHA cut-off: ceil, ties, small cohorts -----------------------------------------------


def cohort_then(pruner, scores, last):
    """Record grad norms ``scores`` at the first rung, then judge one more trial."""
    for i, g in enumerate(scores):
        pruner.on_result_all(f"t{i}", report(2, grad_norm=g))
    return pruner.on_result("x", report(2, grad_norm=last))


def test_top_k_is_ceil_of_n_over_eta():
    # n=6, eta=3: the top 2 continue
    assert cohort_then(asha(), [1, 2, 3, 4, 5], 2.01).action == "stop"
    decision = cohort_then(asha(), [1, 2, 3, 4, 5], 1.99)
    assert (decision.action, decision.keep, decision.rank, decision.cutoff) == (
        "continue", 2, 2, 1.99)  # fmt: skip
    # n=5, eta=3: ceil keeps 2 (floor, the ASHA paper's rounding, would keep 1)
    decision = cohort_then(asha(), [1, 3, 4, 5], 2)
    assert (decision.action, decision.keep, decision.rank) == ("continue", 2, 2)
    decision = cohort_then(asha(), [1, 2, 4, 5], 3)
    assert (decision.action, decision.keep, decision.rank) == ("stop", 2, 3)
    # n=7, eta=2.5: ceil(2.8) = 3
    decision = cohort_then(ASHAPruner(signal="grad_norm", grace=1024, reduction_factor=2.5, max_t=8192), [1, 2, 4, 5, 6, 7], 3)
    assert (decision.action, decision.keep, decision.rank) == ("continue", 3, 3)


def test_ties_at_the_cutoff_go_the_trials_way():
    decision = cohort_then(asha(), [1, 2, 3, 4, 5], 2)  # n=6, top 2, ties with the 2nd best
    assert (decision.action, decision.rank, decision.cutoff) == ("continue", 2, 2)
    assert "is 2nd (tied) of 6" in decision.reason
    decision = cohort_then(ASHAPruner(signal="grad_norm", grace=1024, reduction_factor=2, max_t=4096), [1], 1)
    assert (decision.action, decision.rank, decision.keep) == ("continue", 1, 1)


@pytest.mark.parametrize("eta, needed", [(3, 3), (2.5, 3), (4, 4)])
def test_fewer_than_eta_scores_never_stop_a_trial(eta, needed):
    # ever worse trials all continue until `needed` scores are recorded at the rung
    pruner = ASHAPruner(signal="grad_norm", grace=1024, reduction_factor=eta, max_t=8192)
    for i in range(needed - 1):
        decision = pruner.on_result(f"bad{i}", report(2, grad_norm=100.0 + i))
        assert decision.action == "continue" and decision.keep is None and decision.cutoff is None
    assert decision.reason == (
        f"continued at 1,024 samples: only {needed - 1} scores recorded at this rung, "
        f"fewer than {needed} needed to decide"
    )
    assert pruner.on_result("bad_last", report(2, grad_norm=1000.0)).action == "stop"


# ---- smoothing ------------------------------------------------------------------------------


@pytest.mark.parametrize("window, expected", [(5, "continue"), (1, "stop")])
def test_one_spike_is_not_a_verdict(window, expected):
    pruner = asha(window=window)  # median over the last `window` steps
    for i, g in enumerate([1.0, 1.1, 1.2]):
        run_trial(pruner, f"n{i}", 2, grad_norm=g)
    # x is the best trial, but the step that crosses the rung spikes to 50
    for step in (1, 2, 3):
        assert pruner.on_result("x", report(step, grad_norm=0.5, sps=256)) is None
    decision = pruner.on_result("x", report(4, grad_norm=50.0, sps=256))
    assert decision.action == expected


def test_mean_smoothing_and_a_bounded_window():
    pruner = asha(window=3, smooth="mean")
    for step, g in enumerate([9.0, 1.0, 2.0, 3.0], start=1):  # crosses the rung at step 2
        pruner.on_result("x", report(step, grad_norm=g))
    assert pruner.state_dict()["rungs"][0]["x"]["grad_norm"] == 5.0  # mean of 9 and 1
    assert pruner.state_dict()["windows"]["x"]["values"]["grad_norm"] == [1.0, 2.0, 3.0]


def test_a_diverged_trial_scores_worst_whatever_the_direction():
    pruner = asha(signal="paper", reduction_factor=2)
    run_trial(pruner, "ok", 2, loss=2.0, grad_norm=1.0)
    # a NaN loss would be the "best" high loss if it were taken as a number
    for step in (1, 2):
        decision = pruner.on_result("nan", report(step, loss=math.nan, grad_norm=math.inf))
    assert decision.action == "stop" and decision.values["loss"] is None
    json.dumps(pruner.state_dict(), allow_nan=False)


# ---- objective and calibrated signals -------------------------------------------------------


def test_objective_signal_waits_for_the_eval_and_honours_the_mode():
    pruner = asha(signal="objective", metric="eval_acc", mode="max", reduction_factor=2)
    run_trial(pruner, "good", 3, eval_acc=0.8)
    assert pruner.on_result("bad", report(2)) is None  # crossed the rung, no eval yet
    decision = pruner.on_result("bad", report(3, eval_acc=0.3))
    assert (decision.action, decision.rung_time, decision.time) == ("stop", 1024, 1536)
    assert decision.reason == (
        "stopped at 1,024 samples: eval acc 0.3 is 2nd of 2 at this rung; the top 1 continues"
    )


# Finished trials where a LOW early loss and a HIGH early grad norm went with a good final:
# the opposite of the paper's finding, so calibrated must learn to flip both signs.
LEARN = [(1.0, 5.0), (2.0, 4.0), (3.0, 3.0), (4.0, 2.0), (5.0, 1.0)]  # (loss, grad_norm)


@pytest.mark.parametrize("mode", ["min", "max"])
def test_calibrated_learns_direction_from_finished_trials(mode):
    def sweep(signal):
        pruner = asha(signal=signal, reduction_factor=6, mode=mode, min_completed=4)
        for i, (loss, g) in enumerate(LEARN):
            decisions = run_trial(pruner, f"t{i}", 8, loss, g)
            if i < 4:  # too few finished trials so far: the paper prior
                assert decisions[0].detail.get("fallback", "paper") == "paper"
                if signal == "calibrated":
                    assert decisions[0].detail["completed"] == i
            final = loss + 0.1 if mode == "min" else -loss  # the lower the loss, the better
            pruner.on_trial_complete(f"t{i}", final)
        low_loss = run_trial(pruner, "low_loss", 8, loss=0.5, grad_norm=6.0)[0]
        high_loss = run_trial(pruner, "high_loss", 8, loss=6.0, grad_norm=0.1)[0]
        return low_loss, high_loss

    low_loss, high_loss = sweep("calibrated")
    assert low_loss.detail["weights"]["loss"] > 0 > low_loss.detail["weights"]["grad_norm"]
    assert (low_loss.action, low_loss.rank) == ("continue", 1)
    assert (high_loss.action, high_loss.rank) == ("stop", 7)
    rho = "loss +1.00, grad norm -1.00" if mode == "min" else "loss -1.00, grad norm +1.00"
    assert f"over 5 finished trials: {rho})" in low_loss.reason

    low_loss, high_loss = sweep("paper")  # the prior keeps the other one
    assert (low_loss.action, high_loss.action) == ("stop", "continue")


def test_calibrated_says_when_it_falls_back_to_paper():
    pruner = asha(signal="calibrated")
    run_trial(pruner, "a", 2, loss=2.0, grad_norm=1.0)
    run_trial(pruner, "b", 2, loss=2.2, grad_norm=0.8)
    decision = run_trial(pruner, "c", 2, loss=1.8, grad_norm=1.5)[-1]
    assert decision.reason == (
        "stopped at 1,024 samples: paper score 3 (mean rank of low grad norm 1.5 and high loss "
        "1.8; calibrated falls back: 0 finished trials, 4 needed) is 3rd of 3 at this rung; "
        "the top 1 continues"
    )


def test_calibrated_ignores_objectives_of_stopped_trials():
    pruner = asha(signal="calibrated", reduction_factor=2, min_completed=3)
    run_trial(pruner, "a", 2, grad_norm=1.0)
    assert run_trial(pruner, "b", 2, grad_norm=2.0)[-1].stop
    pruner.on_trial_complete("b", 0.5)  # Ray reports completion of stopped trials too
    pruner.on_trial_complete("a", 1.0)
    assert pruner.state_dict()["finals"] == {"a": 1.0}


# ---- median and none ------------------------------------------------------------------------


def test_median_stopping_baseline():
    pruner = MedianPruner(signal="grad_norm", grace=1024, interval=1024, min_samples=3, max_t=8192)
    for i, g in enumerate([1.0, 2.0]):
        run_trial(pruner, f"t{i}", 2, grad_norm=g)
    decision = pruner.on_result("few", report(2, grad_norm=9.0))
    assert decision.action == "continue"
    assert decision.reason.endswith(
        "only 2 other scores at this point, fewer than 3 needed to decide"
    )
    assert run_trial(pruner, "tie", 2, grad_norm=2.0)[-1].action == "continue"  # median of 1,2,9
    decision = run_trial(pruner, "worse", 2, grad_norm=2.5)[-1]
    assert (decision.action, decision.cutoff, decision.keep) == ("stop", 2.0, None)
    assert decision.reason == (
        "stopped at 1,024 samples: grad norm 2.5 is worse than the median 2 of 4 other "
        "trials at this point"
    )
    assert pruner.on_result("t0", report(4, grad_norm=1.0)).rung_time == 2048


def test_none_never_stops():
    pruner = make_pruner({"type": "none", "signal": "grad_norm"})
    assert isinstance(pruner, NopPruner)
    assert all(pruner.on_result("a", report(s, grad_norm=1e9)) is None for s in range(1, 20))
    assert pruner.on_result_all("a", report(30)) == []
    pruner.load_state_dict(json.loads(json.dumps(pruner.state_dict())))


# ---- factory, state, validation -------------------------------------------------------------


def test_factory_from_a_dict_and_from_a_pydantic_model():
    spec = {"type": "asha", "signal": "grad_norm", "grace": 1024, "reduction_factor": 3,
            "time_attr": "samples", "max_t": 8192, "window": 5, "mode": "min"}  # fmt: skip
    pruner = make_pruner(spec)
    assert isinstance(pruner, ASHAPruner) and pruner.rung_times() == [1024, 3072]

    class PrunerSpec(BaseModel):
        type: str = "median"
        signal: str = "loss"
        grace: int = 256
        max_t: int | None = None

    pruner = make_pruner(PrunerSpec())
    assert isinstance(pruner, MedianPruner) and pruner.config()["max_t"] is None


def interleaved_sweep(seed=0, n_trials=8, concurrent=3, steps=12):
    """(trial_id, result) events of a sweep with trials running side by side, and completions
    as (trial_id, None-result, objective)."""
    rng = random.Random(seed)
    events, live, queue = [], {}, [f"t{i}" for i in range(n_trials)]
    while queue or live:
        while queue and len(live) < concurrent:
            trial = queue.pop(0)
            live[trial] = [0, rng.uniform(1, 3), rng.uniform(0.2, 2)]
        trial = rng.choice(sorted(live))
        state = live[trial]
        state[0] += 1
        step, loss, g = state
        spike = 10.0 if rng.random() < 0.1 else 1.0
        result = report(step, loss=loss * (1 + 0.05 * rng.random()), grad_norm=g * spike)
        if step % 4 == 0:
            result["eval_loss"] = loss + g
        events.append((trial, result, None))
        if step == steps:
            events.append((trial, None, loss + g))
            del live[trial]
    return events


def replay(pruner, events, stopped):
    out = []
    for trial, result, objective in events:
        if result is None:
            pruner.on_trial_complete(trial, objective)
        elif trial not in stopped:
            decisions = pruner.on_result_all(trial, result)
            out += [d.to_dict() for d in decisions]
            if decisions and decisions[-1].stop:
                stopped.add(trial)
    return out


@pytest.mark.parametrize("kind, signal", [("asha", "calibrated"), ("asha", "objective"),
                                          ("median", "paper")])  # fmt: skip
def test_save_restore_mid_sweep_gives_identical_decisions(kind, signal):
    spec = {"type": kind, "signal": signal, "grace": 1024, "max_t": 6144, "min_completed": 3}
    if kind == "asha":
        spec["reduction_factor"] = 2
    events = interleaved_sweep()
    straight = replay(make_pruner(spec), events, set())
    assert any(d["action"] == "stop" for d in straight)

    first, stopped_ = make_pruner(spec), set()
    head = replay(first, events[: len(events) // 2], stopped_)
    resumed = make_pruner(spec)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict(), allow_nan=False)))
    tail = replay(resumed, events[len(events) // 2 :], stopped_)
    assert head + tail == straight


def test_state_only_loads_into_the_same_rungs():
    state = asha().state_dict()
    with pytest.raises(ValueError, match="saved with grace=1024, this pruner has grace=512"):
        asha(grace=512).load_state_dict(state)
    with pytest.raises(ValueError, match="saved by pruner 'asha', not 'median'"):
        MedianPruner().load_state_dict(state)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"grace": 0}, "grace must be a positive number, got 0"),
        ({"grace": True}, "grace must be a positive number, got True"),
        ({"reduction_factor": 1}, "reduction_factor must be greater than 1, got 1"),
        ({"reduction_factor": "3"}, "reduction_factor must be a positive number, got '3'"),
        ({"time_attr": "epochs"}, "time_attr must be one of samples, steps; got 'epochs'"),
        ({"grace": 1024, "max_t": 512}, "max_t (512) must be greater than grace (1024)"),
        ({"max_t": -1}, "max_t must be a positive number, got -1"),
        ({"window": 0}, "window must be an integer >= 1, got 0"),
        ({"window": 2.5}, "window must be an integer >= 1, got 2.5"),
        ({"smooth": "max"}, "smooth must be one of median, mean; got 'max'"),
        ({"signal": "accuracy"}, "signal must be one of grad_norm, loss, paper, objective, "
                                 "calibrated, learned; got 'accuracy'"),
        ({"mode": "up"}, "mode must be one of min, max; got 'up'"),
        ({"metric": ""}, "metric must be a non-empty string, got ''"),
        ({"min_completed": 2}, "min_completed must be an integer >= 3, got 2"),
        ({"type": "median", "interval": -5}, "interval must be a positive number, got -5"),
        ({"type": "median", "min_samples": 0}, "min_samples must be an integer >= 1, got 0"),
        ({"type": "hyperband"}, "pruner type must be one of asha, median, none; got 'hyperband'"),
        ({"graces": 10}, "unknown option(s) for pruner type 'asha': graces"),
        ({"type": "median", "reduction_factor": 3},
         "unknown option(s) for pruner type 'median': reduction_factor"),
    ],
)  # fmt: skip
def test_bad_arguments_name_the_bad_value(spec, message):
    with pytest.raises(ValueError) as err:
        make_pruner({"type": "asha", **spec})
    assert message in str(err.value)
