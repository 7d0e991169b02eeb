"""The ``learned`` signal: the loss prior, rung-to-rung pairs, finished trials and earlier sweeps
set the weights; every decision says which; history and all it learned survive save/restore.
No Ray here."""

from __future__ import annotations

import json
import math
import random

import pytest

from sweepd.pruners import ASHAPruner, MedianPruner, NopPruner, make_pruner
from sweepd.pruners.learned import evidence_words

SPS = 512  # samples per step in the hand-made curves


def report(step, loss=2.0, grad_norm=1.0, **extra):
    return {"step": step, "samples": step * SPS, "loss": loss, "grad_norm": grad_norm, **extra}


def curve(steps, loss=2.0, grad_norm=1.0, **extra) -> list[dict]:
    return [report(s, loss, grad_norm, **extra) for s in range(1, steps + 1)]


def run(pruner, trial_id, reports):
    """Feed reports until the pruner stops the trial; every decision taken."""
    out = []
    for result in reports:
        out += pruner.on_result_all(trial_id, result)
        if out and out[-1].stop:
            break
    return out


def learned(**kw):
    options = {"signal": "learned", "grace": 1024, "reduction_factor": 3, "max_t": 8192}
    return ASHAPruner(**{**options, **kw})


# ---- two banks where the early signal points opposite ways ----------------------------------

# (loss, grad norm) of 9 flat curves. In the "stock" bank the lower the feature, the better the
# final objective (loss-like, minimised); in the "paper" bank the higher, the better.
LEVELS = [1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0]


def bank(feature: str, direction: str, steps: int = 40) -> list[dict]:
    trials = []
    for x in LEVELS:
        loss, g = (x, 1.0) if feature == "loss" else (2.0, x)
        final = x if direction == "stock" else 10.0 - x
        trials.append({"curve": curve(steps, loss, g), "objective": final})
    return trials


def probes(feature: str):
    """A low and a high value of the feature, everything else neutral."""
    if feature == "loss":
        return curve(4, loss=0.5), curve(4, loss=4.0)
    return curve(4, grad_norm=0.5), curve(4, grad_norm=4.0)


def judge_probes(pruner, feature):
    low, high = probes(feature)
    return run(pruner, "low", low)[0], run(pruner, "high", high)[0]


@pytest.mark.parametrize("feature", ["loss", "grad_norm"])
def test_opposite_banks_learn_opposite_directions_from_finished_trials(feature):
    def sweep(direction):
        # eta 10: the 9 bank trials are never judged (fewer than 10 scores), all finish, and
        # cross both rungs (1,024 and 10,240 samples): 9 rung pairs and 9 finished trials
        pruner = learned(reduction_factor=10, max_t=20480)
        for i, trial in enumerate(bank(feature, direction)):
            assert not any(d.stop for d in run(pruner, f"t{i}", trial["curve"]))
            pruner.on_trial_complete(f"t{i}", trial["objective"])
        return judge_probes(pruner, feature)

    stock_low, stock_high = sweep("stock")
    paper_low, paper_high = sweep("paper")
    # with a flat loss the next rung's loss ranks nothing: no rung pair teaches anything
    pairs = 9 if feature == "loss" else 0
    for d in (stock_low, paper_low):
        assert d.detail["evidence"] == {"rung_pairs": pairs, "finished": 9, "history_trials": 0,
                                        "history_sweeps": 0}  # fmt: skip
    assert stock_low.detail["weights"][feature] > 0 > paper_low.detail["weights"][feature]
    # the stock bank keeps the low value and stops the high one; the paper bank the opposite
    assert (stock_low.action, stock_high.action) == ("continue", "stop")
    assert (paper_low.action, paper_high.action) == ("stop", "continue")
    # the rung pairs' proxy (next rung's loss) agrees with the final in the stock bank only
    if feature == "loss":
        assert stock_low.detail["proxy_validity"][0] > 0 > paper_low.detail["proxy_validity"][0]


