"""Budget-first sweeps (engine/budget.py): the account against figures worked out by hand, the gate
on a real SQLite store, and the searcher driven through whole sweeps, a driver crash included:
the samples spent are the store's, each trial once, and never more than the budget."""

from __future__ import annotations

import pickle
from collections import deque

import pytest

from sweepd.engine import budget as budget_mod
from sweepd.engine.budget import (
    FINISHED,
    LAUNCH,
    WAIT,
    BudgetGate,
    BudgetPlan,
    TrialUse,
    account,
    describe_budget,
)
from sweepd.protocol import FINAL_MARKER, NUMBER_KEY, REPLAYED_KEY
from sweepd.store import repo, session_scope

FULL = 1024  # every trial's full budget in samples (max_samples 1024 at batch 8 or 16)


def plan(total: float = 10_000, unit: str = "samples", cap: int = 1000, gpus: float = 0) -> BudgetPlan:
    return BudgetPlan(unit=unit, total=total, cap=cap, gpus_per_trial=gpus,
                      full_by_batch={8: FULL, 16: FULL}, worst_full=FULL)


# ---- the account, by hand ---------------------------------------------------------------------


def test_spent_is_every_row_once_and_running_trials_are_reserved_at_full_cost():
    rows = [TrialUse(1, "completed", 1024, 10.0), TrialUse(2, "stopped", 256, 2.0),
            TrialUse(3, "failed", 40, 0.5), TrialUse(4, "running", 300, 3.0, {"effective_batch_size": 16})]
    acc = account(plan(3000), rows)
    assert acc.spent == 1024 + 256 + 40 + 300 == 1620
    assert acc.committed == FULL - 300  # trial 4 will see 724 more samples at most
    assert acc.free == 3000 - 1620 - 724 == 656
    assert acc.launched == 4 and acc.live == 1
    assert acc.verdict() == WAIT  # 1,024 does not fit in 656, and trial 4 may still be stopped early
    assert account(plan(3000), rows[:3]).verdict() == LAUNCH  # 1,680 left: a full trial fits
    done = rows[:3] + [TrialUse(4, "stopped", 512, 5.0)]
    assert account(plan(2800), done).verdict() == FINISHED  # 968 left, nothing running: the end


def test_a_suggested_trial_not_in_the_store_yet_is_reserved_and_a_left_behind_row_is_not_waited_for():
    rows = [TrialUse(1, "stopped", 256, 2.0), TrialUse(2, "running", 100, 1.0)]  # 2: left by a crash
    acc = account(plan(3000), rows, live={3: {"effective_batch_size": 8}})
    assert acc.spent == 356 and acc.committed == FULL  # row 2 counts at what it spent
    assert acc.launched == 3 and acc.live == 1
    # suggested again after the resume, trial 2 reuses its row: reserved once, at full cost
    again = account(plan(3000), rows, live={2: {}, 3: {}})
    assert again.committed == (FULL - 100) + FULL and again.live == 2
    # the searcher runs nothing: row 2 is not waited for
    assert account(plan(1300), rows, live={}).verdict() == FINISHED
    assert account(plan(1400), rows, live={}).verdict() == LAUNCH


def test_a_replayed_trial_counts_at_its_stored_samples_not_again():
    rows = [TrialUse(1, "stopped", 256, 2.0)]
    acc = account(plan(2000), rows, live={1: {}})  # Tune replays trial 1 after a resume
    assert (acc.spent, acc.committed, acc.launched, acc.live) == (256, 0, 1, 0)


def test_gpu_hours_are_seconds_times_gpus_and_running_trials_are_projected_at_their_own_rate():
    p = plan(total=1.0, unit="gpu_hours", gpus=2)  # 2 GPUs a trial
    rows = [TrialUse(1, "completed", 1024, 900.0), TrialUse(2, "running", 256, 360.0)]
    acc = account(p, rows)
    assert acc.spent == pytest.approx((900 + 360) * 2 / 3600)  # 0.7 GPU hours
    assert acc.committed == pytest.approx(360 / 256 * FULL * 2 / 3600 - 360 * 2 / 3600)  # trial 2 at 1.41 s/sample
    assert acc.next_trial_cost() == pytest.approx(1260 / 1280 * FULL * 2 / 3600)  # the sweep's rate
    assert acc.verdict() == WAIT
    # before any trial has reported there is no rate: trials launch (the first wave)
    assert account(p, [], live={1: {}}).verdict() == LAUNCH


