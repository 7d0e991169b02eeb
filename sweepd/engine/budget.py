"""Budget-first sweeps: the account of ``search.compute_budget``, kept in the store.

A trial's cost is what it has trained, read from its row in the store:
- unit ``samples``: ``Trial.samples`` (samples seen);
- unit ``gpu_hours``: ``Trial.seconds`` x gpus_per_worker x workers_per_trial / 3600.

``spent`` is the sum over every trial of the sweep, whatever its state. The store holds one row
per trial number, and a trial's samples are its position (how far it got), so a trial counts
once however often it was run: after a driver crash and a resume, a finished trial is replayed
from the store (never retrained) and a trial cut short by the crash is counted where its rerun
ends. Work redone after a crash is not charged.

``committed`` is what the trials still running will spend on top, at their projected full cost
(samples: the trial's full budget at its batch size; GPU hours: that at its own seconds per
sample so far, or the sweep's). ``free = total - spent - committed``.

The stop (``BudgetGate``, asked by the searcher before each suggestion): a new trial is launched
only when its projected full cost (the largest any trial of the space can have) fits in ``free``.
So a samples budget is never overshot (spent <= total); and because running trials are reserved
at full cost, every sample a pruner saves is set free again and buys another config. When the
next trial does not fit, the searcher waits while trials are running (one may be stopped early
and free enough) and says FINISHED once none is. A finished sweep has less than one full trial's
cost left. A GPU-hours budget follows the same rule with projected costs: trials launch freely
until a rate (seconds per sample) is known, and the end may differ from the total by how far the
projection was off. ``num_trials`` stays a cap.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from sweepd.protocol import FINISHED_TRIAL_STATES
from sweepd.spec.budget import count_lines, full_budget

log = logging.getLogger(__name__)

LAUNCH, WAIT, FINISHED = "launch", "wait", "finished"
BATCH_KEYS = ("effective_batch_size", "hparams.effective_batch_size")
WAIT_RECHECK_S = 1.0  # while waiting, the store is read at most this often
# Trials the searcher holds as running but that have not reported for this long are not waited
# for (a safety net: Tune would otherwise ask forever for a trial that never comes).
STALE_LIVE_S = 1800.0


@dataclass(frozen=True)
class BudgetPlan:
    """A spec's compute budget, resolved: its unit and total, the trial cap, and what a trial costs
    at full length (samples, by batch size)."""

    unit: str  # "samples" or "gpu_hours"
    total: float
    cap: int  # num_trials
    gpus_per_trial: float
    full_by_batch: dict[int, float] = field(default_factory=dict)
    worst_full: float | None = None  # the largest full budget of any trial, in samples

    @classmethod
    def of(cls, spec) -> "BudgetPlan | None":
        """The plan of a ``SweepSpec`` (None without ``search.compute_budget``)."""
        cb = spec.search.compute_budget
        if cb is None:
            return None
        full = {}
        try:
            budgets = spec.budgets()
            # the train files are read only for an epochs budget (and then once per change)
            n_train = _train_lines(spec) if any(b.epochs is not None for b in budgets) else None
            for b in spec.batch_sizes():
                f = full_budget(budgets, b, "samples", n_train)
                if f is not None:
                    full[int(b)] = float(f)
            cap = spec.planned_trials
        except Exception:  # noqa: BLE001 - e.g. a grid over a non-choice domain: costs stay unknown
            cap = spec.search.num_trials
        res = spec.resources
        return cls(unit=cb.unit, total=float(cb.total), cap=int(cap),
                   gpus_per_trial=float(res.gpus_per_worker * res.workers_per_trial),
                   full_by_batch=full, worst_full=max(full.values()) if full else None)

    def full_samples(self, config: dict | None) -> float | None:
        """A trial's full budget in samples, from its batch size (unknown: the largest)."""
        for key in BATCH_KEYS:
            batch = (config or {}).get(key)
            if batch is not None and int(batch) in self.full_by_batch:
                return self.full_by_batch[int(batch)]
        return self.worst_full

    def cost(self, samples: float, seconds: float) -> float:
        return float(samples) if self.unit == "samples" else float(seconds) * self.gpus_per_trial / 3600.0