@pytest.mark.parametrize("feature", ["loss", "grad_norm"])
def test_opposite_banks_learn_opposite_directions_from_history(feature):
    def sweep(direction):
        pruner = learned()
        pruner.add_history("night-1", bank(feature, direction))
        run(pruner, "n1", curve(2))  # two neutral trials, so the probes face a cohort
        run(pruner, "n2", curve(2))
        return judge_probes(pruner, feature)

    stock_low, stock_high = sweep("stock")
    paper_low, paper_high = sweep("paper")
    assert stock_low.detail["weights"][feature] > 0 > paper_low.detail["weights"][feature]
    assert (stock_low.action, stock_high.action) == ("continue", "stop")
    assert (paper_low.action, paper_high.action) == ("stop", "continue")
    assert "weights from 9 trials of 1 earlier sweep:" in paper_low.reason


def test_the_objective_mode_orients_the_evidence():
    # a maximised objective that is high where the loss was low: lower loss is still better
    pruner = learned(mode="max", metric="eval_acc")
    trials = [{"curve": curve(40, x), "objective": 1.0 / x} for x in LEVELS]
    pruner.add_history("night-1", trials)
    run(pruner, "n1", curve(2))
    run(pruner, "n2", curve(2))
    low, high = judge_probes(pruner, "loss")
    assert low.detail["weights"]["loss"] > 0.9 and low.detail["rho"]["history"]["loss"] == 1.0
    assert (low.action, high.action) == ("continue", "stop")


# ---- rung-to-rung evidence, before any trial finishes ---------------------------------------


def test_rung_pairs_alone_move_the_weights_at_the_second_rung():
    # Every trial has the same loss at the first rung; the higher its grad norm there, the
    # lower its loss at the second. Nothing finishes.
    pruner = learned(max_t=100_000)

    def trial(g):  # rung 0 at step 2 (1,024 samples), rung 1 at step 6 (3,072)
        return curve(2, 2.0, g) + [report(s, 2.0 - 0.1 * g, g) for s in range(3, 7)]

    decisions = {}
    for i, g in enumerate([1.0, 2.0, 3.0, 4.0]):
        decisions[i] = run(pruner, f"t{i}", trial(g))
    at_second_rung = [d for d in decisions[3] if d.rung == 1][0]
    for d in decisions[0] + decisions[1] + decisions[2]:
        assert d.detail["source"] == "prior"  # fewer than min_completed (4) pairs yet
    evidence = {"rung_pairs": 4, "finished": 0, "history_trials": 0, "history_sweeps": 0}
    assert at_second_rung.detail["evidence"] == evidence
    assert at_second_rung.detail["rho"]["rung_pairs"]["grad_norm"] == -1.0
    # 4 pairs at half weight against the prior's 4: w = 0.5 * 4 * (-1) / (4 + 2)
    assert at_second_rung.detail["weights"]["grad_norm"] == pytest.approx(-1 / 3, abs=1e-4)
    assert at_second_rung.detail["weights"]["loss"] == 1.0  # the loss was tied at rung 0
    assert "weights from 4 rung pairs: loss +1.00, grad norm -0.33)" in at_second_rung.reason
    # and a new trial at the FIRST rung is ranked by what the pairs taught: high grad norm first
    first = run(pruner, "high", curve(2, 2.0, 9.0))[0]
    assert first.rank == 1 and first.detail["source"] == "evidence"


# ---- no evidence: the prior ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["asha", "median"])
def test_no_evidence_leaves_the_prior_loss(kind):
    rng = random.Random(3)
    trials = {f"t{i}": (rng.uniform(1, 3), rng.uniform(0.2, 2)) for i in range(20)}
    spec = {"type": kind, "grace": 1024, "max_t": 2048}  # one rung: no rung pairs
    seen = {}
    for signal in ("learned", "loss"):
        pruner = make_pruner({**spec, "signal": signal})
        if signal == "learned":  # curves without a final objective teach nothing
            pruner.add_history("stopped-only", [{"curve": curve(8, 1.0), "objective": None}] * 5)
        out = []
        for trial_id, (loss, g) in trials.items():
            out += run(pruner, trial_id, curve(3, loss, g))
        seen[signal] = out
    assert any(d.stop for d in seen["loss"])
    keys = ("trial_id", "action", "rank", "keep", "cutoff", "score", "cohort")
    assert [[getattr(d, k) for k in keys] for d in seen["learned"]] == [
        [getattr(d, k) for k in keys] for d in seen["loss"]]  # fmt: skip
    for d in seen["learned"]:
        assert d.detail["source"] == "prior" and d.detail["weights"]["loss"] == 1.0
        assert sum(abs(w) for w in d.detail["weights"].values()) == 1.0
    decision = seen["learned"][-1]
    assert "(prior: loss, no evidence yet)" in decision.reason
    if kind == "asha":
        assert decision.reason.split(": ", 1)[1].startswith("loss 1.27 (prior: loss, no evidence")


