"""Warm start from history (sweepd/engine/warm_start.py) and the fingerprint behind `previous`
(sweepd/engine/fingerprint.py), against a real SQLite store and Optuna study; no Ray, no training."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from sweepd.engine import fingerprint as fp
from sweepd.engine import warm_start as ws
from sweepd.engine.search import NUMBER_ATTR, optuna_storage
from sweepd.spec import Capacity, SpecError, parse_spec
from sweepd.store import repo, session_scope
from tests.api.factories import LINE, curve, spec_dict

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    (root / "train.jsonl").write_text(LINE * 4)
    (root / "eval.jsonl").write_text(LINE * 2)
    return root


def make_spec(data: Path, **changes: Any):
    search = {**spec_dict(data)["search"], "algorithm": "tpe", **changes.pop("search", {})}
    return parse_spec(spec_dict(data, search=search, **changes), data_roots=[data], capacity=Capacity.unlimited())


# ---- the fingerprint --------------------------------------------------------------------------


def test_the_fingerprint_follows_the_data_bytes_the_model_and_the_objective(data: Path):
    spec = make_spec(data)
    first = fp.fingerprint(spec)
    assert first is not None and len(first) == 64
    assert fp.fingerprint(make_spec(data, search={"num_trials": 9, "seed": 3})) == first  # the search is not in it

    train = data / "train.jsonl"
    raw = bytearray(train.read_bytes())
    stat = train.stat()
    raw[10] = ord("X") if raw[10] != ord("X") else ord("Y")  # one byte, same size
    train.write_bytes(bytes(raw))
    os.utime(train, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000))
    changed = fp.fingerprint(spec)
    assert changed != first
    assert fp.fingerprint(spec) == changed  # stable

    assert fp.fingerprint(make_spec(data, objective={"metric": "train_loss"})) != changed
    assert fp.fingerprint(make_spec(data, model={"path": "builtin:tiny"})) == changed


def test_train_and_eval_files_are_not_interchangeable(tmp_path: Path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("aaa\n")
    b.write_text("bbb\n")
    assert fp.data_hash([a], [b]) != fp.data_hash([b], [a])
    assert fp.data_hash([a, b]) != fp.data_hash([a], [b])
    assert fp.data_hash([a], [b]) == fp.data_hash([str(a)], [str(b)])


def test_a_file_digest_is_cached_by_path_size_and_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    f = tmp_path / "d.jsonl"
    f.write_text("x" * 1000)
    first = fp.file_digest(f)
    opened: list = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    assert fp.file_digest(f) == first and not opened  # a stat, no read
    f.write_text("y" * 1000)
    os.utime(f, ns=(1, 2))
    assert fp.file_digest(f) != first and opened


def test_an_unreadable_data_file_means_no_fingerprint(data: Path):
    spec = make_spec(data)
    (data / "eval.jsonl").unlink()
    assert fp.fingerprint(spec) is None


# ---- the space: distributions and filtering ---------------------------------------------------


def test_distributions_are_the_ones_ray_gives_optuna(data: Path):
    from ray.tune.search.optuna import OptunaSearch

    spec = make_spec(data, search={"space": {
        "learning_rate": {"loguniform": [1e-5, 1e-3]}, "effective_batch_size": {"choice": [8, 16]},
        "warmup_steps": {"int": [0, 10]}, "weight_decay": {"uniform": [0.0, 0.2]}, "lr_scheduler": "cosine"}})
    assert ws.distributions(spec) == OptunaSearch.convert_search_space(spec.to_tune_space())


def test_fit_params_drops_what_lies_outside_the_new_space():
    dists = {"lr": FloatDistribution(1e-4, 1e-3, log=True), "bs": CategoricalDistribution([8, 16]),
             "warmup": IntDistribution(0, 10)}
    assert ws.fit_params({"lr": 5e-4, "bs": 16, "warmup": 3}, dists) == ({"lr": 5e-4, "bs": 16, "warmup": 3}, [])
    kept, dropped = ws.fit_params({"lr": 5e-2, "bs": 32, "warmup": 2.5, "gone": 1}, dists)
    assert kept == {} and sorted(dropped) == ["bs", "gone", "lr", "warmup"]
    assert ws.fit_params({"bs": True, "lr": "x"}, dists) == ({}, ["bs", "lr"])


WIDE = {"learning_rate": FloatDistribution(1e-5, 1e-2, log=True), "effective_batch_size": CategoricalDistribution([8, 16, 32])}


def source_study(url: str, name: str, rows: list[tuple]) -> optuna.Study:
    """A study as SweepOptunaSearch leaves it: numbered trials, COMPLETE / PRUNED / FAIL."""
    study = optuna.create_study(study_name=name, storage=optuna_storage(url), direction="minimize")
    for number, (state, value, params) in enumerate(rows, start=1):
        study.add_trial(create_trial(
            state=state, value=value, params=params, distributions={k: WIDE[k] for k in params},
            user_attrs={NUMBER_ATTR: number}, intermediate_values={64: 3.0 + number, 128: 2.0 + number}))
    return study


ROWS = [
    (TrialState.COMPLETE, 1.5, {"learning_rate": 1e-4, "effective_batch_size": 8}),
    (TrialState.COMPLETE, 1.2, {"learning_rate": 5e-3, "effective_batch_size": 16}),  # lr outside the new space
    (TrialState.PRUNED, None, {"learning_rate": 2e-4, "effective_batch_size": 32}),  # bs outside the new space
    (TrialState.COMPLETE, 1.9, {"learning_rate": 5e-3, "effective_batch_size": 32}),  # nothing left: skipped
    (TrialState.FAIL, None, {"learning_rate": 3e-4, "effective_batch_size": 8}),  # failed: not history
]


def test_seed_trials_keeps_in_space_params_with_the_new_distributions_and_is_idempotent(sqlite_url: str):
    src = source_study(sqlite_url, "src", ROWS)
    new = {"learning_rate": FloatDistribution(1e-5, 1e-3, log=True), "effective_batch_size": CategoricalDistribution([8, 16])}
    target = optuna.create_study(study_name="dst", storage=optuna_storage(sqlite_url), direction="minimize")
    report = ws.seed_trials(target, ws.finished_trials(src, own_only=True), new, source="abc")
    assert (report.added, report.skipped) == (3, 1)
    assert report.dropped == {"learning_rate": 2, "effective_batch_size": 2}
    seeded = target.get_trials()
    assert [t.params for t in seeded] == [{"learning_rate": 1e-4, "effective_batch_size": 8},
                                          {"effective_batch_size": 16}, {"learning_rate": 2e-4}]
    assert [t.state for t in seeded] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert [t.value for t in seeded] == [1.5, 1.2, None]
    assert seeded[2].intermediate_values == {64: 6.0, 128: 5.0}
    assert all(t.distributions[k] == new[k] for t in seeded for k in t.params)
    assert [(t.user_attrs[ws.SEEDED_FROM_ATTR], t.user_attrs[ws.SOURCE_NUMBER_ATTR]) for t in seeded] == [
        ("abc", 1), ("abc", 2), ("abc", 3)]
    again = ws.seed_trials(target, ws.finished_trials(src, own_only=True), new, source="abc")
    assert (again.added, again.already) == (0, 3) and len(target.get_trials()) == 3
    # TPE samples the new space with the seeded trials as its history
    trial = target.ask(fixed_distributions=new)
    assert 1e-5 <= trial.params["learning_rate"] <= 1e-3 and trial.params["effective_batch_size"] in (8, 16)


def test_only_a_sweeps_own_trials_are_its_history(sqlite_url: str):
    src = source_study(sqlite_url, "src", ROWS[:1])
    src.add_trial(create_trial(value=0.5, params={"learning_rate": 1e-4}, distributions={"learning_rate": WIDE["learning_rate"]},
                               user_attrs={ws.SEEDED_FROM_ATTR: "older", ws.SOURCE_NUMBER_ATTR: 1}))
    assert [t.value for t in ws.finished_trials(src, own_only=True)] == [1.5]
    assert [t.value for t in ws.finished_trials(src, own_only=False)] == [1.5, 0.5]


# ---- resolving search.warm_start, and the whole warm start ------------------------------------


class HistoryPruner:
    """Stands in for the learned signal's pruner: takes history."""

    def __init__(self) -> None:
        self.history: dict[str, list] = {}

    def add_history(self, sweep_id: str, trials: list[dict]) -> None:
        self.history[sweep_id] = trials

    def history_summary(self) -> dict:
        return {"sweeps": len(self.history), "trials": sum(map(len, self.history.values()))}