def test_the_status_projects_more_trials_at_the_finished_trials_mean_cost():
    rows = [TrialUse(1, "completed", 1024, 10.0), TrialUse(2, "stopped", 256, 2.0), TrialUse(3, "stopped", 256, 2.0),
            TrialUse(4, "running", 128, 1.0)]
    st = account(plan(5000), rows).status(active=True, running_for=100.0)
    assert st == {"unit": "samples", "total": 5000, "spent": 1664, "committed": 896, "remaining": 3336,
                  "fraction_spent": 0.3328, "trials_launched": 4, "trials_cap": 1000,
                  "cost_per_trial": 512,  # (1024 + 256 + 256) / 3
                  "projected_trials": 4,  # (5000 - 1664 - 896) / 512 = 4.8
                  "eta_seconds": 200.5,  # 3336 left at 16.64 samples a second
                  "exhausted": False}
    end = account(plan(5000), rows[:3]).status(active=False)
    assert (end["committed"], end["projected_trials"], end["eta_seconds"], end["exhausted"]) == (0, 0, None, True)
    assert describe_budget(st) == ("budget: 1,664 of 5,000 samples spent (33.3%) by 4 trials, 3,336 left; "
                                   "896 more committed to running trials; ~4 more trials at 512 each, spent in ~3m 20s")


def test_the_trial_cap_still_caps():
    rows = [TrialUse(n, "stopped", 128, 1.0) for n in (1, 2)]
    assert account(plan(10_000, cap=2), rows).verdict() == FINISHED
    assert account(plan(10_000, cap=2), rows[:1] + [TrialUse(2, "running", 10, 0.1)]).verdict() == WAIT