def test_finished_trials_fewer_than_min_completed_leave_the_prior():
    pruner = learned(min_completed=4, max_t=2048)
    for i, x in enumerate(LEVELS[:3]):
        run(pruner, f"t{i}", curve(4, x))
        pruner.on_trial_complete(f"t{i}", 10 - x)  # the paper direction, but only 3 of them
    decision = run(pruner, "x", curve(4, 0.5))[0]
    assert decision.detail["source"] == "prior" and decision.action == "continue"


# ---- the sentence ---------------------------------------------------------------------------


def test_the_sentence_counts_rung_pairs_finished_trials_and_earlier_sweeps():
    pruner = learned(reduction_factor=10, max_t=20480)
    pruner.add_history("night-1", bank("loss", "stock"))  # 9 trials with an objective
    night2 = bank("loss", "stock")[:5] + [{"curve": curve(40, 9.0), "objective": None}] * 3
    pruner.add_history("night-2", night2)  # 5 with an objective, 3 without: 5 count
    pruner.add_history("tiny", bank("loss", "stock")[:3])  # fewer than min_completed: no set
    assert pruner.history_summary() == {"sweeps": 3, "trials": 17, "curves": 20}
    for i, x in enumerate(LEVELS[:6]):  # 6 trials cross both rungs, 4 of them finish
        run(pruner, f"t{i}", curve(21, x))
        if i < 4:
            pruner.on_trial_complete(f"t{i}", x)
    for i in range(4):  # 4 more at the first rung only, so the 10th faces a full cohort
        decision = run(pruner, f"x{i}", curve(3, 1.1 + i))[0]
    assert decision.cohort == 10
    state = pruner.state_dict()
    pairs = sum(t in state["rungs"][0] for t in state["rungs"][1])
    assert pairs == 6
    assert decision.detail["evidence"] == {"rung_pairs": 6, "finished": 4, "history_trials": 14,
                                           "history_sweeps": 2}  # fmt: skip
    assert "weights from 6 rung pairs, 4 finished trials and 14 trials of 2 earlier sweeps: " \
           "loss +1.00)" in decision.reason  # fmt: skip
    json.dumps(decision.to_dict(), allow_nan=False)


def test_evidence_words():
    words = {"rung_pairs": 1, "finished": 0, "history_trials": 0, "history_sweeps": 0}
    assert evidence_words(words) == "1 rung pair"
    words = {"rung_pairs": 0, "finished": 1, "history_trials": 31, "history_sweeps": 1}
    assert evidence_words(words) == "1 finished trial and 31 trials of 1 earlier sweep"
    words = {"rung_pairs": 1200, "finished": 0, "history_trials": 4, "history_sweeps": 2}
    assert evidence_words(words) == "1,200 rung pairs and 4 trials of 2 earlier sweeps"


# ---- features and history replay ------------------------------------------------------------