@dataclass(frozen=True)
class TrialUse:
    """What the budget needs of one trial row."""

    number: int
    state: str
    samples: int = 0
    seconds: float = 0.0
    config: dict = field(default_factory=dict)


@dataclass
class Account:
    plan: BudgetPlan
    spent: float
    committed: float
    launched: int  # trials the sweep has launched (rows and live suggestions, once each)
    live: int  # trials still running
    finished_costs: list[float]
    rate: float | None  # seconds per sample over the sweep so far

    @property
    def free(self) -> float:
        return self.plan.total - self.spent - self.committed

    @property
    def remaining(self) -> float:
        return max(0.0, self.plan.total - self.spent)

    def next_trial_cost(self) -> float | None:
        """A new trial's projected full cost, before its config is known: the largest full
        budget of the space (None: unknown, e.g. GPU hours before any trial reported)."""
        if self.plan.worst_full is None:
            return None
        if self.plan.unit == "samples":
            return self.plan.worst_full
        return None if self.rate is None else self.rate * self.plan.worst_full * self.plan.gpus_per_trial / 3600.0

    def verdict(self) -> str:
        """LAUNCH a trial now, WAIT (running trials may free some budget), or FINISHED."""
        if self.launched >= self.plan.cap:
            return WAIT if self.live else FINISHED
        nxt = self.next_trial_cost()
        fits = self.free > 0 if nxt is None else nxt <= self.free + 1e-9
        if fits:
            return LAUNCH
        return WAIT if self.live else FINISHED

    def status(self, *, active: bool, running_for: float | None = None) -> dict[str, Any]:
        """The figures the API, the CLI and the dashboard show. ``active``: the sweep is still
        running (else nothing is committed or projected); ``running_for``: its seconds so far."""
        nxt = self.next_trial_cost()
        per_trial = (sum(self.finished_costs) / len(self.finished_costs)) if any(self.finished_costs) else nxt
        free = max(0.0, self.free)
        projected = 0
        if active and per_trial:
            projected = min(max(0, self.plan.cap - self.launched), int(math.floor(free / per_trial + 1e-9)))
        eta = None
        if active and running_for and self.spent > 0:
            eta = round(self.remaining / (self.spent / running_for), 1)
        r = self._round
        return {
            "unit": self.plan.unit,
            "total": r(self.plan.total),
            "spent": r(self.spent),
            "committed": r(self.committed) if active else r(0.0),
            "remaining": r(self.remaining),
            "fraction_spent": round(self.spent / self.plan.total, 4) if self.plan.total else 0.0,
            "trials_launched": self.launched,
            "trials_cap": self.plan.cap,
            "cost_per_trial": None if per_trial is None else r(per_trial),
            "projected_trials": projected,
            "eta_seconds": eta,
            "exhausted": (not active) or (nxt is not None and self.free + 1e-9 < nxt),
        }

    def _round(self, value: float) -> float | int:
        return int(round(value)) if self.plan.unit == "samples" else round(value, 4)


