"""Early-signal pruners: pure, event-fed decision code (no Ray), one strategy per module.

    pruner = make_pruner({"type": "asha", "grace": 1024, "max_t": 8192})  # the rest: defaults
    decision = pruner.on_result("trial-1", {"step": 8, "samples": 1024, "loss": 2.3,
                                            "grad_norm": 1.1})
    if decision and decision.stop: ...
    pruner.on_trial_complete("trial-1", objective=1.87)

The Ray Tune adapter is ``sweepd.engine.tune_scheduler.EarlySignalScheduler``.
"""

from sweepd.pruners.asha import ASHAPruner
from sweepd.pruners.base import Decision, Pruner
from sweepd.pruners.factory import DEFAULT_PRUNER_TYPE, PRUNERS, make_pruner, option_defaults
from sweepd.pruners.median import MedianPruner
from sweepd.pruners.nop import NopPruner
from sweepd.pruners.signals import SIGNALS

__all__ = [
    "ASHAPruner",
    "DEFAULT_PRUNER_TYPE",
    "Decision",
    "MedianPruner",
    "NopPruner",
    "PRUNERS",
    "Pruner",
    "SIGNALS",
    "make_pruner",
    "option_defaults",
]