def test_history_is_replayed_through_the_pruners_own_windows_and_rungs():
    rng = random.Random(5)
    noisy = [report(s, 3.0 - 0.02 * s + rng.gauss(0, 0.05), 1.0 + rng.random(),
                    **({"eval_loss": 2.5 - 0.01 * s} if s % 5 == 0 else {}))
             for s in range(1, 30)]  # fmt: skip
    live = learned(window=4)
    run(live, "a", noisy)
    earlier = learned(window=4)
    earlier.add_history("night-1", [{"curve": noisy, "objective": 1.0}])
    recorded = [rung["a"] for rung in live.state_dict()["rungs"]]
    assert earlier.state_dict()["history"]["night-1"][0]["rungs"] == recorded
    assert len(recorded) == 2  # rungs at 1,024 and 3,072 samples, both below max_t (8,192)
    slope = recorded[1]["loss_slope"]
    assert -0.02 / SPS * 3 < slope < 0 and recorded[1]["objective"] == 2.45  # step 5
    assert set(recorded[1]) == {"loss", "grad_norm", "loss_slope", "grad_norm_slope", "objective"}


def test_a_sweep_added_again_replaces_it():
    pruner = learned()
    assert pruner.add_history("night-1", bank("loss", "paper")) == 9
    assert pruner.add_history("night-1", bank("loss", "stock")) == 9
    assert pruner.history_summary() == {"sweeps": 1, "trials": 9, "curves": 9}
    run(pruner, "n1", curve(2))
    run(pruner, "n2", curve(2))
    assert judge_probes(pruner, "loss")[0].detail["weights"]["loss"] > 0


def test_history_survives_the_objective_being_set_again():
    # the Tune adapter calls set_objective when Ray hands it the metric, maybe after history
    pruner = learned()
    pruner.add_history("night-1", [{"curve": curve(12, eval_loss=1.5), "objective": 1.0}])
    pruner.set_objective("eval_loss", "min")  # the same metric: nothing forgotten
    inputs = pruner.state_dict()["history"]["night-1"][0]["rungs"]
    assert [r["objective"] for r in inputs] == [1.5, 1.5]
    pruner.set_objective("eval_acc", "max")  # another metric: its interim evals are unknown
    inputs = pruner.state_dict()["history"]["night-1"][0]["rungs"]
    assert [r["objective"] for r in inputs] == [None, None] and inputs[0]["loss"] == 2.0
    assert pruner.history_summary() == {"sweeps": 1, "trials": 1, "curves": 1}


@pytest.mark.parametrize(
    "sweep_id, trials, message",
    [
        ("", [], "sweep_id must be a non-empty string, got ''"),
        ("s", {"curve": []}, "history of 's' must be a list of trials"),
        ("s", [{"objective": 1.0}], "history of 's', trial 0: expected {'curve': [report, ...]"),
        ("s", [{"curve": [3]}], "history of 's', trial 0: a report must be a mapping, got 3"),
    ],
)
def test_bad_history_names_the_bad_value(sweep_id, trials, message):
    with pytest.raises(ValueError) as err:
        learned().add_history(sweep_id, trials)
    assert message in str(err.value)


# ---- save / restore -------------------------------------------------------------------------


def interleaved(seed=0, n_trials=14, concurrent=4, steps=24):
    """(trial_id, result | None, objective) events of trials running side by side, with an
    interim eval every 4 steps; the early loss and grad norm both bear on the final."""
    rng = random.Random(seed)
    events, live, queue = [], {}, [f"t{i}" for i in range(n_trials)]
    while queue or live:
        while queue and len(live) < concurrent:
            live[queue.pop(0)] = [0, rng.uniform(1, 3), rng.uniform(0.2, 2)]
        trial = rng.choice(sorted(live))
        state = live[trial]
        state[0] += 1
        step, loss, g = state
        spike = 10.0 if rng.random() < 0.1 else 1.0
        result = report(step, loss * (1 - 0.01 * step) * (1 + 0.05 * rng.random()), g * spike)
        if step % 4 == 0:
            result["eval_loss"] = loss + g + 0.1 * rng.random()
        events.append((trial, result, None))
        if step == steps:
            events.append((trial, None, loss - g))
            del live[trial]
    return events


def earlier_sweep(seed):
    by_trial: dict[str, list] = {}
    finals = {}
    for trial, result, objective in interleaved(seed):
        if result is None:
            finals[trial] = objective
        else:
            by_trial.setdefault(trial, []).append(result)
    return [{"curve": c, "objective": finals.get(t)} for t, c in by_trial.items()]


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