def account(plan: BudgetPlan, rows: list[TrialUse], live: dict[int, dict] | None = None) -> Account:
    """The budget's account from the store's trial rows. ``live``: the trials running now, by
    number, with their configs (the searcher's view, which Tune updates in the same step as the
    store; None: every row not finished, the store's view). A live trial is reserved at its
    projected full cost; a row not finished and not live (a crash left it) counts at what it
    spent."""
    with_time = [r for r in rows if r.samples > 0 and r.seconds > 0]
    rate = sum(r.seconds for r in with_time) / sum(r.samples for r in with_time) if with_time else None

    def projected(samples: int, seconds: float, config: dict) -> float:
        now = plan.cost(samples, seconds)
        full = plan.full_samples(config)
        if full is None:
            return now
        if plan.unit == "samples":
            return max(now, full)
        own = seconds / samples if samples > 0 and seconds > 0 else rate
        return now if own is None else max(now, own * full * plan.gpus_per_trial / 3600.0)

    spent = committed = 0.0
    finished: list[float] = []
    by_number = {r.number: r for r in rows}
    if live is None:
        live = {r.number: r.config for r in rows if r.state not in FINISHED_TRIAL_STATES}
    for r in rows:
        cost = plan.cost(r.samples, r.seconds)
        spent += cost
        if r.state in FINISHED_TRIAL_STATES:
            finished.append(cost)
        elif r.number in live:
            committed += projected(r.samples, r.seconds, live[r.number] or r.config) - cost
        # else: a row a crash left behind, not running now: it counts at what it spent (if its
        # number is suggested again, the new run reuses the row and is reserved as live)
    for number, config in live.items():
        if number not in by_number:  # suggested, not in the store yet
            committed += projected(0, 0.0, config)
    return Account(plan=plan, spent=spent, committed=committed, launched=len(set(by_number) | set(live)),
                   live=sum(1 for n in live if n not in by_number or by_number[n].state not in FINISHED_TRIAL_STATES),
                   finished_costs=finished, rate=rate)