def stored_sweep(engine, spec, *, state: str = "succeeded", fingerprint: str | None = "f" * 64,
                 trials: list[tuple] = ()) -> str:
    """A sweep in the store with trials (state, objective, config) and their curves, and its study."""
    with session_scope(engine) as s:
        sweep = repo.create_sweep(s, name=spec.name, spec=spec.to_stored(), fingerprint=fingerprint)
        for number, (tstate, objective, config) in enumerate(trials, start=1):
            t = repo.upsert_trial(s, sweep.id, number, state=tstate, objective=objective, config=config)
            repo.add_metric_points(s, t.id, curve(8 if tstate == "stopped" else 20))
        if state != "queued":
            repo.set_sweep_state(s, sweep.id, "running")
            repo.set_sweep_state(s, sweep.id, state)
        return sweep.id


SPACE = {"learning_rate": {"loguniform": [1.0e-5, 1.0e-3]}, "effective_batch_size": {"choice": [8, 16]}}
TRIALS = [("completed", 1.5, {"learning_rate": 1e-4, "effective_batch_size": 8}),
          ("completed", 1.2, {"learning_rate": 5e-4, "effective_batch_size": 16}),
          ("stopped", None, {"learning_rate": 9e-4, "effective_batch_size": 16})]


def with_study(url: str, sweep_id: str, trials=TRIALS) -> None:
    dists = {"learning_rate": FloatDistribution(1e-5, 1e-3, log=True), "effective_batch_size": CategoricalDistribution([8, 16])}
    study = optuna.create_study(study_name=f"sweepd-{sweep_id}", storage=optuna_storage(url), direction="minimize")
    for number, (state, objective, config) in enumerate(trials, start=1):
        study.add_trial(create_trial(
            state=TrialState.COMPLETE if state == "completed" else TrialState.PRUNED, value=objective,
            params=config, distributions=dists, user_attrs={NUMBER_ATTR: number},
            intermediate_values={64: 2.5}))


