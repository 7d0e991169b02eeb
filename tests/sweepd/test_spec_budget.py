"""``search.compute_budget``: its syntax, the trial cap it implies, the named check, and the stored
form. A spec without it means exactly what it meant before."""

from __future__ import annotations

import pytest

from sweepd.spec import Capacity, SweepSpec, parse_spec
from sweepd.spec.budget import BUDGET_TRIAL_CAP
from tests.sweepd.test_spec import CAP, DELETE, errors_of, patched, root  # noqa: F401 - root is a fixture

GPU = {"resources.gpus_per_worker": 1}
GPU_CAP = Capacity(cpus=4, gpus=2)


@pytest.mark.parametrize("written, samples", [(200_000, 200_000), ({"samples": 200_000}, 200_000), (2048.0, 2048)])
def test_a_plain_number_or_samples_is_a_samples_budget(root, written, samples):
    spec = parse_spec(patched({"search.compute_budget": written, "search.num_trials": DELETE}), capacity=CAP)
    cb = spec.search.compute_budget
    assert (cb.unit, cb.total, cb.samples, cb.gpu_hours) == ("samples", samples, samples, None)
    assert spec.search.num_trials == spec.planned_trials == BUDGET_TRIAL_CAP  # only a cap now


def test_num_trials_given_with_a_budget_stays_the_cap(root):
    spec = parse_spec(patched({"search.compute_budget": 5000, "search.num_trials": 12}), capacity=CAP)
    assert spec.search.num_trials == 12


def test_a_spec_without_a_budget_means_what_it_meant(root):
    spec = parse_spec(patched({"search.num_trials": DELETE}), capacity=CAP)
    assert spec.search.compute_budget is None and spec.search.num_trials == 10


def test_gpu_hours_on_a_gpu_spec(root):
    spec = parse_spec(patched({"search.compute_budget": {"gpu_hours": 12}, **GPU}), capacity=GPU_CAP)
    assert (spec.search.compute_budget.unit, spec.search.compute_budget.total) == ("gpu_hours", 12)


@pytest.mark.parametrize("changes, path, fragment", [
    ({"search.compute_budget": {"gpu_hours": 12}}, "search.compute_budget.gpu_hours",
     "resources.gpus_per_worker is 0 (a CPU-only sweep): give search.compute_budget in samples"),
    ({"search.compute_budget": 1000}, "search.compute_budget",
     "1,000 samples is less than one full trial (1,024 samples at most): no trial could start"),
    ({"search.compute_budget": {"samples": 5000, "gpu_hours": 1}}, "search.compute_budget",
     "give exactly one of samples, gpu_hours"),
    ({"search.compute_budget": {}}, "search.compute_budget", "give exactly one of samples, gpu_hours"),
    ({"search.compute_budget": 0}, "search.compute_budget.samples", "greater than or equal to 1"),
    ({"search.compute_budget": {"gpu_hours": -1}}, "search.compute_budget.gpu_hours", "greater than 0"),
    ({"search.compute_budget": {"tokens": 10}}, "search.compute_budget.tokens", ""),
    ({"search.compute_budget": True}, "search.compute_budget", "a plain number of samples"),
    ({"search.compute_budget": "lots"}, "search.compute_budget", ""),
], ids=["gpu_hours_on_cpu", "smaller_than_a_trial", "two_units", "no_unit", "zero", "negative_hours",
        "unknown_unit", "bool", "string"])  # fmt: skip
def test_a_bad_budget_names_its_field(root, changes, path, fragment):
    problems = errors_of(patched(changes))
    assert any(p == path and fragment in m for p, m in problems), problems


def test_the_budget_check_reads_every_batch_size_and_searched_budget(root):
    """A searched budget.max_samples: the largest full trial is the one that must fit."""
    raw = patched({"search.compute_budget": 3000,
                   "search.space.budget.max_samples": {"choice": [1024, 4096]}, "pruner.grace": 64})
    (path, msg), = errors_of(raw)
    assert path == "search.compute_budget" and "(4,096 samples at most)" in msg
    raw = patched({"search.compute_budget": 5000,
                   "search.space.budget.max_samples": {"choice": [1024, 4096]}, "pruner.grace": 64})
    assert parse_spec(raw, capacity=CAP).search.compute_budget.samples == 5000


def test_the_budget_is_stored_and_read_back(root):
    spec = parse_spec(patched({"search.compute_budget": 5000, "search.num_trials": DELETE}), capacity=CAP)
    doc = spec.to_stored()
    assert doc["search"]["compute_budget"] == {"samples": 5000, "gpu_hours": None}
    assert doc["search"]["num_trials"] == BUDGET_TRIAL_CAP  # the resolved cap is what ran
    again = SweepSpec.from_stored(doc)
    assert again.search == spec.search
