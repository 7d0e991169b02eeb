"""An event-driven, asynchronous replay of a sweep over the curve bank.

One sweep: ``n_trials`` configs drawn from the bank's grid by a sampler (Optuna TPE as the
service builds it, random, or a fixed order), run on ``workers`` concurrent workers. Each trial
replays its recorded run: optimizer step k is reported at ``start + seconds[k]`` (the recorded
cumulative training time), and a trial that is not stopped holds its worker until
``start + wall_seconds`` (model load, set-up and the final evaluation included), when its final
objective is known. Events are processed in time order (ties: first scheduled first); a worker
that frees up asks the sampler for the next config at once.

Every report goes where the service sends it: the training loss to the Optuna study as the
intermediate value at ``samples`` (``sweepd.engine.search.SweepOptunaSearch`` does this), and
the whole step result to the pruner under test:

- sweepd's pruners (``none``, ``grad_norm``, ``paper``, ``calibrated``, and ``asha_loss_sweepd``
  as an extra): the service's own Ray adapter, ``sweepd.engine.tune_scheduler.EarlySignalScheduler``,
  built from ``SweepSpec.pruner_config()`` of a spec with the same search space, budget, grace
  and reduction factor, fed fake ``Trial`` objects;
- ``asha_loss``: stock Ray Tune ``AsyncHyperBandScheduler`` (metric ``loss``, mode min, same
  ``time_attr``/grace/reduction factor/max_t; raw per-step loss, no smoothing);
- ``median_loss``/``hyperband_loss``: Optuna's ``MedianPruner`` / ``HyperbandPruner`` set on the
  study, asked ``trial.should_prune()`` after every report.

A stopped trial is told to the study as PRUNED (with its loss curve, as the service does), a
finished one as COMPLETE with its final objective. (When no Optuna pruner reads the study, the
intermediate values are written only when the trial is told PRUNED, the last one being all TPE
reads: the same study, much faster.)

Banks that are not grids (the AlgoPerf curves: every trial its own config) are searched over one
categorical parameter, the config id: ``random`` draws configs uniformly without repeats (TPE
over opaque ids would be meaningless, so the benchmark uses random there).

``learned`` is sweepd's ASHA with the learned signal; ``learned_history`` and
``learned_history_sweep`` the same with an earlier sweep's trials handed to its pruner
(``pruner.add_history``) before the first trial:
``simulate(..., history=[{"curve": [step results...], "objective": float | None}, ...])``. A config the sampler proposes a second time
in the same sweep is not run again: that trial is told FAIL (TPE ignores failed trials) and the
sampler asked again, up to ``max_reask`` times; then a config not yet tried is drawn at random.
So a sweep of ``n_trials`` runs ``n_trials`` distinct configs.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from benchmarks.curve_bank.bank import MODES, Run

PRUNERS = ("none", "asha_loss", "median_loss", "hyperband_loss", "asha_loss_sweepd", "grad_norm",
           "paper", "learned")
# the learned signal given an earlier sweep: every curve of the earlier bank run to the end
# (``learned_history``), or the trials of an earlier replayed sweep as it left them
# (``learned_history_sweep``: stopped ones up to where they stopped, without an objective)
HISTORY_PRUNERS = ("learned_history", "learned_history_sweep")
EXTRA_PRUNERS = ("calibrated",)  # by name only (issue 7's calibrated signal)
SPACE_KEYS = {  # bank config key -> the trial-config hyperparameter the service searches
    "batch": "effective_batch_size",
    "lr": "learning_rate",
    "warmup": "warmup_steps",
    "schedule": "lr_scheduler",
}
CONFIG_KEY = "config_id"  # the one parameter of a bank that is not a grid
SWEEPD_SIGNALS = {"asha_loss_sweepd": "loss", "grad_norm": "grad_norm", "paper": "paper",
                  "learned": "learned", "learned_history": "learned", "learned_history_sweep": "learned",
                  "calibrated": "calibrated"}
OPTUNA_PRUNERS = ("median_loss", "hyperband_loss")


@dataclass(frozen=True)
class Settings:
    n_trials: int = 16
    workers: int = 4
    sampler: str = "tpe"  # tpe | random | order
    objective: str = "eval_loss"
    grace: float = 256  # samples: the first rung (budget / 16 on the stored bank)
    reduction_factor: float = 3
    window: int = 5
    max_reask: int = 3  # 10 in issue 7: near the grid's size a sweep then spent its time re-asking TPE
    order: tuple[str, ...] = ()  # config ids, for sampler="order"

    @property
    def mode(self) -> str:
        return MODES[self.objective]


@dataclass
class TrialRecord:
    number: int  # launch order, 0-based
    config_id: str
    start: float
    end: float  # when its worker was free again
    samples: int  # samples it trained on
    state: str  # "complete" | "pruned"
    value: float | None  # final objective (complete only)


@dataclass
class SweepResult:
    pruner: str
    seed: int
    settings: Settings
    trials: list[TrialRecord]
    samples: int  # samples trained, all trials
    grid_samples: int  # every config of the grid at full budget
    chosen: str | None  # best completed config
    chosen_value: float | None
    best: str
    best_value: float
    value_range: float  # worst - best over the grid (finite values)
    makespan: float  # seconds from the first start to the last worker free
    decisions: list[Any] = field(default_factory=list)

    @property
    def compute(self) -> float:
        """Samples trained by the sweep / samples of the whole grid at full budget."""
        return self.samples / self.grid_samples

    @property
    def regret(self) -> float:
        """In objective units; the whole range when no trial completed."""
        if self.chosen_value is None:
            return self.value_range
        sign = 1.0 if self.settings.mode == "min" else -1.0
        return sign * (self.chosen_value - self.best_value)

    @property
    def regret_frac(self) -> float:
        return self.regret / self.value_range if self.value_range > 0 else 0.0

    @property
    def hit(self) -> bool:
        return self.chosen is not None and self.chosen_value == self.best_value

    @property
    def n_pruned(self) -> int:
        return sum(t.state == "pruned" for t in self.trials)


# ---- the grid as a search space --------------------------------------------------------------


def is_grid(runs: list[Run]) -> bool:
    """The runs' grid keys tell every run apart (a grid, or a subset of one)."""
    keys = [k for k in SPACE_KEYS if all(k in r.config for r in runs)]
    return bool(keys) and len({tuple(r.config[k] for k in keys) for r in runs}) == len(runs)


