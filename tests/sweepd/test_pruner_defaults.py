"""Every pruner default is written once, in the pruner class: a spec that sets nothing builds
each pruner type with exactly the class's own constructor defaults."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from sweepd.pruners import DEFAULT_PRUNER_TYPE, PRUNERS, make_pruner, option_defaults
from sweepd.spec import Capacity, parse_spec

CONTEXT = {"max_t", "metric", "mode"}  # filled from the spec's budget and objective, not defaults


def minimal_spec(data: Path, pruner: dict | None) -> dict:
    (data / "train.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}, '
                                      '{"role": "assistant", "content": "hello"}]}\n' * 4)
    spec = {
        "name": "defaults",
        "model": {"path": "builtin:tiny"},
        "data": {"train": [{"path": str(data / "train.jsonl")}]},
        "search": {"space": {"learning_rate": {"loguniform": [1.0e-5, 1.0e-3]}}},
        "budget": {"max_samples": 1_000_000},
        "objective": {"metric": "train_loss"},
    }
    if pruner is not None:
        spec["pruner"] = pruner
    return spec


def constructor_defaults(cls) -> dict:
    """Read straight off the constructors, independently of ``option_defaults``."""
    out = {}
    for klass in reversed(cls.__mro__):
        if "__init__" in vars(klass) and klass is not object:
            for name, p in inspect.signature(klass.__init__).parameters.items():
                if p.default is not inspect.Parameter.empty:
                    out[name] = p.default
    return out


@pytest.mark.parametrize("kind", sorted(PRUNERS))
def test_a_spec_with_nothing_set_builds_the_class_defaults(tmp_path: Path, kind: str):
    spec = parse_spec(minimal_spec(tmp_path, {"type": kind}), data_roots=[tmp_path], capacity=Capacity.unlimited())
    pruner = make_pruner(spec.pruner_config())
    assert isinstance(pruner, PRUNERS[kind])
    if kind == "none":
        return
    built = pruner.config()
    defaults = constructor_defaults(PRUNERS[kind])
    assert defaults == option_defaults(kind)
    for option, default in defaults.items():
        if option in CONTEXT:
            continue
        if option == "interval" and default is None:  # median: None means "every grace"
            assert built["interval"] == built["grace"]
            continue
        assert built[option] == default, option


def test_no_pruner_section_means_the_default_type(tmp_path: Path):
    spec = parse_spec(minimal_spec(tmp_path, None), data_roots=[tmp_path], capacity=Capacity.unlimited())
    assert spec.pruner.type == DEFAULT_PRUNER_TYPE
    pruner = make_pruner(spec.pruner_config())
    assert isinstance(pruner, PRUNERS[DEFAULT_PRUNER_TYPE])
    if DEFAULT_PRUNER_TYPE != "none":  # the benchmark's pick: ASHA on the learned signal
        assert pruner.signal_name == option_defaults(DEFAULT_PRUNER_TYPE)["signal"]


def test_the_factory_fills_unset_options_from_the_class():
    pruner = make_pruner({"type": "asha", "grace": 64, "signal": None})
    assert pruner.grace == 64 and pruner.signal_name == option_defaults("asha")["signal"]
    assert make_pruner({"type": "median", "grace": 64}).interval == 64
