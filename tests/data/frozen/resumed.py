"""What a sweep interrupted mid-run must hold once it is resumed from the store (sweepd/engine/
store_resume.py): read the store (``read_store``) before and after, and compare (``check_resumed``).

Plain SQL on sweepd's tables (both backends), and Optuna's own API on the study.
"""

from __future__ import annotations

import json
from typing import Any

import optuna
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

NUMBER_ATTR = "sweepd_number"  # sweepd.engine.search.NUMBER_ATTR
COUNTING = ("COMPLETE", "PRUNED")  # Optuna trials that count; FAIL: the orphan


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def read_store(db_url: str) -> dict[str, Any]:
    """The store's one sweep: its row, trials by number (with their metric points' (step, attempt)
    and superseded points' (attempt, step)), decisions by trial number, and its Optuna trials."""
    engine = create_engine(db_url, poolclass=NullPool)
    with engine.connect() as conn:
        (sweep,) = conn.execute(text("SELECT id, state, optuna_study_name FROM sweepd_sweeps")).mappings().all()
        trials = {}
        for row in conn.execute(text("SELECT * FROM sweepd_trials ORDER BY number")).mappings():
            points = conn.execute(text("SELECT step, attempt, loss FROM sweepd_metric_points WHERE trial_id = :t "
                                       "ORDER BY step"), {"t": row["id"]}).all()
            superseded = conn.execute(text("SELECT attempt, step, point FROM sweepd_superseded_points "
                                           "WHERE trial_id = :t ORDER BY attempt, step"), {"t": row["id"]}).all()
            trials[row["number"]] = {
                "state": row["state"], "attempts": row["attempts"], "objective": row["objective"],
                "config": _json(row["config"]), "metrics_final": _json(row["metrics_final"]),
                "stopped_at": row["stopped_at"], "reason": row["reason"], "samples": row["samples"],
                "points": [(s, a) for s, a, _ in points], "losses": [loss for _, _, loss in points],
                "superseded": [(a, s) for a, s, _ in superseded],
                "superseded_losses": [_json(p)["loss"] for _, _, p in superseded]}
        decisions: dict[int, list[dict]] = {}
        for (payload,) in conn.execute(text("SELECT payload FROM sweepd_events WHERE sweep_id = :s AND "
                                            "kind = 'decision' ORDER BY id"), {"s": sweep["id"]}):
            payload = _json(payload)
            decisions.setdefault(payload["trial_number"], []).append(payload)
        events = [(kind, message, _json(payload)) for kind, message, payload in conn.execute(text(
            "SELECT kind, message, payload FROM sweepd_events WHERE sweep_id = :s ORDER BY id"), {"s": sweep["id"]})]
    engine.dispose()
    storage = optuna.storages.RDBStorage(db_url)
    study = optuna.load_study(study_name=sweep["optuna_study_name"], storage=storage)
    optuna_trials = [{"number": t.user_attrs.get(NUMBER_ATTR), "state": t.state.name, "value": t.value,
                      "params": t.params, "system_attrs": t.system_attrs,
                      "intermediate": dict(t.intermediate_values)} for t in study.get_trials(deepcopy=False)]
    storage.remove_session()
    storage.engine.dispose()
    return {"sweep": dict(sweep), "trials": trials, "decisions": decisions, "events": events,
            "optuna": optuna_trials}


def contiguous(steps: list[int]) -> bool:
    return steps == list(range(1, len(steps) + 1))


def check_interrupted(held: dict[str, Any], *, finished: int, running: int) -> None:
    """The store of a sweep killed with trials 1..finished done and trial ``running`` running."""
    trials = held["trials"]
    assert held["sweep"]["state"] == "running"
    assert sorted(trials) == list(range(1, running + 1))
    assert all(trials[n]["state"] in ("completed", "stopped") for n in range(1, finished + 1)), trials
    assert trials[running]["state"] == "running" and trials[running]["attempts"] == 1
    assert trials[running]["points"], "the running trial had stored no step"
    assert contiguous([step for step, _ in trials[running]["points"]])
    states = [t["state"] for t in held["optuna"]]
    assert states.count("RUNNING") == 1 and sum(s in COUNTING for s in states) == finished, states
    (orphan,) = [t for t in held["optuna"] if t["state"] == "RUNNING"]
    assert orphan["number"] == running and orphan["params"] == trials[running]["config"]
    assert set(held["decisions"]) >= set(range(1, finished + 1)), "every finished trial was judged at a rung"