def space_of(runs: list[Run]) -> dict[str, list]:
    """Bank config key -> its sorted distinct values (only keys that vary... and those that don't);
    a bank that is not a grid: {"config_id": every config id}."""
    if not is_grid(runs):
        return {CONFIG_KEY: sorted(r.config_id for r in runs)}
    keys = [k for k in SPACE_KEYS if all(k in r.config for r in runs)]
    return {k: sorted({r.config[k] for r in runs}, key=lambda v: (str(type(v)), v)) for k in keys}


def _key(config: dict, keys) -> tuple:
    return tuple(config[k] for k in keys)


def _key_of(run: Run, keys) -> tuple:
    return (run.config_id,) if keys == [CONFIG_KEY] else _key(run.config, keys)


def _param(key: str) -> str:
    return SPACE_KEYS.get(key, key)


def sweepd_pruner_config(signal: str | None, s: Settings, runs: list[Run]) -> dict:
    """The pruner config the service would build (``SweepSpec.pruner_config()``) for a sweep
    over this grid: same space, budget, grace, reduction factor and smoothing window."""
    from sweepd.spec import Capacity, parse_spec
    from sweepd.spec.sections import METRICS

    space = space_of(runs)
    if CONFIG_KEY in space:  # not a grid: the pruner's config does not depend on the space
        space = {"lr": [1e-3]}
    budget = max(r.budget for r in runs)
    metric = s.objective if s.objective in METRICS else "eval_loss"  # the spec's name for it
    raw = {
        "name": "pruning-benchmark",
        "model": {"path": "builtin:tiny"},
        "data": {"train": [{"path": "train.jsonl"}], "eval": [{"path": "eval.jsonl"}]},
        "search": {"algorithm": "tpe" if s.sampler == "order" else s.sampler,
                   "num_trials": s.n_trials, "max_concurrent": s.workers, "seed": 0,
                   "space": {SPACE_KEYS[k]: {"choice": v} for k, v in space.items()}},
        "budget": {"max_samples": budget},
        "objective": {"metric": metric, "mode": s.mode},
        "pruner": ({"type": "none"} if signal is None else
                   {"type": "asha", "signal": signal, "grace": s.grace,
                    "reduction_factor": s.reduction_factor, "time_attr": "samples",
                    "window": s.window}),
    }
    spec = parse_spec(raw, check_paths=False, capacity=Capacity.unlimited())
    return spec.pruner_config()


