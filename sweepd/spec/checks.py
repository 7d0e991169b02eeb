"""The checks that need more than one field: each a named function ``check_x(sections, ctx)``
that yields ``(field_path, problem)``; ``run_checks`` runs every one of ``CHECKS``, in order.

A check sees ``Sections``: the sections that validated on their own (None where one is missing
or invalid; a check skips what it cannot judge), with the space and ``fixed:`` parsed once. So
a spec with a bad section still gets every other problem reported in the same go.

``check_trial_config`` is the last word on a whole spec that passed every other check.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, Callable

from sweepd.spec.budget import budgets_of, count_lines, full_budget, tidy
from sweepd.spec.capacity import Context
from sweepd.spec.errors import Problem, SpecError
from sweepd.spec.fixed import flatten_fixed
from sweepd.spec.paths import resolve_path
from sweepd.spec.sections import EVAL_METRICS, ObjectiveSpec, PrunerSpec, ResourcesSpec, SearchSpec
from sweepd.spec.space import grid_problems, parse_space
from sweepd.spec.trials import build_trial_config, candidates
from trainer.config import Budget, ConfigError, DataConfig, ModelConfig
from trainer.replay_config import REPLAY_MODEL

BATCH = "hparams.effective_batch_size"


@dataclass
class Sections:
    """A spec's sections by name, as far as they validated (``fixed`` is the raw mapping)."""

    name: str | None = None
    model: ModelConfig | None = None
    data: DataConfig | None = None
    search: SearchSpec | None = None
    fixed: dict[str, Any] | None = None
    budget: Budget | None = None
    pruner: PrunerSpec | None = None
    objective: ObjectiveSpec | None = None
    resources: ResourcesSpec | None = None
    save_best_model: bool | None = None

    def __post_init__(self) -> None:
        self.domains, self.space_errors = parse_space(self.search.space) if self.search is not None else ({}, [])
        self.fixed_errors: list[Problem] = []
        self.fixed_values = flatten_fixed(self.fixed, self.fixed_errors) if self.fixed is not None else {}

    @classmethod
    def of(cls, parts: Mapping[str, Any]) -> "Sections":
        return cls(**{f.name: parts.get(f.name) for f in fields(cls)})

    def candidates(self, path: str) -> list:
        return candidates(path, self.domains, self.fixed_values)


Check = Callable[[Sections, Context], Iterator[Problem]]


def check_space(s: Sections, ctx: Context) -> Iterator[Problem]:
    """Every space entry is a known key with a valid domain, and something is searched."""
    if s.search is None:
        return
    yield from s.space_errors
    if not s.search.space:
        yield "search.space", "empty: give at least one key to search"
    elif not s.space_errors and not any(d.searched for _, d in s.domains.values()):
        yield "search.space", ("nothing is searched (every entry is a plain value); "
                               "give at least one choice/uniform/loguniform/int domain")


def check_grid(s: Sections, ctx: Context) -> Iterator[Problem]:
    """Grid search needs a choice for every searched key."""
    if s.search is not None and s.search.algorithm == "grid":
        yield from grid_problems(s.domains)


def check_fixed(s: Sections, ctx: Context) -> Iterator[Problem]:
    """``fixed:`` holds valid trial-config values, none of them also searched."""
    if s.fixed is None:
        return
    yield from s.fixed_errors
    searched = {p: k for k, (p, _) in s.domains.items()}
    for path in s.fixed_values:
        if path in searched:
            yield f"fixed.{path}", f"also in search.space.{searched[path]}: fix it or search it, not both"


def check_batch_sizes(s: Sections, ctx: Context) -> Iterator[Problem]:
    """Every batch size gives each worker of a trial at least one sample per step."""
    if s.resources is None:
        return
    workers = s.resources.workers_per_trial
    sizes: list[tuple[str, Any]] = []
    for key, (path, d) in s.domains.items():
        if path == BATCH:
            where = f"search.space.{key}"
            sizes += [(f"{where}.{d.kind}[{i}]" if d.searched else where, b) for i, b in enumerate(d.candidates())]
    if BATCH in s.fixed_values:
        sizes.append((f"fixed.{BATCH}", s.fixed_values[BATCH]))
    for where, b in sizes:
        if b < workers:
            yield where, (f"batch size {b} is smaller than resources.workers_per_trial ({workers}): "
                          f"every worker needs a sample per step")


