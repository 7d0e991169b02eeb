"""Warm start and extend, end to end with the real CLI, Ray Tune, Optuna and builtin:tiny: a sweep,
then a second one of the same spec (warm-started from the first: its study holds the first's
finished trials and its own, and an event says so), then the first extended by 2 trials (the same
sweep and study go on in a new Tune run, numbering on, the pruner's state file read back)."""

import json
from contextlib import closing
from pathlib import Path

from tests.e2e.conftest import db, demo_spec, sweepd

N = 3
TINY = {"search": {"num_trials": N, "max_concurrent": 2}, "budget": {"max_samples": 512},
        "pruner": {"grace": 128}}


def study_trials(env, sweep_id: str) -> list[tuple[str, dict]]:
    """(state, user attributes) of each trial in the sweep's Optuna study, in order."""
    with closing(db(env)) as conn:
        [name] = conn.execute("SELECT optuna_study_name FROM sweepd_sweeps WHERE id = ?", (sweep_id,)).fetchone()
        rows = conn.execute(
            "SELECT t.trial_id, t.state FROM trials t JOIN studies s ON s.study_id = t.study_id "
            "WHERE s.study_name = ? ORDER BY t.number", (name,)).fetchall()
        out = []
        for trial_id, state in rows:
            attrs = dict(conn.execute("SELECT key, value_json FROM trial_user_attributes WHERE trial_id = ?",
                                      (trial_id,)).fetchall())
            out.append((state, {k: json.loads(v) for k, v in attrs.items()}))
        return out


def test_a_second_sweep_starts_from_the_first_and_the_first_can_be_extended(sweep_env, tmp_path):
    env, data = sweep_env
    spec = demo_spec(data, tmp_path / "tiny.yaml", **TINY)

    first = sweepd("run", str(spec), "--out", str(tmp_path / "first.json"), env=env, timeout=400)
    assert first.returncode == 0, first.stderr[-4000:]
    a = json.loads((tmp_path / "first.json").read_text())
    assert a["state"] == "succeeded" and len(a["trials"]) == N
    finished_a = [t for t in a["trials"] if t["state"] in ("completed", "stopped")]

    second = sweepd("run", str(spec), "--out", str(tmp_path / "second.json"), env=env, timeout=400)
    assert second.returncode == 0, second.stderr[-4000:]
    b = json.loads((tmp_path / "second.json").read_text())
    assert b["state"] == "succeeded" and b["sweep_id"] != a["sweep_id"] and len(b["trials"]) == N

    with closing(db(env)) as conn:
        fa, fb = (conn.execute("SELECT fingerprint FROM sweepd_sweeps WHERE id = ?", (i,)).fetchone()[0]
                  for i in (a["sweep_id"], b["sweep_id"]))
        assert fa and fa == fb
        source, details = conn.execute("SELECT warm_started_from, warm_start FROM sweepd_sweeps WHERE id = ?",
                                       (b["sweep_id"],)).fetchone()
        messages = [m for (m,) in conn.execute("SELECT message FROM sweepd_events WHERE sweep_id = ?", (b["sweep_id"],))]
    assert source == a["sweep_id"]
    assert json.loads(details)["trials_added"] == len(finished_a)
    assert any(m.startswith(f"warm start: {len(finished_a)} trials from sweep {a['sweep_id']} added to the study")
               for m in messages), messages
    trials_b = study_trials(env, b["sweep_id"])
    seeded = [attrs for _, attrs in trials_b if attrs.get("sweepd_seeded_from") == a["sweep_id"]]
    own = [attrs for _, attrs in trials_b if "sweepd_number" in attrs]
    assert len(seeded) == len(finished_a) and len(own) == N
    assert trials_b[:len(seeded)] == [t for t in trials_b if "sweepd_seeded_from" in t[1]]  # seeded before the first ask

    extended = sweepd("extend", a["sweep_id"], "--trials", "2", "--local", "--out", str(tmp_path / "extended.json"),
                      env=env, timeout=400)
    assert extended.returncode == 0, extended.stderr[-4000:]
    e = json.loads((tmp_path / "extended.json").read_text())
    assert e["sweep_id"] == a["sweep_id"] and e["state"] == "succeeded"
    assert sorted(t["number"] for t in e["trials"]) == list(range(1, N + 3))
    assert [t for t in e["trials"] if t["number"] <= N] == a["trials"]  # the first trials are not rerun
    trials_a = study_trials(env, a["sweep_id"])  # the same study, with the two new trials
    assert sorted(attrs["sweepd_number"] for _, attrs in trials_a if attrs.get("sweepd_number")) == list(range(1, N + 3))
    with closing(db(env)) as conn:
        name, extensions = conn.execute("SELECT optuna_study_name, extensions FROM sweepd_sweeps WHERE id = ?",
                                        (a["sweep_id"],)).fetchone()
        assert (name, extensions) == (f"sweepd-{a['sweep_id']}", 1)
        messages = [m for (m,) in conn.execute("SELECT message FROM sweepd_events WHERE sweep_id = ?", (a["sweep_id"],))]
    assert any(m.startswith("sweep extended by sweepd extend --local: +2 trials") for m in messages), messages
    home = Path(env["SWEEPD_HOME"]) / "ray"
    assert (home / f"sweep-{a['sweep_id']}" / "pruner_state.json").exists()
    assert (home / f"sweep-{a['sweep_id']}-x1").is_dir()
