"""Early-signal pruners: pure, event-fed decision code (no Ray), one strategy per module.

    pruner = make_pruner({"type": "asha", "signal": "grad_norm", "grace": 1024,
                          "reduction_factor": 3, "max_t": 8192})
    decision = pruner.on_result("trial-1", {"step": 8, "samples": 1024, "loss": 2.3,
                                            "grad_norm": 1.1})
    if decision and decision.stop: ...
    pruner.on_trial_complete("trial-1", objective=1.87)

The Ray Tune adapter is ``sweepd.engine.tune_scheduler.EarlySignalScheduler``.
"""

from sweepd.pruners.asha import ASHAPruner
from sweepd.pruners.base import Decision, Pruner
from sweepd.pruners.factory import PRUNERS, make_pruner
from sweepd.pruners.median import MedianPruner
from sweepd.pruners.nop import NopPruner
from sweepd.pruners.signals import SIGNALS

__all__ = [
    "ASHAPruner",
    "Decision",
    "MedianPruner",
    "NopPruner",
    "PRUNERS",
    "Pruner",
    "SIGNALS",
    "make_pruner",
]