def check_objective_metric(s: Sections, ctx: Context) -> Iterator[Problem]:
    """An eval metric needs eval data (a replay's come from its recorded runs: check_replay)."""
    if _replays(s):
        return
    if s.objective is not None and s.data is not None and s.objective.metric in EVAL_METRICS and not s.data.eval:
        yield "objective.metric", f"{s.objective.metric!r} is measured on eval data, but data.eval is empty"


def check_pruner_signal(s: Sections, ctx: Context) -> Iterator[Problem]:
    """The ``objective`` signal needs an eval metric, measured during training."""
    if s.pruner is None or s.pruner.type == "none" or s.pruner.on_axis().signal_name != "objective":
        return
    if _replays(s):
        yield "pruner.signal", ("'objective' scores an evaluation at each rung, and a replay recorded none "
                                "during training: use loss, grad_norm, paper or learned")
    elif s.objective is not None and s.objective.metric not in EVAL_METRICS:
        yield "pruner.signal", (f"'objective' scores the objective at each rung, but "
                                f"{s.objective.metric!r} is only known at the end; use an eval metric")
    elif not s.candidates("eval.every_steps")[0]:
        yield "pruner.signal", "'objective' needs the eval metric during training: set fixed.eval.every_steps"


def check_pruner_grace(s: Sections, ctx: Context) -> Iterator[Problem]:
    """The first rung the user set comes before the end of the longest trial, or nothing could be
    stopped. A grace left to the pruner class's default is not the user's mistake: if it does not
    fit, the pruner stops nothing and `sweepd validate` says so (no rung below the budget)."""
    if s.pruner is None or s.pruner.type == "none" or s.pruner.grace is None or s.budget is None or s.search is None:
        return
    pruner = s.pruner.on_axis()  # grace and time_attr as the pruner class resolves them
    unit = pruner.time_attr
    n_train = count_lines([f.path for f in s.data.train]) if s.data is not None and ctx.check_paths else None
    budgets = budgets_of(s.budget, s.domains)
    batches = [b for b in s.candidates(BATCH) if isinstance(b, int) and b >= 1]
    times = [full_budget(budgets, b, unit, n_train) for b in batches]
    if batches and budgets and all(t is not None for t in times):
        longest = max(times)
        if pruner.grace >= longest:
            yield "pruner.grace", (f"{tidy(pruner.grace):,} {unit} is not below the trial budget "
                                   f"({tidy(longest):,} {unit} at most): no trial could ever be stopped")


def check_compute_budget(s: Sections, ctx: Context) -> Iterator[Problem]:
    """A compute budget in GPU hours needs GPUs; one in samples buys at least one whole trial (the
    sweep launches a trial only when its full cost fits what is left: sweepd/engine/budget.py)."""
    cb = s.search.compute_budget if s.search is not None else None
    if cb is None:
        return
    if cb.gpu_hours is not None:
        if s.resources is not None and s.resources.gpus_per_worker == 0:
            yield "search.compute_budget.gpu_hours", (
                "a budget in GPU hours needs GPUs, but resources.gpus_per_worker is 0 (a CPU-only sweep): "
                "give search.compute_budget in samples")
        return
    if s.budget is None:
        return
    n_train = count_lines([f.path for f in s.data.train]) if s.data is not None and ctx.check_paths else None
    budgets = budgets_of(s.budget, s.domains)
    fulls = [full_budget(budgets, b, "samples", n_train) for b in s.candidates(BATCH) if isinstance(b, int) and b >= 1]
    if budgets and fulls and all(f is not None for f in fulls) and cb.samples < max(fulls):
        yield "search.compute_budget", (f"{cb.samples:,} samples is less than one full trial "
                                        f"({tidy(max(fulls)):,} samples at most): no trial could start")


def check_data_paths(s: Sections, ctx: Context) -> Iterator[Problem]:
    """Each data file exists inside the data roots (with ``check_paths``); there is train data
    unless the model is builtin:replay, which reads none."""
    if s.data is None:
        return
    if not s.data.train and s.model is not None and not _replays(s):
        yield "data.train", f"empty: give at least one train file (only model {REPLAY_MODEL} reads no data)"
    for section in ("train", "eval"):
        for i, f in enumerate(getattr(s.data, section)):
            _, problem = resolve_path(f"data.{section}[{i}].path", f.path, "file", ctx)
            if problem:
                yield problem


def _replays(s: Sections) -> bool:
    return s.model is not None and s.model.path == REPLAY_MODEL