# ---- pruner adapters: one interface over sweepd, Ray and Optuna ------------------------------


class _Adapter:
    optuna_pruner = None  # set on the study

    def start(self, tid: str) -> None: ...

    def report(self, tid: str, ot_trial, result: dict) -> bool:
        """True: stop the trial now."""
        return False

    def complete(self, tid: str, result: dict) -> None: ...


class _SweepdAdapter(_Adapter):
    """The service's Ray adapter around ``make_pruner(spec.pruner_config())``."""

    def __init__(self, config: dict, s: Settings, history: list[dict] | None = None):
        from sweepd.engine.tune_scheduler import EarlySignalScheduler

        self.decisions: list = []
        self.sched = EarlySignalScheduler(config, metric=s.objective, mode=s.mode,
                                          on_decision=self.decisions.append)
        if history is not None:  # before the first trial, as a warm-started sweep does
            self.sched.pruner.add_history("earlier-sweep", history)
        self.trials: dict[str, SimpleNamespace] = {}

    def start(self, tid):
        self.trials[tid] = SimpleNamespace(trial_id=tid)
        self.sched.on_trial_add(None, self.trials[tid])

    def report(self, tid, ot_trial, result):
        return self.sched.on_trial_result(None, self.trials[tid], result) == "STOP"

    def complete(self, tid, result):
        self.sched.on_trial_complete(None, self.trials[tid], result)


class _RayASHAAdapter(_Adapter):
    """Stock Ray Tune ASHA on the raw training loss."""

    def __init__(self, s: Settings, budget: int):
        from ray.tune.schedulers import AsyncHyperBandScheduler

        self.sched = AsyncHyperBandScheduler(
            time_attr="samples", metric="loss", mode="min", max_t=budget,
            grace_period=s.grace, reduction_factor=s.reduction_factor, brackets=1,
        )  # fmt: skip
        self.trials: dict[str, SimpleNamespace] = {}

    def start(self, tid):
        self.trials[tid] = SimpleNamespace(trial_id=tid)
        self.sched.on_trial_add(None, self.trials[tid])

    def report(self, tid, ot_trial, result):
        return self.sched.on_trial_result(None, self.trials[tid], result) == "STOP"

    def complete(self, tid, result):
        self.sched.on_trial_complete(None, self.trials[tid], result)


class _OptunaAdapter(_Adapter):
    """Optuna's own pruner on the study; the loss is already reported as the intermediate value."""

    def __init__(self, pruner):
        self.optuna_pruner = pruner

    def report(self, tid, ot_trial, result):
        return ot_trial.should_prune()