def test_previous_is_the_latest_succeeded_sweep_of_the_same_name_and_fingerprint(engine, data: Path):
    spec = make_spec(data, search={"space": SPACE})
    older = stored_sweep(engine, spec)
    newer = stored_sweep(engine, spec)
    stored_sweep(engine, spec, state="failed")
    stored_sweep(engine, spec, fingerprint="0" * 64)
    stored_sweep(engine, make_spec(data, name="other", search={"space": SPACE}))
    me = stored_sweep(engine, spec, state="queued")
    with session_scope(engine) as s:
        sweep = repo.get_sweep(s, me)
        assert ws.resolve(s, spec, sweep)[0] == newer
        assert repo.previous_sweep(s, name=spec.name, fingerprint="f" * 64, exclude=newer).id == older
        assert repo.previous_sweep(s, name=spec.name, fingerprint=None) is None
        assert ws.resolve(s, make_spec(data, search={"space": SPACE, "warm_start": "none"}), sweep) == (
            None, "warm start off (search.warm_start: none): cold start")
        assert ws.resolve(s, make_spec(data, search={"space": SPACE, "warm_start": older}), sweep)[0] == older
        sweep.fingerprint = "9" * 64
        source, why = ws.resolve(s, spec, sweep)
        assert source is None and why.startswith("no earlier succeeded sweep named 'api-test' with the same fingerprint 999999999999")


def test_an_explicit_sweep_must_exist_and_share_the_objective(engine, data: Path):
    spec = make_spec(data, search={"space": SPACE})
    other = stored_sweep(engine, make_spec(data, search={"space": SPACE}, objective={"metric": "train_loss"}))
    same = stored_sweep(engine, spec)
    with session_scope(engine) as s:
        assert ws.check_reference(s, spec) == []
        assert ws.check_reference(s, make_spec(data, search={"space": SPACE, "warm_start": same})) == []
        [(field, msg)] = ws.check_reference(s, make_spec(data, search={"space": SPACE, "warm_start": "nope"}))
        assert field == "search.warm_start" and "no sweep 'nope'" in msg
        [(field, msg)] = ws.check_reference(s, make_spec(data, search={"space": SPACE, "warm_start": other}))
        assert field == "search.warm_start" and "train_loss (min)" in msg and "eval_loss (min)" in msg


@pytest.mark.parametrize("bad", ["a b", "-x", "x" * 33, ""])
def test_warm_start_must_be_previous_none_or_a_sweep_id(data: Path, bad: str):
    with pytest.raises(SpecError) as err:
        make_spec(data, search={"space": SPACE, "warm_start": bad})
    assert [p for p, _ in err.value.errors] == ["search.warm_start"]


