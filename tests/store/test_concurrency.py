"""Several writers at once (a controller's recorder, heartbeats, the API reading) must neither
fail with "database is locked" on SQLite nor lose or duplicate rows."""

from __future__ import annotations

import threading

from sweepd.store import repo, session_scope


def test_concurrent_writers_and_readers(engine):
    with session_scope(engine) as s:
        sweep_id = repo.create_sweep(s, name="c", spec={}).id
    errors: list[BaseException] = []
    writers, rounds, per_round = 4, 15, 20

    def write(number: int) -> None:
        try:
            for r in range(rounds):
                with session_scope(engine) as s:
                    trial = repo.upsert_trial(s, sweep_id, number, state="running", samples=r)
                    steps = range(r * per_round - 5 if r else 0, (r + 1) * per_round)  # overlaps
                    repo.add_metric_points(s, trial.id, [{"step": i, "loss": 1.0} for i in steps])
                    repo.heartbeat(s, sweep_id, controller=f"writer-{number}")
                    repo.add_event(s, sweep_id, "info", f"{number}/{r}", trial_id=trial.id)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def read() -> None:
        try:
            for _ in range(rounds * 2):
                with session_scope(engine) as s:
                    repo.list_sweeps(s)
                    for t in repo.list_trials(s, sweep_id):
                        repo.read_metrics(s, t.id, max_points=10)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    with session_scope(engine) as s:
        trials = repo.list_trials(s, sweep_id)
        assert len(trials) == writers
        for t in trials:
            assert repo.count_metric_points(s, t.id) == rounds * per_round
        assert len(repo.list_events(s, sweep_id, kind="info")) == writers * rounds
