"""A trial's full budget: the ``budget:`` section, or each candidate of a searched ``budget.*``
key, in samples or optimizer steps at a given effective batch size."""

from __future__ import annotations

import itertools

from pydantic import ValidationError

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