def test_the_plan_of_a_spec(tmp_path, monkeypatch):
    from sweepd.spec import Capacity, parse_spec
    from tests.sweepd.test_spec import LINE, good

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("\n".join([LINE] * 40) + "\n")
    (tmp_path / "data" / "eval.jsonl").write_text(LINE + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEPD_DATA_ROOTS", str(tmp_path))
    from sweepd.settings import get_settings

    get_settings.cache_clear()
    raw = good()
    raw["search"].pop("num_trials")
    raw["search"]["compute_budget"] = 5000
    raw["budget"] = {"max_samples": 1000}  # 1000 at batch 8, 992 at batch 16
    spec = parse_spec(raw, capacity=Capacity(cpus=4, gpus=0))
    get_settings.cache_clear()
    p = BudgetPlan.of(spec)
    assert (p.unit, p.total, p.cap, p.full_by_batch, p.worst_full) == ("samples", 5000, 1000, {8: 1000, 16: 992}, 1000)
    assert p.full_samples({"effective_batch_size": 16}) == 992 and p.full_samples({}) == 1000


# ---- the gate on the store ----------------------------------------------------------------------


@pytest.fixture
def sweep_id(engine):
    with session_scope(engine) as s:
        return repo.create_sweep(s, name="budget", spec={"name": "budget"}).id


def write(engine, sweep_id, number, **fields):
    with session_scope(engine) as s:
        repo.upsert_trial(s, sweep_id, number, **fields)


def test_the_gate_reads_the_store_and_survives_a_pickle(engine, sqlite_url, sweep_id, monkeypatch):
    monkeypatch.setattr(budget_mod, "WAIT_RECHECK_S", 0.0)
    gate = BudgetGate(sqlite_url, sweep_id, plan(2500))
    assert gate.verdict({}) == LAUNCH
    write(engine, sweep_id, 1, state="stopped", samples=256, seconds=1.0, config={"effective_batch_size": 8})
    write(engine, sweep_id, 2, state="running", samples=64, seconds=0.5, config={"effective_batch_size": 8})
    assert gate.verdict({2: {"effective_batch_size": 8}}) == LAUNCH  # 2500 - 256 - 1024 = 1220 free
    again = pickle.loads(pickle.dumps(gate))
    assert again._engine is None and again.plan == gate.plan
    assert again.verdict({2: {}, 3: {}}) == WAIT  # 196 free, two running
    write(engine, sweep_id, 2, state="stopped", samples=128)
    write(engine, sweep_id, 3, state="completed", samples=FULL)
    assert again.verdict({}) == LAUNCH  # 2500 - 1408 = 1092 left: 1,024 fits
    write(engine, sweep_id, 4, state="stopped", samples=100)
    assert again.verdict({}) == FINISHED  # 992 left, nothing running


def test_a_finished_budget_is_announced_once(engine, sqlite_url, sweep_id):
    write(engine, sweep_id, 1, state="completed", samples=FULL, seconds=1.0)
    gate = BudgetGate(sqlite_url, sweep_id, plan(1500))
    assert gate.verdict({}) == FINISHED and gate.verdict({}) == FINISHED
    with session_scope(engine) as s:
        events = [e for e in repo.list_events(s, sweep_id) if e.kind == "info"]
    assert [e.message for e in events] == [
        "compute budget: 1,024 of 1,500 samples spent by 1 trials; 476 left and the next trial "
        "(1,024 samples at full length) does not fit: no more trials"]
    assert events[0].payload["budget"]["spent"] == FULL


# ---- the searcher through whole sweeps ----------------------------------------------------------

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402

from sweepd.engine.search import SweepOptunaSearch, make_sampler, optuna_storage  # noqa: E402


def outcome(number: int, prune: bool) -> int:
    """Samples a trial ends at: the pruner stops two trials in three at the first rung (256)."""
    return 256 if prune and number % 3 else FULL


class FakeTune:
    """Tune's loop in miniature: fills free slots from the searcher, ends the oldest running trial
    each round, and writes the store as the recorder does."""

    def __init__(self, searcher, engine, sweep_id, concurrency=2, prune=True):
        self.s, self.engine, self.sweep_id = searcher, engine, sweep_id
        self.concurrency, self.prune = concurrency, prune
        self.running: deque[tuple[str, int]] = deque()
        self.finished = False
        self.ids = 0

    def fill(self) -> None:
        while not self.finished and len(self.running) < self.concurrency:
            self.ids += 1
            tid = f"t{self.ids}"
            config = self.s.suggest(tid)
            if config == Searcher.FINISHED:
                self.finished = True
            elif config is None:
                return
            else:
                number = config[NUMBER_KEY]
                write(self.engine, self.sweep_id, number, state="running", config=config, samples=0)
                self.running.append((tid, number))

    def progress(self, tid: str, number: int, samples: int) -> None:
        write(self.engine, self.sweep_id, number, samples=samples, seconds=samples / 100)
        self.s.on_trial_result(tid, {"loss": 1.0, "samples": samples})

    def end_oldest(self) -> None:
        tid, number = self.running.popleft()
        end = outcome(number, self.prune)
        self.progress(tid, number, end)
        if end == FULL:
            write(self.engine, self.sweep_id, number, state="completed")
            self.s.on_trial_complete(tid, {"samples": end, "eval_loss": 1.0 / number, FINAL_MARKER: "completed"})
        else:
            write(self.engine, self.sweep_id, number, state="stopped")
            self.s.on_trial_complete(tid, {"samples": end})

    def run(self, max_rounds: int = 10_000) -> None:
        for _ in range(max_rounds):
            self.fill()
            if not self.running:
                assert self.finished
                return
            self.end_oldest()
        raise AssertionError("the sweep never ended")


def make_searcher(url: str, sweep_id: str, total: float) -> SweepOptunaSearch:
    return SweepOptunaSearch(space={"effective_batch_size": tune.choice([8, 16])},
                             sampler=make_sampler("random", 0), storage=optuna_storage(url),
                             study_name=f"sweepd-{sweep_id}", metric="eval_loss", mode="min",
                             budget=BudgetGate(url, sweep_id, plan(total)))


def stored(engine, sweep_id) -> dict[int, tuple[str, int]]:
    with session_scope(engine) as s:
        return {t.number: (t.state, t.samples) for t in repo.list_trials(s, sweep_id)}


@pytest.fixture(autouse=True)
def _no_recheck_delay(monkeypatch):
    monkeypatch.setattr(budget_mod, "WAIT_RECHECK_S", 0.0)


def test_without_pruning_the_budget_buys_whole_trials(engine, sqlite_url, sweep_id):
    FakeTune(make_searcher(sqlite_url, sweep_id, 10_000), engine, sweep_id, prune=False).run()
    trials = stored(engine, sweep_id)
    assert len(trials) == 9 and all(t == ("completed", FULL) for t in trials.values())  # 9 x 1,024 <= 10,000


def test_every_sample_the_pruner_saves_buys_more_configs(engine, sqlite_url, sweep_id):
    FakeTune(make_searcher(sqlite_url, sweep_id, 10_000), engine, sweep_id, prune=True).run()
    trials = stored(engine, sweep_id)
    spent = sum(samples for _, samples in trials.values())
    # two trials in three stop at a quarter of their budget: twice the 9 configs of no pruning
    assert len(trials) == 18 and spent == 6 * FULL + 12 * 256 == 9216
    assert 10_000 - FULL < spent <= 10_000  # never over, and less than one full trial left
    assert sorted(trials) == list(range(1, len(trials) + 1))


@pytest.mark.parametrize("snapshot", ["consistent", "stale"])
def test_a_driver_crash_and_a_resume_count_every_trial_once(engine, sqlite_url, sweep_id, tmp_path, snapshot):
    """Tune saves its state (the searcher's with it) with trials A and B running; then A ends and
    (stale) a trial C starts; the driver dies with B (and C) part-way. The resumed sweep replays A
    from the store, reruns B from the start and suggests C's number again: the store counts each
    trial once, at its own samples, and the end is within the budget."""
    first = make_searcher(sqlite_url, sweep_id, 10_000)
    tune1 = FakeTune(first, engine, sweep_id)
    for _ in range(6):
        tune1.fill()
        tune1.end_oldest()
    tune1.fill()
    state = tmp_path / "searcher.pkl"
    first.save(str(state))
    snap_running = list(tune1.running)
    tune1.end_oldest()  # A ends after the snapshot
    if snapshot == "stale":
        tune1.fill()  # C starts after the snapshot
    for tid, number in tune1.running:
        tune1.progress(tid, number, 512)  # part-way when the driver is killed
    before = stored(engine, sweep_id)
    assert sum(state_ == "running" for state_, _ in before.values()) == (2 if snapshot == "stale" else 1)

    second = make_searcher(sqlite_url, sweep_id, 10_000)
    second.restore(str(state))
    tune2 = FakeTune(second, engine, sweep_id)
    tune2.ids = 1000
    for tid, number in snap_running:  # Tune reruns the trials its state holds as running
        if before[number][0] in ("completed", "stopped"):  # finished in the store: replayed
            second.on_trial_complete(tid, {REPLAYED_KEY: True})
        else:
            write(engine, sweep_id, number, samples=0)  # rerun from the start
            tune2.running.append((tid, number))
    tune2.run()

    trials = stored(engine, sweep_id)
    assert sorted(trials) == list(range(1, len(trials) + 1))  # one row per number
    for number, (state_, samples) in trials.items():
        assert samples == outcome(number, True), number  # each trial's own samples, once
        assert state_ == ("completed" if samples == FULL else "stopped")
    spent = sum(samples for _, samples in trials.values())
    assert 10_000 - FULL < spent <= 10_000
    for number, row in before.items():  # what had ended before the crash is unchanged
        if row[0] != "running":
            assert trials[number] == row
