"""The calibration view reads the sweep's own pruner (``make_pruner``): its rungs, time axis,
window and smoother, so it agrees with the decisions the pruner took."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.analysis import _pruner_axis, _value_at
from sweepd.spec import Capacity, parse_spec
from tests.api.factories import spec_dict


def spec_with(data: Path, pruner: dict | None):
    raw = spec_dict(data)
    if pruner is None:
        raw.pop("pruner")
    else:
        raw["pruner"] = pruner
    return parse_spec(raw, data_roots=[data], capacity=Capacity.unlimited())


def test_the_axis_follows_the_pruner(data_root: Path):
    # budget 1024 samples: ASHA's rungs at 64, 128, 256; median's every 100 from 64
    asha = spec_with(data_root, {"type": "asha", "grace": 64, "reduction_factor": 2, "window": 3, "smooth": "mean"})
    assert _pruner_axis(asha) == ([64, 128, 256], "samples", 3, "mean")
    median = spec_with(data_root, {"type": "median", "grace": 64, "interval": 100})
    assert _pruner_axis(median) == ([64, 164, 264], "samples", 5, "median")
    # on the steps axis the budget is 1024 samples / batch 8 = 128 steps at most
    steps = spec_with(data_root, {"type": "median", "grace": 48, "time_attr": "steps"})
    assert _pruner_axis(steps) == ([48, 96], "step", 5, "median")


def test_a_sweep_without_a_pruner_gets_ashas_default_rungs(data_root: Path):
    # ASHA's own defaults: grace 1024, reduction factor 3; the budget (1024 samples) ends at the
    # first rung, which is kept alone
    assert _pruner_axis(spec_with(data_root, None)) == ([1024], "samples", 5, "median")
    assert _pruner_axis(None) == ([1024, 3072, 9216], "samples", 5, "median")


@pytest.mark.parametrize("smooth, expected", [("median", 1.0), ("mean", 4.0)])
def test_the_value_at_a_rung_is_smoothed_like_the_pruner(smooth, expected):
    series = [(10.0, 1.0), (20.0, 1.0), (30.0, 10.0), (40.0, 99.0)]
    # the 3 values ending at the point nearest to 31 (30): 1, 1, 10
    assert _value_at(series, 31, 3, smooth) == pytest.approx(expected)
