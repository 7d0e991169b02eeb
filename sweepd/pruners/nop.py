"""The pruner that never stops a trial (``type: none``): every trial runs its full budget."""

from __future__ import annotations

from sweepd.pruners.base import Decision, Pruner


class NopPruner(Pruner):
    name = "none"

    def on_result(self, trial_id: str, result: dict) -> Decision | None:
        return None

    def describe(self) -> str:
        return "no pruning"