def replay_problems(s: Sections, ctx: Context) -> Iterator[Problem]:
    """A replay sweep (trainer/replay.py): its curves load, its fixed run exists, they recorded
    the objective, a trial's budget is in samples or steps, and a trial is one process."""
    replay = s.model.replay
    if s.resources is not None and s.resources.workers_per_trial > 1:
        yield "resources.workers_per_trial", "a replay trial runs in one process: give 1"
    if s.budget is not None and any(b.epochs is not None for b in budgets_of(s.budget, s.domains)):
        yield "budget.epochs", "a replay reads no data to count epochs in: give max_samples or max_steps"
    path = replay.curves_path()
    if not replay.curves.startswith("builtin:"):  # a file: inside the data roots, like data files
        resolved, problem = resolve_path("model.replay.curves", replay.curves, "file", ctx)
        if problem:
            yield problem
        if problem or not ctx.check_paths:  # not checked here: a spec for another machine
            return
        path = resolved
    from trainer.replay_bank import ReplayError, load_curves

    try:
        bank = load_curves(path)
        if replay.run is not None:
            bank.run(replay.run)
    except ReplayError as err:
        field = "model.replay.run" if str(err).startswith("model.replay.run") else "model.replay.curves"
        yield field, str(err).removeprefix(f"{field}: ")
        return
    if s.objective is not None and s.objective.metric not in bank.metrics():
        yield "objective.metric", (f"{s.objective.metric!r} is not recorded in {bank.path.name}; its runs recorded "
                                   f"{', '.join(sorted(bank.metrics())) or 'no objective metric'}")


def check_model_path(s: Sections, ctx: Context) -> Iterator[Problem]:
    """A model folder (not builtin:) exists inside the data roots and holds a config.json;
    builtin:replay's recorded curves can be replayed (``replay_problems``)."""
    if _replays(s) and s.model.replay is not None:
        yield from replay_problems(s, ctx)
    if s.model is None or s.model.path.startswith("builtin:"):
        return
    _, problem = resolve_path("model.path", s.model.path, "dir", ctx)
    if problem:
        yield problem


def check_capacity(s: Sections, ctx: Context) -> Iterator[Problem]:
    """A trial's CPUs and GPUs fit the cluster; one that does not could never start."""
    r = s.resources
    if r is None:
        return
    cap, w = ctx.cap(), r.workers_per_trial
    for what, per_worker, has in (("CPU", r.cpus_per_worker, cap.cpus), ("GPU", r.gpus_per_worker, cap.gpus)):
        if w * per_worker > has:
            field = f"{what.lower()}s_per_worker"
            yield f"resources.{field}", (f"a trial needs {tidy(w * per_worker)} {what}(s) (workers_per_trial {w} x "
                                         f"{field} {tidy(per_worker)}), the cluster has {tidy(has)}: it could never start")


def check_fit(s: Sections, ctx: Context) -> Iterator[Problem]:
    """The largest trial fits in GPU memory: trainer/fit.py's per-GPU peak-memory estimate of the
    space's most demanding micro-batch (sweepd/spec/fit.py) against resources.gpu_memory_gb, else
    this server's GPU. A CPU-only spec, an unknown GPU memory or a model with no config.json (nor
    a known shape) is not judged."""
    if s.resources is None or s.model is None or s.data is None or s.resources.gpus_per_worker == 0:
        return
    if s.space_errors or s.fixed_errors:
        return
    from sweepd.spec.fit import fit_report, gpu_memory

    if gpu_memory(s, ctx)[0] is None:  # nothing to judge by (sweepd validate still prints the estimate)
        return
    report = fit_report(s, ctx)
    refusal = report.refusal() if report is not None else None
    if refusal:
        yield "resources", refusal


CHECKS: tuple[Check, ...] = (
    check_space,
    check_grid,
    check_fixed,
    check_batch_sizes,
    check_objective_metric,
    check_pruner_signal,
    check_pruner_grace,
    check_compute_budget,
    check_data_paths,
    check_model_path,
    check_capacity,
    check_fit,
)


def run_checks(s: Sections, ctx: Context) -> list[Problem]:
    return [problem for check in CHECKS for problem in check(s, ctx)]


def check_trial_config(s: Sections, ctx: Context) -> Iterator[Problem]:
    """One whole trial config (the first candidate of each searched key) builds. Run on a whole
    spec only, once every check in ``CHECKS`` passed: it explains what they did not."""
    params = {k: d.candidates()[0] for k, (_, d) in s.domains.items() if d.searched}
    try:
        build_trial_config(s, s.domains, s.fixed_values, params)
    except (ConfigError, SpecError) as err:
        yield from [("trial config", line.strip()) for line in str(err).splitlines()[1:] or [str(err)]]