def _train_lines(spec) -> int | None:
    paths = tuple(f.path for f in spec.data.train)
    try:
        stamp = tuple((os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in paths)
    except OSError:
        return None
    return _count_lines(paths, stamp)


@functools.lru_cache(maxsize=64)
def _count_lines(paths: tuple[str, ...], stamp: tuple) -> int | None:
    return count_lines(list(paths))


# ---- the store ------------------------------------------------------------------------------


def trial_uses(session, sweep_ids: list[str]) -> dict[str, list[TrialUse]]:
    """``{sweep_id: [TrialUse]}`` for these sweeps, in one query (no metric points)."""
    from sqlalchemy import select

    from sweepd.store.models import Trial

    out: dict[str, list[TrialUse]] = {sid: [] for sid in sweep_ids}
    if not sweep_ids:
        return out
    rows = session.execute(select(Trial.sweep_id, Trial.number, Trial.state, Trial.samples, Trial.seconds,
                                  Trial.config).where(Trial.sweep_id.in_(list(sweep_ids)))).all()
    for sid, number, state, samples, seconds, config in rows:
        out[sid].append(TrialUse(int(number), state, int(samples or 0), float(seconds or 0.0), config or {}))
    return out


def budget_status(spec, rows: list[TrialUse], *, active: bool, running_for: float | None = None) -> dict | None:
    """The sweep's budget figures (None for a sweep without ``search.compute_budget``)."""
    plan = BudgetPlan.of(spec)
    if plan is None:
        return None
    return account(plan, rows).status(active=active, running_for=running_for)


class BudgetGate:
    """The searcher's question before each suggestion: may another trial start? Read from the
    store each time (the store is the truth, also after a resume). Pickled with the searcher's
    state: it holds the database URL and the plan, and opens its engine lazily."""

    def __init__(self, db_url: str, sweep_id: str, plan: BudgetPlan) -> None:
        self.db_url, self.sweep_id, self.plan = db_url, sweep_id, plan
        self._engine = None
        self._waiting_since: float | None = None  # monotonic; the last WAIT verdict's read
        self._last_activity = time.monotonic()
        self._announced = False

    def __getstate__(self) -> dict:
        return {"db_url": self.db_url, "sweep_id": self.sweep_id, "plan": self.plan}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["db_url"], state["sweep_id"], state["plan"])

    @classmethod
    def for_spec(cls, spec, db_url: str, sweep_id: str) -> "BudgetGate | None":
        plan = BudgetPlan.of(spec)
        return None if plan is None else cls(db_url, sweep_id, plan)

    def touch(self) -> None:
        """A trial reported or ended: the searcher's running trials are alive."""
        self._last_activity = time.monotonic()
        self._waiting_since = None

    def _transact(self, fn, what: str):
        """``fn(session)`` in one transaction, retried through a transient database outage
        (sweepd/store/retry.py; past its bound: StoreUnavailable)."""
        from sweepd.store.db import make_engine, session_scope
        from sweepd.store.retry import call_with_retry

        def once():
            if self._engine is None:
                self._engine = make_engine(self.db_url)
            with session_scope(self._engine) as s:
                return fn(s)

        return call_with_retry(once, what=f"sweep {self.sweep_id}: {what}")

    def _rows(self) -> list[TrialUse]:
        return self._transact(lambda s: trial_uses(s, [self.sweep_id])[self.sweep_id], "budget account")

    def account(self, live: dict[int, dict]) -> Account:
        return account(self.plan, self._rows(), live)

    def verdict(self, live: dict[int, dict]) -> str:
        now = time.monotonic()
        if self._waiting_since is not None and now - self._waiting_since < WAIT_RECHECK_S:
            return WAIT
        acc = self.account(live)
        verdict = acc.verdict()
        if verdict == WAIT and now - self._last_activity > STALE_LIVE_S:
            log.warning("sweep %s: trials %s have not reported for %.0f s; not waiting for them",
                        self.sweep_id, sorted(live), now - self._last_activity)
            acc = self.account({})
            verdict = acc.verdict()
        self._waiting_since = now if verdict == WAIT else None
        if verdict == FINISHED and not self._announced:
            self._announced = True
            self._announce(acc)
        return verdict

    def _announce(self, acc: Account) -> None:
        from sweepd.store import repo
        from sweepd.store.retry import StoreUnavailable

        st = acc.status(active=False)
        unit = "samples" if self.plan.unit == "samples" else "GPU hours"
        if acc.launched >= self.plan.cap:
            why = f"the trial cap (num_trials {self.plan.cap}) is reached"
        else:
            why = f"the next trial ({_fmt(acc.next_trial_cost())} {unit} at full length) does not fit"
        msg = (f"compute budget: {_fmt(st['spent'])} of {_fmt(st['total'])} {unit} spent by "
               f"{acc.launched} trials; {_fmt(st['remaining'])} left and {why}: no more trials")
        log.info("sweep %s: %s", self.sweep_id, msg)
        try:
            self._transact(lambda s: repo.add_event(s, self.sweep_id, "info", msg, payload={"budget": st}),
                           "budget event")
        except StoreUnavailable:  # down past the retry bound: the driver steps aside
            raise
        except Exception:  # noqa: BLE001 - an event is news, not accounting
            log.warning("sweep %s: could not record the budget event", self.sweep_id, exc_info=True)


def _fmt(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:,.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:,.3g}"


def describe_budget(b: dict) -> str:
    """One line for people from ``Account.status`` (the API's ``budget``): the CLI's `status`."""
    from sweepd.formatting import fmt_num, fmt_seconds

    unit = "samples" if b.get("unit") == "samples" else "GPU hours"
    line = (f"budget: {fmt_num(b.get('spent'))} of {fmt_num(b.get('total'))} {unit} spent "
            f"({float(b.get('fraction_spent') or 0):.1%}) by {b.get('trials_launched', 0)} trials, "
            f"{fmt_num(b.get('remaining'))} left")
    if b.get("committed"):
        line += f"; {fmt_num(b['committed'])} more committed to running trials"
    if b.get("projected_trials"):
        line += (f"; ~{b['projected_trials']} more trials at {fmt_num(b.get('cost_per_trial'))} each"
                 + (f", spent in ~{fmt_seconds(b['eta_seconds'])}" if b.get("eta_seconds") is not None else ""))
    elif b.get("exhausted"):
        line += "; no further trial fits"
    return line
