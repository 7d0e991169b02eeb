"""A trial's full budget: the ``budget:`` section, or each candidate of a searched ``budget.*``
key, in samples or optimizer steps at a given effective batch size; and the sweep's own budget,
``search.compute_budget`` (``ComputeBudget``), for budget-first sweeps."""

from __future__ import annotations

import itertools
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sweepd.spec.space import Domains
from trainer.config import Budget


def tidy(value: float) -> float:
    """Whole floats as ints (1024.0 -> 1024), for messages and configs."""
    return int(value) if float(value).is_integer() else value


def count_lines(paths: list[str]) -> int | None:
    """Non-blank lines in the files (None when one cannot be read)."""
    total = 0
    for p in paths:
        try:
            with open(p, "rb") as fh:
                total += sum(1 for line in fh if line.strip())
        except OSError:
            return None
    return total


def budgets_of(budget: Budget | None, domains: Domains) -> list[Budget]:
    """Every full budget a trial can have: ``budget``, or each combination of the candidates of
    the searched ``budget.*`` keys (which replace the section)."""
    searched = [(p.split(".", 1)[1], d.candidates()) for _, (p, d) in domains.items() if p.startswith("budget.")]
    if not searched:
        return [budget] if budget is not None else []
    out = []
    for combo in itertools.product(*[vals for _, vals in searched]):
        try:
            out.append(Budget(**dict(zip([k for k, _ in searched], combo))))
        except ValidationError:
            pass
    return out


def full_budget(budgets: list[Budget], batch: int, unit: str, n_train: int | None) -> float | None:
    """The largest of ``budgets`` at this batch size, in ``unit`` (samples or steps); None when
    it is unknown (an epochs budget and no line count)."""
    best = None
    for b in budgets:
        if b.max_steps is not None:
            steps = b.max_steps
        else:
            total = b.max_samples if b.max_samples is not None else (b.epochs * n_train if n_train is not None else None)
            if total is None:
                return None
            steps = max(1, int(total // batch))
        value = steps if unit == "steps" else steps * batch
        best = value if best is None else max(best, value)
    return best


# A compute-budget sweep without `num_trials` launches trials until the budget is spent; this is
# its trial cap then (a safety net, not a plan). A spec that sets num_trials keeps it as its cap.
BUDGET_TRIAL_CAP = 1000


class ComputeBudget(BaseModel):
    """``search.compute_budget``: the compute a sweep may spend, in exactly one unit.

    ``samples``: training samples seen, summed over every trial (a plain integer means samples).
    ``gpu_hours``: trial seconds x resources.gpus_per_worker x resources.workers_per_trial / 3600,
    summed over every trial (GPU specs only). See sweepd/engine/budget.py for how it is spent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: Annotated[int, Field(ge=1)] | None = None
    gpu_hours: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _plain_number(cls, data: Any) -> Any:
        if isinstance(data, bool):
            raise ValueError("expected {samples: N}, {gpu_hours: H} or a plain number of samples")
        return {"samples": data} if isinstance(data, (int, float)) else data

    @model_validator(mode="after")
    def _one_unit(self) -> "ComputeBudget":
        if (self.samples is None) == (self.gpu_hours is None):
            raise ValueError("give exactly one of samples, gpu_hours (a plain number means samples)")
        return self

    @property
    def unit(self) -> str:
        return "samples" if self.samples is not None else "gpu_hours"

    @property
    def total(self) -> float:
        return self.samples if self.samples is not None else self.gpu_hours
