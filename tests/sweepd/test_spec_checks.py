"""The checks across sections (``sweepd.spec.checks``), one by one: each named check, given a
spec that breaks only its rule, names the field; on a good spec every check is silent."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweepd.spec.capacity import Context
from sweepd.spec.checks import (
    CHECKS,
    Sections,
    check_batch_sizes,
    check_pruner_grace,
    check_trial_config,
    run_checks,
)
from sweepd.spec.loading import valid_sections
from tests.sweepd.test_spec import CAP, DELETE, SPACE, good, patched, root  # noqa: F401 - root is a fixture

# check -> (a spec breaking its rule, the field path in the problem, a fragment of the message)
BROKEN = {
    "check_space": ({f"{SPACE}.learnin_rate": {"choice": [1e-3]}}, f"{SPACE}.learnin_rate", "not a trial-config field"),
    "check_grid": ({"search.algorithm": "grid"}, f"{SPACE}.learning_rate", "grid search needs {choice: [...]}"),
    "check_fixed": ({"fixed.hparams": {"learning_rate": 1e-3}}, "fixed.hparams.learning_rate",
                    "also in search.space.learning_rate"),
    "check_batch_sizes": ({"resources.workers_per_trial": 4, f"{SPACE}.effective_batch_size": {"choice": [2, 8]}},
                          f"{SPACE}.effective_batch_size.choice[0]", "batch size 2 is smaller than"),
    "check_objective_metric": ({"data.eval": []}, "objective.metric", "data.eval is empty"),
    "check_pruner_signal": ({"pruner.signal": "objective"}, "pruner.signal", "set fixed.eval.every_steps"),
    "check_pruner_grace": ({"pruner.grace": 1024}, "pruner.grace", "is not below the trial budget"),
    "check_compute_budget": ({"search.compute_budget": 1000}, "search.compute_budget", "less than one full trial"),
    "check_data_paths": ({"data.train.0.path": "../../etc/passwd"}, "data.train[0].path", "outside the data roots"),
    "check_model_path": ({"model.path": "models/empty"}, "model.path", "has no config.json"),
    "check_capacity": ({"resources.gpus_per_worker": 1}, "resources.gpus_per_worker", "the cluster has 0"),
    "check_fit": ({"resources.gpus_per_worker": 1, "resources.gpu_memory_gb": 1}, "resources",
                  "more than the 1.0 GiB of resources.gpu_memory_gb"),
}  # fmt: skip


def sections(raw: dict) -> Sections:
    return Sections.of(valid_sections(raw))


def context(root: Path) -> Context:
    return Context(capacity=CAP, base_dir=root)


def test_every_check_has_a_case():
    assert [c.__name__ for c in CHECKS] == list(BROKEN)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_a_check_names_the_field(root, check):
    changes, path, fragment = BROKEN[check.__name__]
    problems = list(check(sections(patched(changes)), context(root)))
    assert any(p == path and fragment in m for p, m in problems), problems
    assert list(check(sections(good()), context(root))) == []


def test_a_good_spec_passes_every_check(root):
    s = sections(good())
    assert run_checks(s, context(root)) == [] and list(check_trial_config(s, context(root))) == []


def test_a_check_skips_a_section_that_did_not_validate(root):
    s = sections(patched({"resources.zero_stage": 9, "pruner.type": "bogus", "data": DELETE}))
    assert s.pruner is None and s.data is None
    assert run_checks(s, context(root)) == []


def test_the_batch_size_check_reads_fixed_too(root):
    raw = patched({"resources.workers_per_trial": 4, f"{SPACE}.effective_batch_size": DELETE,
                   "fixed.hparams": {"effective_batch_size": 2}})
    problems = list(check_batch_sizes(sections(raw), context(root)))
    assert [p for p, _ in problems] == ["fixed.hparams.effective_batch_size"]


def test_the_trial_config_check_explains_what_the_others_missed(root):
    raw = patched({"resources.workers_per_trial": 4, f"{SPACE}.effective_batch_size": {"choice": [2, 8]}})
    problems = list(check_trial_config(sections(raw), context(root)))
    assert problems and all(p == "trial config" for p, _ in problems)
    assert any("must be at least resources.num_workers (4)" in m for _, m in problems)


def test_a_grace_left_to_the_class_is_not_the_users_mistake(root):
    """With grace left out, the class's own grace (ASHA: 1024) that does not fit the budget (1024
    samples here) is no error: the pruner stops nothing there and the plan says so. A grace the
    user set that does not fit is an error."""
    raw = patched({"pruner": {"type": "asha"}})
    assert list(check_pruner_grace(sections(raw), context(root))) == []
    raw = patched({"pruner": {"type": "asha", "grace": 1024}})
    problems = list(check_pruner_grace(sections(raw), context(root)))
    assert problems == [("pruner.grace", "1,024 samples is not below the trial budget "
                                         "(1,024 samples at most): no trial could ever be stopped")]