def check_resumed(after: dict[str, Any], before: dict[str, Any], *, planned: int, rerun: int) -> None:
    """Every planned trial exactly once; the finished ones untouched; trial ``rerun`` run again as
    attempt 2 with its params; the study: the planned trials counting once each, the orphan FAIL;
    every step once per attempt; the pruner's old decisions not repeated."""
    trials, old = after["trials"], before["trials"]
    assert after["sweep"]["state"] == "succeeded", after["events"][-3:]
    assert sorted(trials) == list(range(1, planned + 1))
    assert all(t["state"] in ("completed", "stopped") for t in trials.values()), trials
    for number, was in old.items():
        if number != rerun:  # finished before the crash: not rerun, not touched
            assert trials[number] == was, (number, was, trials[number])
    again, was = trials[rerun], old[rerun]
    assert again["attempts"] == 2 and again["config"] == was["config"], (again, was)
    # the first attempt's steps moved out of the curve, kept apart; the curve is the second's
    assert again["superseded"] == [(1, step) for step, _ in was["points"]], again["superseded"]
    assert {a for _, a in again["points"]} == {2}
    for number in range(rerun + 1, planned + 1):
        assert trials[number]["attempts"] == 1 and not trials[number]["superseded"]
    for number, t in trials.items():
        steps = [s for s, _ in t["points"]]
        assert steps and contiguous(steps), (number, steps)
        assert t["samples"] > 0
    configs = [json.dumps(t["config"], sort_keys=True) for t in trials.values()]
    assert len(set(configs)) == planned, f"a trial's params were suggested twice: {configs}"

    optuna_trials = after["optuna"]
    counting = [t for t in optuna_trials if t["state"] in COUNTING]
    assert sorted(t["number"] for t in counting) == list(range(1, planned + 1)), optuna_trials
    assert [t["state"] for t in optuna_trials].count("FAIL") == 1, [t["state"] for t in optuna_trials]
    assert len(optuna_trials) == planned + 1
    (orphan,) = [t for t in optuna_trials if t["state"] == "FAIL"]
    assert orphan["number"] == rerun and "interrupted" in orphan["system_attrs"]["sweepd_orphaned"]
    by_number = {t["number"]: t for t in counting}
    assert by_number[rerun]["params"] == orphan["params"] == was["config"]
    assert by_number[rerun]["system_attrs"]["fixed_params"] == orphan["params"]  # enqueued, not sampled
    for t in before["optuna"]:
        if t["state"] in COUNTING:  # the finished trials' Optuna records: as they were
            assert by_number[t["number"]] == t, (t, by_number[t["number"]])
    for number, t in trials.items():  # Optuna's verdict matches the store's
        assert by_number[number]["state"] == ("COMPLETE" if t["state"] == "completed" else "PRUNED")
        if t["state"] == "completed":
            assert by_number[number]["value"] == t["objective"]

    for number, decisions in before["decisions"].items():
        if number != rerun:  # judged once, before the crash; not again
            assert after["decisions"][number] == decisions, number
    first_attempt = before["decisions"].get(rerun, [])
    assert after["decisions"][rerun][:len(first_attempt)] == first_attempt  # kept, as history
    # judged afresh from the first rung, against the finished trials' rebuilt rung scores
    judged = after["decisions"][rerun][len(first_attempt):]
    at_first_rung = [n for n in old if n != rerun and any(d["rung"] == 0 for d in before["decisions"].get(n, []))]
    assert judged[0]["rung"] == 0 and judged[0]["cohort"] == len(at_first_rung) + 1, judged[0]
    resumed = [p["resumed_from_store"] for kind, _, p in after["events"] if kind == "info"
               and p and "resumed_from_store" in p]
    assert resumed == [{"finished": [n for n in old if n != rerun], "reruns": [rerun],
                        "first_new_number": rerun + 1,
                        "decisions": sum(len({d["rung"] for d in before["decisions"].get(n, [])})
                                         for n in old if n != rerun)}], resumed