def test_warm_start_seeds_the_study_and_the_pruner_once_and_records_it(engine, sqlite_url: str, data: Path):
    spec = make_spec(data, search={"space": SPACE})
    source = stored_sweep(engine, spec, trials=TRIALS)
    with_study(sqlite_url, source)
    me = stored_sweep(engine, spec, state="queued")
    pruner = HistoryPruner()
    details = ws.warm_start(spec, sweep_id=me, db_url=sqlite_url, study_name=f"sweepd-{me}", pruner=pruner)
    assert details["source"] == source and details["trials_added"] == 3 and details["curves"] == 3
    assert details["message"] == f"warm start: 3 trials from sweep {source} added to the study; 3 curves to the pruner"
    assert details["pruner_history"] == {"sweeps": 1, "trials": 3}
    history = pruner.history[source]
    assert [h["objective"] for h in history] == [1.5, 1.2, None]
    assert len(history[0]["curve"]) == 20 and history[0]["curve"][0]["step"] == 0 and "grad_norm" in history[0]["curve"][0]

    study = optuna.load_study(study_name=f"sweepd-{me}", storage=optuna_storage(sqlite_url))
    assert study.user_attrs[ws.WARM_STARTED_ATTR] == source
    assert [(t.state, t.value) for t in study.trials] == [(TrialState.COMPLETE, 1.5), (TrialState.COMPLETE, 1.2),
                                                          (TrialState.PRUNED, None)]
    with session_scope(engine) as s:
        sweep = repo.get_sweep(s, me)
        assert sweep.warm_started_from == source and sweep.warm_start["trials_added"] == 3
        [event] = [e for e in repo.list_events(s, me) if e.kind == "info"]
        assert event.message == details["message"]

    # a fresh start again (a crash before Tune saved its state): nothing added twice, no second event
    again = ws.warm_start(spec, sweep_id=me, db_url=sqlite_url, study_name=f"sweepd-{me}", pruner=HistoryPruner())
    assert again["source"] == source and again["trials_added"] == 3
    assert len(optuna.load_study(study_name=f"sweepd-{me}", storage=optuna_storage(sqlite_url)).trials) == 3
    with session_scope(engine) as s:
        assert len([e for e in repo.list_events(s, me) if e.kind == "info"]) == 1


def test_a_narrower_space_drops_params_and_a_pruner_without_history_is_said(engine, sqlite_url: str, data: Path):
    spec = make_spec(data, search={"space": SPACE})
    source = stored_sweep(engine, spec, trials=TRIALS)
    with_study(sqlite_url, source)
    narrow = make_spec(data, search={"space": {"learning_rate": {"loguniform": [1.0e-5, 3.0e-4]},
                                               "effective_batch_size": {"choice": [16]}}, "warm_start": source})
    me = stored_sweep(engine, narrow, state="queued", fingerprint=None)
    details = ws.warm_start(narrow, sweep_id=me, db_url=sqlite_url, study_name=f"sweepd-{me}", pruner=object())
    assert details["trials_added"] == 3 and details["trials_skipped"] == 0
    assert details["params_dropped"] == {"effective_batch_size": 1, "learning_rate": 2}
    assert "dropped outside this space: effective_batch_size (1), learning_rate (2)" in details["message"]
    assert "the pruner (asha) takes no history: 3 curves not used" in details["message"]
    study = optuna.load_study(study_name=f"sweepd-{me}", storage=optuna_storage(sqlite_url))
    assert [t.params for t in study.trials] == [{"learning_rate": 1e-4}, {"effective_batch_size": 16},
                                                {"effective_batch_size": 16}]


def test_no_previous_sweep_is_a_cold_start_said_plainly(engine, sqlite_url: str, data: Path):
    spec = make_spec(data, search={"space": SPACE})
    me = stored_sweep(engine, spec, state="queued")
    details = ws.warm_start(spec, sweep_id=me, db_url=sqlite_url, study_name=f"sweepd-{me}", pruner=HistoryPruner())
    assert details["source"] is None and details["trials_added"] == 0
    assert details["message"].startswith("warm start: none; no earlier succeeded sweep named 'api-test'")
    assert details["message"].endswith("cold start")
    with session_scope(engine) as s:
        assert repo.get_sweep(s, me).warm_started_from is None
        assert any(e.message == details["message"] for e in repo.list_events(s, me))