@pytest.mark.parametrize("kind", ["asha", "median"])
@pytest.mark.parametrize("with_history", [False, True])
def test_save_restore_gives_the_same_decisions(kind, with_history):
    spec = {"type": kind, "signal": "learned", "grace": 1024, "max_t": 12288}
    if kind == "asha":
        spec["reduction_factor"] = 2
    history = {"night-1": earlier_sweep(1), "night-2": earlier_sweep(2)} if with_history else {}

    def fresh():
        pruner = make_pruner(spec)
        for sweep_id, trials in history.items():
            pruner.add_history(sweep_id, trials)
        return pruner

    events = interleaved()
    straight = replay(fresh(), events, set())
    assert any(d["action"] == "stop" for d in straight)
    sources = {d["detail"]["source"] for d in straight}
    assert sources == ({"evidence"} if with_history else {"prior", "evidence"})

    for cut in (len(events) // 3, 2 * len(events) // 3):
        first, stopped = fresh(), set()
        head = replay(first, events[:cut], stopped)
        resumed = make_pruner(spec)  # history comes back from the state, not from the caller
        resumed.load_state_dict(json.loads(json.dumps(first.state_dict(), allow_nan=False)))
        assert resumed.history_summary() == first.history_summary()
        tail = replay(resumed, events[cut:], stopped)
        assert head + tail == straight

        # a driver that adds the same history again after the restore changes nothing
        again, stopped = make_pruner(spec), set(stopped_at(head))
        again.load_state_dict(json.loads(json.dumps(first.state_dict(), allow_nan=False)))
        for sweep_id, trials in history.items():
            again.add_history(sweep_id, trials)
        assert replay(again, events[cut:], stopped) == tail


def stopped_at(decisions):
    return [d["trial_id"] for d in decisions if d["action"] == "stop"]


def test_history_changes_decisions_so_the_round_trip_test_can_fail():
    events = interleaved()
    spec = {"type": "asha", "signal": "learned", "grace": 1024, "max_t": 12288,
            "reduction_factor": 2}
    plain = replay(make_pruner(spec), events, set())
    informed = make_pruner(spec)
    informed.add_history("night-1", [
        {"curve": t["curve"], "objective": None if t["objective"] is None else -t["objective"]}
        for t in earlier_sweep(1)])  # fmt: skip
    assert stopped_at(replay(informed, events, set())) != stopped_at(plain)


# ---- other signals ignore history -----------------------------------------------------------


@pytest.mark.parametrize("signal", ["grad_norm", "loss", "paper", "objective", "calibrated"])
@pytest.mark.parametrize("cls", [ASHAPruner, MedianPruner])
def test_add_history_is_ignored_by_other_signals(signal, cls):
    events = interleaved()

    def sweep(with_history):
        pruner = cls(signal=signal, grace=1024, max_t=12288, min_completed=3)
        if with_history:
            assert pruner.add_history("night-1", bank("loss", "paper")) == 0  # taken: none
            assert pruner.add_history("bad", "not even a list") == 0  # not even checked
        return pruner, replay(pruner, events, set())

    with_history, decisions = sweep(True)
    assert decisions == sweep(False)[1]
    assert with_history.history_summary() == {"sweeps": 0, "trials": 0, "curves": 0}
    assert with_history.state_dict()["history"] == {}


def test_the_none_pruner_takes_history_and_ignores_it():
    pruner = NopPruner()
    assert pruner.add_history("night-1", bank("loss", "stock")) == 0
    assert pruner.history_summary() == {"sweeps": 0, "trials": 0, "curves": 0}
    assert pruner.on_result("a", report(100)) is None


def test_learned_is_a_spec_choice_and_decisions_serialise():
    pruner = make_pruner({"type": "asha", "signal": "learned"})
    assert pruner.signal_name == "learned" and pruner.signal.needs == ("loss",)
    decision = run(pruner, "a", [report(s, math.nan if s == 2 else 2.0) for s in range(1, 4)])[0]
    json.dumps(decision.to_dict(), allow_nan=False)