def make_adapter(name: str, s: Settings, runs: list[Run], history: list[dict] | None = None) -> _Adapter:
    import optuna

    budget = max(r.budget for r in runs)
    if (name in HISTORY_PRUNERS) != (history is not None):
        raise ValueError(f"{name}: history is given to (and only to) {', '.join(HISTORY_PRUNERS)}")
    if name == "none":
        return _SweepdAdapter(sweepd_pruner_config(None, s, runs), s)
    if name in SWEEPD_SIGNALS:
        return _SweepdAdapter(sweepd_pruner_config(SWEEPD_SIGNALS[name], s, runs), s, history)
    if name == "asha_loss":
        return _RayASHAAdapter(s, budget)
    if name == "median_loss":
        # Optuna's defaults (5 startup trials, every step), no decision before the first rung
        return _OptunaAdapter(optuna.pruners.MedianPruner(n_warmup_steps=int(s.grace)))
    if name == "hyperband_loss":
        return _OptunaAdapter(optuna.pruners.HyperbandPruner(
            min_resource=int(s.grace), max_resource=budget, reduction_factor=int(s.reduction_factor)))
    raise ValueError(f"unknown pruner {name!r}; known: {', '.join(PRUNERS + HISTORY_PRUNERS + EXTRA_PRUNERS)}")


# ---- the sampler ---------------------------------------------------------------------------


def _make_sampler(s: Settings, seed: int):
    import optuna

    from sweepd.engine.search import make_sampler

    if s.sampler in ("tpe", "random"):
        return make_sampler(s.sampler, seed)  # the service's: TPE with 4 startup trials
    if s.sampler == "order":
        return optuna.samplers.RandomSampler(seed=seed)  # every trial is enqueued
    raise ValueError(f"sampler must be tpe, random or order; got {s.sampler!r}")


# ---- one sweep -----------------------------------------------------------------------------