def test_grid_search_takes_no_trials_but_the_pruner_gets_the_curves(engine, sqlite_url: str, data: Path):
    spec = make_spec(data, search={"space": SPACE})
    source = stored_sweep(engine, spec, trials=TRIALS)
    with_study(sqlite_url, source)
    grid = make_spec(data, search={"algorithm": "grid", "space": {"learning_rate": {"choice": [1e-4, 5e-4]},
                                                                  "effective_batch_size": {"choice": [8, 16]}},
                                   "warm_start": source})
    me = stored_sweep(engine, grid, state="queued")
    pruner = HistoryPruner()
    details = ws.warm_start(grid, sweep_id=me, db_url=sqlite_url, study_name=f"sweepd-{me}", pruner=pruner)
    assert details["trials_added"] == 0 and details["curves"] == 3 and "grid search runs its own grid" in details["message"]
    assert len(pruner.history[source]) == 3


# ---- an extension's study ---------------------------------------------------------------------


def test_an_extension_keeps_the_study_unless_the_space_no_longer_fits_it(engine, sqlite_url: str, data: Path):
    spec = make_spec(data, search={"space": SPACE})
    me = stored_sweep(engine, spec, trials=TRIALS)
    with_study(sqlite_url, me)
    name = f"sweepd-{me}"
    ranges = make_spec(data, search={"space": {**SPACE, "learning_rate": {"loguniform": [1.0e-4, 1.0e-3]}}})
    assert ws.prepare_study(ranges, sweep_id=me, db_url=sqlite_url, segment=1, study_name=name) == name
    assert ws.prepare_study(spec, sweep_id=me, db_url=sqlite_url, segment=0, study_name=name) == name

    choices = make_spec(data, search={"space": {**SPACE, "effective_batch_size": {"choice": [16]}}})
    new = ws.prepare_study(choices, sweep_id=me, db_url=sqlite_url, segment=2, study_name=name)
    assert new == f"sweepd-{me}-x2"
    copy = optuna.load_study(study_name=new, storage=optuna_storage(sqlite_url))
    assert [t.params for t in copy.trials] == [{"learning_rate": 1e-4}, {"learning_rate": 5e-4, "effective_batch_size": 16},
                                               {"learning_rate": 9e-4, "effective_batch_size": 16}]
    assert [t.user_attrs[NUMBER_ATTR] for t in copy.trials] == [1, 2, 3]  # still the sweep's own trials
    assert ws.prepare_study(choices, sweep_id=me, db_url=sqlite_url, segment=2, study_name=new) == new  # idempotent
    assert len(optuna.load_study(study_name=new, storage=optuna_storage(sqlite_url)).trials) == 3
    with session_scope(engine) as s:
        assert repo.get_sweep(s, me).optuna_study_name == new
        assert any("does not fit study" in e.message for e in repo.list_events(s, me))


@pytest.mark.parametrize("signal, taken", [("learned", 3), ("loss", None)])
def test_the_real_pruner_takes_the_curves_only_for_the_learned_signal(engine, sqlite_url: str, data: Path,
                                                                      signal: str, taken: int | None):
    from sweepd.engine.tune_scheduler import EarlySignalScheduler

    spec = make_spec(data, search={"space": SPACE}, pruner={"type": "asha", "signal": signal, "grace": 64})
    source = stored_sweep(engine, spec, trials=TRIALS)
    with_study(sqlite_url, source)
    me = stored_sweep(engine, spec, state="queued")
    pruner = EarlySignalScheduler(spec.pruner_config(), metric="eval_loss", mode="min").pruner
    details = ws.warm_start(spec, sweep_id=me, db_url=sqlite_url, study_name=f"sweepd-{me}", pruner=pruner)
    assert details["trials_added"] == 3
    if taken:
        assert details["curves"] == 3 and details["message"].endswith("; 3 curves to the pruner")
        assert pruner.history_summary() == {"sweeps": 1, "trials": 2, "curves": 3}  # 2 with an objective
        assert details["pruner_history"] == pruner.history_summary()
        assert pruner.state_dict()["history"][source]  # kept in the state file: a resume keeps it
    else:
        assert details["curves"] == 0
        assert details["message"].endswith("; the pruner (asha on loss) takes no history: 3 curves not used")
