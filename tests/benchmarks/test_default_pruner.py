"""The service's default pruner is the one the stored pruner benchmark picked (issue 7).

`make bench-pruning` writes its pick to benchmarks/results/pruning.json (``choice.default``). A
rerun that picks another pruner fails this test until the pruner defaults follow it: the default
type in ``sweepd.pruners.factory`` and the default signal in the pruner classes.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.pruning.simulate import PRUNERS, SWEEPD_SIGNALS
from sweepd.pruners import option_defaults
from sweepd.spec import PrunerSpec

RESULT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "pruning.json"

# benchmark name -> the pruner section that runs it in the service
AS_SPEC = {
    "none": {"type": "none"},
    "asha_loss": {"type": "asha", "signal": "loss"},
    **{name: {"type": "asha", "signal": signal} for name, signal in SWEEPD_SIGNALS.items()},
}


def stored_choice() -> dict:
    return json.loads(RESULT.read_text())["choice"]


def test_every_benchmarked_pruner_has_a_service_spelling():
    assert set(PRUNERS) - {"median_loss", "hyperband_loss"} <= set(AS_SPEC)


def test_default_pruner_is_the_benchmark_pick():
    choice = stored_choice()
    assert choice["default"] in AS_SPEC, f"the benchmark picked {choice['default']!r}, which the service cannot run"
    default = PrunerSpec()
    wanted = AS_SPEC[choice["default"]]
    assert {key: getattr(default, key) for key in wanted} == wanted, choice["why"]


def test_asking_for_asha_without_a_signal_gets_the_best_asha_signal_measured():
    """Among the ASHA signals the service offers, the default signal is the one with the lowest
    regret at 30% compute on the bank."""
    rows = stored_choice()["rows"]
    asha_signals = {AS_SPEC[name]["signal"]: rows[name]["regret_at_30pct"]
                    for name in rows if AS_SPEC.get(name, {}).get("type") == "asha"}
    assert option_defaults("asha")["signal"] == min(asha_signals, key=asha_signals.get)
    assert PrunerSpec(type="asha").on_axis().signal_name == option_defaults("asha")["signal"]
