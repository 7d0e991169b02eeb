"""The service's default pruner is the one the stored pruner benchmark picked (issues 7, 12).

`make bench-pruning` writes its pick to benchmarks/results/pruning.json (``choice.default``, and
``choice.asha_signal`` for ``type: asha`` without a signal), measured on every bank. A rerun that
picks another pruner fails this test until the pruner defaults follow it: the default type in
``sweepd.pruners.factory`` and the default signal in the pruner classes. A default of ``learned``
is spelled ``{"type": "asha", "signal": "learned"}`` in a spec.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.pruning.bench import ASHA_SIGNALS, REFERENCES, SERVICE_PRUNERS, qualification
from benchmarks.pruning.simulate import HISTORY_PRUNERS, PRUNERS, SWEEPD_SIGNALS
from sweepd.pruners import option_defaults
from sweepd.spec import PrunerSpec

RESULT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "pruning.json"

# benchmark name -> the pruner section that runs it in the service
AS_SPEC = {
    "none": {"type": "none"},
    "asha_loss": {"type": "asha", "signal": "loss"},
    **{name: {"type": "asha", "signal": signal} for name, signal in SWEEPD_SIGNALS.items()},
}


def stored() -> dict:
    return json.loads(RESULT.read_text())


def resolved(spec: PrunerSpec) -> dict:
    """The pruner a spec gets, as its type and (for ASHA) the signal its class resolves."""
    if spec.type == "none":
        return {"type": "none"}
    return {"type": spec.type, "signal": spec.on_axis().signal_name}


def test_every_benchmarked_pruner_has_a_service_spelling():
    assert set(PRUNERS + HISTORY_PRUNERS) - {"median_loss", "hyperband_loss"} <= set(AS_SPEC)
    assert AS_SPEC["learned"] == {"type": "asha", "signal": "learned"}
    assert set(SERVICE_PRUNERS) <= set(AS_SPEC) and set(ASHA_SIGNALS) <= set(AS_SPEC)


def test_the_stored_result_covers_every_bank_and_pruner():
    data = stored()
    assert set(data["banks"]) >= {"curve_bank", "night1", "night2", "vit", "conformer"}
    for bank, b in data["banks"].items():
        assert set(PRUNERS) <= set(b["table"]), bank
        assert len(data["settings"]["seeds"]) >= 30
    assert {"learned_history", "learned_history_sweep"} <= set(data["banks"]["night2"]["table"])


def test_default_pruner_is_the_benchmark_pick():
    choice = stored()["choice"]
    assert choice["default"] in SERVICE_PRUNERS, f"the benchmark picked {choice['default']!r}, which the service cannot run"
    assert resolved(PrunerSpec()) == AS_SPEC[choice["default"]], choice["why"]


def test_the_pick_follows_the_rule_from_the_stored_tables():
    """Recompute the rule from the stored per-bank tables: a qualifying learned signal wins;
    else the qualifier (or, failing any, the candidate) with the lowest mean regret."""
    data = stored()
    tables = {b: {n: t for n, t in v["table"].items() if n not in HISTORY_PRUNERS} for b, v in data["banks"].items()}
    choice = data["choice"]
    quals = {n: qualification(tables, n)["qualifies"] for n in choice["candidates"]}
    assert sorted(n for n, ok in quals.items() if ok) == sorted(choice["qualifying"])
    rows = choice["rows"]
    if quals.get("learned"):
        assert choice["default"] == "learned"
    else:
        pool = [n for n, ok in quals.items() if ok] or choice["candidates"]
        assert choice["default"] == min(pool, key=lambda n: rows[n]["mean_regret"])
    assert set(REFERENCES) <= set(rows)


def test_asking_for_asha_without_a_signal_gets_the_asha_signal_the_benchmark_picked():
    """Among the ASHA signals the service offers, the default signal is the one the same rule picks."""
    choice = stored()["choice"]
    assert option_defaults("asha")["signal"] == choice["asha_signal"], choice["asha_signal_rule"]
    assert PrunerSpec(type="asha").on_axis().signal_name == choice["asha_signal"]
