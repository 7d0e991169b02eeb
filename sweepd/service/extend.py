"""Extending a finished sweep: more trials or more compute budget, optionally a narrowed space
(``sweepd extend ID``, ``POST /api/v1/sweeps/{id}/extend``, ``SweepdClient.extend``).

The same sweep goes on: its stored spec is updated and it is queued again, so the service's
supervisor (or ``sweepd extend --local``) drives it. The driver runs the extension as a new
Ray Tune run (segment k, ``sweep-<id>-x<k>``; a finished Tune experiment takes no more samples
on restore) on the same Optuna study, numbering trials on from the last one, with the pruner's
state (rung scores, learned weights) read back from the sweep's state file. See
sweepd/engine/tuner.py and sweepd/engine/warm_start.py (``prepare_study``).

- ``trials=N``: N more trials than the sweep holds now (``num_trials`` = trials so far + N);
- ``budget=B``: B more of ``search.compute_budget`` in its unit (samples, or GPU hours); a sweep
  without a compute budget gets one of the samples it has spent + B. Without ``trials`` the trial
  cap is lifted (to the trials so far + BUDGET_TRIAL_CAP): the budget decides;
- ``space``: search-space entries that replace the sweep's own, each inside the old one (a range
  within the old range, choices among the old choices, or one value of the old domain); keys
  left out keep their domain; a key the sweep does not search is an error naming it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sweepd.protocol import SweepState
from sweepd.spec import Capacity, SpecError, SweepSpec, parse_spec
from sweepd.spec.budget import BUDGET_TRIAL_CAP, tidy
from sweepd.spec.errors import Problem
from sweepd.spec.space import Domain, parse_space
from sweepd.store import repo
from sweepd.store.models import Sweep

MAX_TRIALS = 10_000  # SearchSpec.num_trials' upper bound


class ExtendConflict(Exception):
    """The sweep is not finished: only a finished sweep can be extended (409)."""


# ---- the space ----------------------------------------------------------------------------------


def _inside(value: Any, old: Domain) -> bool:
    if old.kind == "fixed":
        return value == old.value
    if old.kind == "choice":
        return any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in old.values)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if old.kind == "int" and not float(value).is_integer():
        return False
    return old.low <= value <= old.high


def domain_inside(new: Domain, old: Domain) -> bool:
    """Every value ``new`` can take is one ``old`` can take."""
    if new.kind in ("fixed", "choice"):
        return all(_inside(v, old) for v in new.candidates())
    if old.kind not in ("uniform", "loguniform", "int"):
        return False
    if old.kind == "int" and new.kind != "int":
        return False
    return old.low <= new.low and new.high <= old.high


def space_problems(old: SweepSpec, space: Any) -> list[Problem]:
    """Why ``space`` (entries replacing the sweep's own) is not inside the sweep's space."""
    if not isinstance(space, Mapping) or not space:
        return [("space", "expected a mapping of search-space keys to domains, e.g. "
                          "{learning_rate: {loguniform: [1.0e-4, 1.0e-3]}}")]
    new, problems = parse_space(dict(space))
    by_path = {path: key for key, (path, _) in old.domains.items()}
    for key in space:
        key = str(key)
        where = f"search.space.{key}"
        if key not in old.domains:
            path = new[key][0] if key in new else None
            if path in by_path:
                problems.append((where, f"the sweep names this field {by_path[path]!r}: use its key"))
            else:
                problems.append((where, f"not in the sweep's space ({', '.join(old.domains)}): an extension "
                                        f"can only narrow the space, not add to it"))
            continue
        if key not in new:
            continue  # parse_space said why
        was = old.domains[key][1]
        if not domain_inside(new[key][1], was):
            problems.append((where, f"{new[key][1].describe()} is not inside the sweep's {was.describe()}: "
                                    f"an extension can only narrow the space"))
    return problems


# ---- the extended spec --------------------------------------------------------------------------


def extended_spec(sweep: Sweep, trials_so_far: int, spent_samples: int, *, trials: int | None = None,
                  budget: float | None = None, space: Mapping[str, Any] | None = None) -> tuple[SweepSpec, list[str]]:
    """(the sweep's spec with more trials or budget and the narrowed space, validated; what
    changed, in words). SpecError naming the field when the request cannot be met."""
    if trials is None and budget is None:
        raise SpecError([("trials", "say how much more to run: trials (a number of trials) or budget "
                                    "(more of the compute budget)")], source="extension")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
        raise SpecError([("trials", f"expected a whole number >= 1, got {trials!r}")], source="extension")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or not math.isfinite(budget) or budget <= 0):
        raise SpecError([("budget", f"expected a number > 0, got {budget!r}")], source="extension")
    old = SweepSpec.from_stored(sweep.spec)
    doc = old.to_stored()
    doc.pop("schema_version", None)
    search = doc["search"]
    changes: list[str] = []
    if trials is not None:
        n = trials_so_far + trials
        if n > MAX_TRIALS:
            raise SpecError([("trials", f"{trials_so_far} trials so far + {trials} is more than {MAX_TRIALS:,}, "
                                        f"the most a sweep may have")], source="extension")
        changes.append(f"+{trials} trial{'s' if trials != 1 else ''} (num_trials {old.search.num_trials} -> {n})")
        search["num_trials"] = n
    if budget is not None:
        cb = old.search.compute_budget
        if cb is not None and cb.gpu_hours is not None:
            new_cb, unit, was = {"gpu_hours": cb.gpu_hours + float(budget)}, "GPU hours", cb.gpu_hours
        else:
            if not float(budget).is_integer():
                raise SpecError([("budget", f"a budget in samples is a whole number, got {budget!r}")], source="extension")
            was = cb.samples if cb is not None else spent_samples
            new_cb, unit = {"samples": int(was + budget)}, "samples"
        search["compute_budget"] = new_cb
        total = next(iter(new_cb.values()))
        changes.append(f"compute budget {'(spent so far) ' if cb is None else ''}{tidy(was):,} -> {tidy(total):,} {unit}")
        if trials is None:
            cap = max(old.search.num_trials, min(MAX_TRIALS, trials_so_far + BUDGET_TRIAL_CAP))
            if cap != old.search.num_trials:
                search["num_trials"] = cap
                changes.append(f"trial cap {old.search.num_trials} -> {cap}")
    if space:
        problems = space_problems(old, space)
        if problems:
            raise SpecError(problems, source="extension")
        narrowed = {str(k): v for k, v in space.items()}
        for key, value in narrowed.items():
            before = old.domains[key][1].describe()
            search["space"][key] = value
            changes.append(f"{key}: {before} -> {parse_space({key: value})[0][key][1].describe()}")
    elif space is not None and not isinstance(space, Mapping):
        raise SpecError(space_problems(old, space), source="extension")
    try:
        spec = parse_spec(doc, check_paths=False, capacity=Capacity.unlimited(), source="extension")
    except SpecError as err:
        raise SpecError(err.errors, source="extension") from None
    return spec, changes


def extend_sweep(session, sweep_id: str, *, trials: int | None = None, budget: float | None = None,
                 space: Mapping[str, Any] | None = None, by: str = "") -> Sweep:
    """Queue the finished sweep again, extended (see the module's docstring). Raises
    ``repo.NotFound``, ``ExtendConflict`` (not finished) or ``SpecError`` (the request)."""
    sweep = repo.get_sweep(session, sweep_id)
    if sweep is None:
        raise repo.NotFound(f"no sweep {sweep_id!r}")
    if not SweepState(sweep.state).terminal:
        raise ExtendConflict(f"sweep {sweep_id!r} is {sweep.state}: only a finished sweep (succeeded, failed or "
                             f"cancelled) can be extended")
    held = repo.list_trials(session, sweep_id)
    spec, changes = extended_spec(sweep, len(held), sum(int(t.samples or 0) for t in held),
                                  trials=trials, budget=budget, space=space)
    message = f"sweep extended{f' by {by}' if by else ''}: " + "; ".join(changes) + "; queued again"
    payload = {"was": sweep.state, "trials": trials, "budget": budget, "space": dict(space) if space else None,
               "num_trials": spec.search.num_trials, "changes": changes}
    done = repo.extend_sweep(session, sweep_id, spec.to_stored(), message=message, payload=payload)
    if done is None:  # it changed state meanwhile
        current = repo.get_sweep(session, sweep_id)
        raise ExtendConflict(f"sweep {sweep_id!r} is {current.state if current else 'gone'}: only a finished sweep "
                             f"can be extended")
    return done
