"""Resume from the store (sweepd/engine/store_resume.py): a sweep whose Ray Tune experiment is gone
goes on from what its database holds.

The sweep test runs the frozen databases' sweep (tests/data/frozen/make_frozen.py) with this
checkout's real driver, SIGKILLs it with 3 trials finished and the 4th running, deletes the
sweep's Tune experiment folder, and resumes it with `python -m sweepd.service.driver ID`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sweepd.engine import store_resume
from sweepd.engine.recorder import DecisionWriter
from sweepd.engine.tune_scheduler import EarlySignalScheduler
from sweepd.pruners import make_pruner
from sweepd.store import repo, session_scope
from tests.data.frozen.make_frozen import FINISHED, KILL_AT, MAKE_DATA, SPEC, run_and_kill
from tests.data.frozen.resumed import check_interrupted, check_resumed, read_store
from trainer.synthetic import make_data

REPO = Path(__file__).resolve().parents[2]
PLANNED = SPEC["search"]["num_trials"]


def add_trials(engine, sweep_id: str, states: dict[int, str]) -> None:
    with session_scope(engine) as s:
        for number, state in states.items():
            repo.upsert_trial(s, sweep_id, number, state=state, config={"learning_rate": number / 1000})


def new_sweep(engine) -> str:
    with session_scope(engine) as s:
        return repo.create_sweep(s, name="r", spec={"name": "r"}).id


def test_plan_reads_what_the_store_holds(engine, sqlite_url):
    sweep_id = new_sweep(engine)
    assert store_resume.plan(sqlite_url, sweep_id, 1) is None  # nothing held: a fresh start
    add_trials(engine, sweep_id, {1: "completed", 2: "stopped", 3: "running", 4: "completed", 5: "running"})
    plan = store_resume.plan(sqlite_url, sweep_id, 1)
    assert (plan.finished, plan.last, plan.first_number) == ([1, 2, 4], 5, 4)  # 2 reruns, then 6, 7 ...
    assert plan.reruns == {3: {"learning_rate": 0.003}, 5: {"learning_rate": 0.005}}
    assert "trial 3, trial 5 run again" in plan.describe() and "numbered from 6" in plan.describe()


def test_plan_leaves_an_extension_alone_unless_a_trial_was_left_running(engine, sqlite_url):
    sweep_id = new_sweep(engine)
    add_trials(engine, sweep_id, {1: "completed", 2: "failed"})
    assert store_resume.plan(sqlite_url, sweep_id, 3) is None  # an extension's first start: numbered from 3
    add_trials(engine, sweep_id, {3: "completed", 4: "running"})  # the extension's driver died
    plan = store_resume.plan(sqlite_url, sweep_id, 5)
    assert (plan.finished, list(plan.reruns), plan.first_number) == ([1, 2, 3], [4], 4)


def test_the_pruner_gets_the_finished_trials_rungs_back_from_their_stored_decisions(engine, sqlite_url, tmp_path):
    sweep_id = new_sweep(engine)
    config = {"type": "asha", "signal": "learned", "grace": 16, "reduction_factor": 2, "max_t": 80, "window": 3}
    pruner, write = make_pruner(config), DecisionWriter(sqlite_url, sweep_id)
    curves = {1: 0.9, 2: 0.5, 3: 0.99, 4: 0.7}  # how fast each trial's loss falls
    for number, rate in curves.items():
        steps = 4 if number == 4 else 10  # trial 4: the driver died after its first rungs
        for step in range(1, steps + 1):
            for decision in pruner.on_result_all(str(number), {"step": step, "samples": 8 * step,
                                                               "loss": 3 * rate**step, "grad_norm": 1 + rate}):
                write(decision)
        if number != 4:
            pruner.on_trial_complete(str(number), 2 * rate)  # a stopped trial's value is not taken
    with session_scope(engine) as s:
        for number in (1, 2, 3):
            stopped = str(number) in pruner.state_dict()["stopped"]
            repo.upsert_trial(s, sweep_id, number, state="stopped" if stopped else "completed",
                              objective=None if stopped else 2 * curves[number])
        repo.upsert_trial(s, sweep_id, 4, state="running")
    was = pruner.state_dict()
    assert was["stopped"] and "4" in was["rungs"][0]  # something to rebuild: a stop, trial 4's rung

    scheduler = EarlySignalScheduler(config, metric="eval_loss", mode="min", state_path=tmp_path / "pruner.json")
    used = store_resume.rebuild_pruner(scheduler, sqlite_url, sweep_id, [1, 2, 3])
    assert used == sum(len(rung) - ("4" in rung) for rung in was["rungs"])  # a decision per trial and rung
    now = json.loads((tmp_path / "pruner.json").read_text())
    assert now == scheduler.pruner.state_dict()
    assert now["rungs"] == [{t: v for t, v in rung.items() if t != "4"} for rung in was["rungs"]]
    assert (now["finals"], now["stopped"], now["windows"]) == (was["finals"], was["stopped"], {})


@pytest.fixture
def resume_env(tmp_path):
    """(env for the driver, its database URL, the spec's file) on the test's own data and home."""
    data = tmp_path / "data"
    make_data(data, **MAKE_DATA)
    spec = json.loads(json.dumps(SPEC))
    spec["data"]["train"] = [{"path": str(data / "train.jsonl")}]
    spec["data"]["eval"] = [{"path": str(data / "eval.jsonl")}]
    spec_path = tmp_path / "sweep.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    home = tmp_path / "home"
    db_url = f"sqlite:///{home / 'sweepd.db'}"
    env = dict(os.environ, SWEEPD_HOME=str(home), SWEEPD_DATABASE_URL=db_url, SWEEPD_DATA_ROOTS=str(data),
               DS_ACCELERATOR="cpu", PYTHONUNBUFFERED="1")
    return env, db_url, spec_path


@pytest.mark.slow  # a real sweep, killed and resumed (about a minute and a half)
def test_a_sweep_whose_tune_experiment_was_deleted_resumes_from_the_store(resume_env, tmp_path):
    env, db_url, spec_path = resume_env
    home = Path(env["SWEEPD_HOME"])
    run_and_kill(db_url, home, spec_path, tmp_path / "first.log", data_dir=Path(env["SWEEPD_DATA_ROOTS"]),
                 judged=False)
    before = read_store(db_url)
    check_interrupted(before, finished=FINISHED, running=KILL_AT)
    sweep_id = before["sweep"]["id"]
    experiment = home / "ray" / f"sweep-{sweep_id}"
    pruner_file = json.loads((experiment / "pruner_state.json").read_text())
    shutil.rmtree(experiment)  # gone: nothing for Tune to restore

    proc = subprocess.run([sys.executable, "-m", "sweepd.service.driver", sweep_id], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resumed from the store" in proc.stderr and "resuming sweep" not in proc.stderr
    after = read_store(db_url)
    check_resumed(after, before, planned=PLANNED, rerun=KILL_AT)

    # the same params train the same way (the trainer is seeded): the rerun repeats its first
    # attempt's steps, and the pruner, its rungs rebuilt, judges it as it did then
    again, was = after["trials"][KILL_AT], before["trials"][KILL_AT]
    assert again["superseded_losses"] == was["losses"] == again["losses"][:len(was["losses"])]
    first_attempt = before["decisions"].get(KILL_AT, [])
    judged = after["decisions"][KILL_AT][len(first_attempt):]
    assert judged[:len(first_attempt)] == first_attempt

    # the pruner's rungs rebuilt from the store are the ones the killed driver's pruner held
    rebuilt = json.loads((experiment / "pruner_state.json").read_text())
    kept = {str(n) for n in range(1, FINISHED + 1)}
    for was, now in zip(pruner_file["rungs"], rebuilt["rungs"]):
        assert {t: v for t, v in now.items() if t in kept} == {t: v for t, v in was.items() if t in kept}
    assert {t: v for t, v in rebuilt["finals"].items() if t in kept} == pruner_file["finals"]
    assert set(rebuilt["stopped"]) & kept == set(pruner_file["stopped"])
