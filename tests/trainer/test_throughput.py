"""Throughput and memory in the step lines (trainer/throughput.py): the peak-FLOP/s table, MFU, and
the three keys every step line carries."""

from __future__ import annotations

import math

import pytest
import torch

from trainer import throughput
from trainer.loop import run_trial
from trainer.reporting import STEP_KEYS, InMemoryReporter


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12),  # SXM
    ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12),
    ("NVIDIA GH200 480GB", 989e12),
    ("NVIDIA H20", 148e12),
    ("NVIDIA A100-SXM4-80GB", 312e12),
    ("NVIDIA A100-PCIE-40GB", 312e12),
    ("NVIDIA A10G", 125e12),
    ("NVIDIA A10", 125e12),
    ("NVIDIA L4", 121e12),
    ("NVIDIA L40S", 362e12),
    ("NVIDIA GeForce RTX 4090", 165e12),
])
def test_peak_flops_from_the_device_name(name, peak, monkeypatch):
    monkeypatch.delenv("SWEEPD_PEAK_FLOPS", raising=False)
    assert throughput.peak_flops(name) == peak


def test_unknown_devices_and_cpu_have_no_peak(monkeypatch):
    monkeypatch.delenv("SWEEPD_PEAK_FLOPS", raising=False)
    for name in ("Tesla V100-SXM2-32GB", "Tesla T4", "Some Future Accelerator", "", None):
        assert throughput.peak_flops(name) is None, name
    assert throughput.device_peak_flops(torch.device("cpu")) is None
    assert throughput.mfu(1_000_000, 5000.0, None) is None


def test_the_environment_sets_the_peak_of_an_unknown_gpu(monkeypatch):
    monkeypatch.setenv("SWEEPD_PEAK_FLOPS", "2e14")
    assert throughput.peak_flops("Some Future Accelerator") == 2e14
    assert throughput.peak_flops(None) is None  # CPU stays without
    monkeypatch.setenv("SWEEPD_PEAK_FLOPS", "not a number")
    assert throughput.peak_flops("NVIDIA L4") == 121e12


def test_mfu_is_six_params_tokens_over_the_peak_of_all_workers():
    # a 1.1B model at 100k tokens/s on one H100 SXM: 6 * 1.1e9 * 1e5 / 989e12 = 0.6673
    assert throughput.mfu(1_100_000_000, 100_000.0, 989e12) == pytest.approx(0.66734, rel=1e-4)
    # two workers at the same total tokens/s: half the utilisation
    assert throughput.mfu(1_100_000_000, 100_000.0, 989e12, workers=2) == pytest.approx(0.66734 / 2, rel=1e-4)


def test_parameters_are_counted_once_when_shared():
    lin = torch.nn.Linear(4, 3)  # 12 + 3
    model = torch.nn.Sequential(lin, lin)
    assert throughput.count_params(model) == 15


def test_cpu_peak_memory_is_the_process_peak_rss():
    gb = throughput.peak_memory_gb(torch.device("cpu"))
    assert 0.01 < gb < 1000  # a Python process with torch loaded: tens of MB at least


def test_every_step_line_has_throughput_and_memory(trial_cfg):
    rep = InMemoryReporter()
    run_trial(trial_cfg(budget={"max_steps": 2}), rep)
    assert len(rep.steps) == 2
    for line in rep.steps:
        assert set(STEP_KEYS) <= set(line)
        assert {"tokens_per_second", "mfu", "peak_memory_gb"} <= set(line)
        assert line["mfu"] is None  # CPU: no peak FLOP/s to compare with
        assert line["tokens_per_second"] > 0 and math.isfinite(line["tokens_per_second"])
        assert line["peak_memory_gb"] > 0
    # this step's real tokens over this step's seconds (`tokens` and `seconds` are cumulative)
    one, two = rep.steps
    assert one["tokens"] / one["seconds"] <= one["tokens_per_second"] <= 1.5 * one["tokens"] / one["seconds"]
    per_step = (two["tokens"] - one["tokens"]) / (two["seconds"] - one["seconds"])
    assert 0.67 * per_step <= two["tokens_per_second"] <= 1.5 * per_step