def simulate(runs: list[Run], pruner: str, seed: int, settings: Settings | None = None,
             history: list[dict] | None = None) -> SweepResult:
    """Replay one sweep of ``settings.n_trials`` configs over ``runs`` (one run per config);
    ``history``: earlier sweeps' trials for a ``HISTORY_PRUNERS`` pruner."""
    import numpy as np
    import optuna
    from optuna.trial import TrialState

    s = settings or Settings()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("sweepd.engine.tune_scheduler").setLevel(logging.WARNING)
    np.random.seed(seed)  # Ray's ASHA draws its bracket from numpy's global generator
    space = space_of(runs)
    keys = list(space)
    by_key = {_key_of(r, keys): r for r in runs}
    if len(by_key) != len(runs):
        raise ValueError("runs must hold one run per config (seed 0 only, say)")
    by_id = {r.config_id: r for r in runs}
    values = {r.config_id: r.objective(s.objective) for r in runs}
    finite = {c: v for c, v in values.items() if v is not None}
    sign = 1.0 if s.mode == "min" else -1.0  # objective oriented lower-is-better; the loss
    # goes to the study as sign * loss, so that Optuna's pruners read it in the study's direction
    best = min(finite, key=lambda c: (sign * finite[c], c))
    value_range = max(finite.values()) - min(finite.values())

    adapter = make_adapter(pruner, s, runs, history)
    live_reports = pruner in OPTUNA_PRUNERS  # only Optuna's pruners read the study mid-trial
    direction = "minimize" if s.mode == "min" else "maximize"
    # a fixed study name: Optuna's HyperbandPruner puts trials in brackets by hashing it
    study = optuna.create_study(study_name=f"sweep-{seed}", direction=direction,
                                sampler=_make_sampler(s, seed),
                                pruner=adapter.optuna_pruner or optuna.pruners.NopPruner())
    rng = random.Random(f"fallback:{seed}")
    tried: set[str] = set()
    n_target = min(s.n_trials, len(runs))

    def suggest(ot) -> Run | None:
        params = tuple(ot.suggest_categorical(_param(k), space[k]) for k in keys)
        return by_key.get(params)

    def ask():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # enqueue_trial / categorical float choices
            if s.sampler == "order":
                run = by_id[s.order[len(tried)]]
                study.enqueue_trial(dict(zip(map(_param, keys), _key_of(run, keys))))
                ot = study.ask()
                assert suggest(ot) is run
                return ot, run
            for _ in range(s.max_reask + 1):
                ot = study.ask()
                run = suggest(ot)
                if run is not None and run.config_id not in tried:
                    return ot, run
                study.tell(ot, state=TrialState.FAIL)
            untried = sorted(c for c in by_id if c not in tried)
            run = by_id[rng.choice(untried)]
            study.enqueue_trial(dict(zip(map(_param, keys), _key_of(run, keys))))
            ot = study.ask()
            assert suggest(ot) is run
            return ot, run

    heap: list[tuple[float, int, str, str]] = []  # (time, seq, kind, tid)
    seq = 0
    live: dict[str, dict] = {}
    records: list[TrialRecord] = []

    def push(t: float, kind: str, tid: str) -> None:
        nonlocal seq
        heapq.heappush(heap, (t, seq, kind, tid))
        seq += 1

    def launch(now: float) -> None:
        if len(tried) >= n_target:
            return
        ot, run = ask()
        tried.add(run.config_id)
        tid = f"t{len(tried) - 1:03d}"
        live[tid] = {"run": run, "ot": ot, "k": 0, "start": now, "number": len(tried) - 1}
        adapter.start(tid)
        push(now + run.steps["seconds"][0], "step", tid)

    for _ in range(min(s.workers, n_target)):
        launch(0.0)
    last_free = 0.0
    while heap:
        now, _, kind, tid = heapq.heappop(heap)
        st = live[tid]
        run, ot = st["run"], st["ot"]
        if kind == "step":
            k = st["k"]
            result = run.step_result(k)
            if result.get("loss") is not None:
                if live_reports:
                    ot.report(sign * float(result["loss"]), int(result["samples"]))
                else:
                    st["last_report"] = (sign * float(result["loss"]), int(result["samples"]))
            stop = adapter.report(tid, ot, result)
            is_last = k == run.n_steps - 1
            if stop and not is_last:
                if not live_reports and st.get("last_report"):
                    ot.report(*st["last_report"])  # TPE reads a pruned trial's last value only
                study.tell(ot, state=TrialState.PRUNED)
                adapter.complete(tid, result)
                records.append(TrialRecord(st["number"], run.config_id, st["start"], now,
                                           int(result["samples"]), "pruned", None))
                del live[tid]
                last_free = max(last_free, now)
                launch(now)
            elif is_last:
                push(max(now, st["start"] + run.seconds_total), "done", tid)
            else:
                st["k"] = k + 1
                push(st["start"] + run.steps["seconds"][k + 1], "step", tid)
        else:  # done: the final objective is known
            value = values[run.config_id]
            final = {**run.step_result(run.n_steps - 1), s.objective: value}
            if value is None:
                study.tell(ot, state=TrialState.FAIL)
            else:
                study.tell(ot, value)
            adapter.complete(tid, final)
            records.append(TrialRecord(st["number"], run.config_id, st["start"], now,
                                       run.budget, "complete", value))
            del live[tid]
            last_free = max(last_free, now)
            launch(now)

    done = [t for t in records if t.state == "complete" and t.value is not None]
    chosen = min(done, key=lambda t: (sign * t.value, t.number)) if done else None
    records.sort(key=lambda t: t.number)
    return SweepResult(
        pruner=pruner, seed=seed, settings=s, trials=records,
        samples=sum(t.samples for t in records),
        grid_samples=sum(r.budget for r in runs),
        chosen=chosen.config_id if chosen else None,
        chosen_value=chosen.value if chosen else None,
        best=best, best_value=finite[best], value_range=value_range,
        makespan=last_free, decisions=list(getattr(adapter, "decisions", [])),
    )  # fmt: skip


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else math.nan
