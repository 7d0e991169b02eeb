"""`sweepd validate` says how a retried trial resumes: from a checkpoint every so many samples or
minutes (resources.checkpoint_every), or from step 0 (issue 13)."""

from __future__ import annotations

from sweepd.spec import parse_spec
from sweepd.spec.plan import describe_plan, format_plan
from tests.sweepd.test_spec import CAP, patched, root  # noqa: F401  (root: a fixture)


def test_the_plan_says_where_a_retried_trial_resumes(root):  # noqa: F811
    cases = [({"resources.checkpoint_every": {"samples": 2048}}, ", from a checkpoint every 2,048 samples"),
             ({"resources.checkpoint_every": {"minutes": 30}}, ", from a checkpoint every 30 minutes"),
             ({}, " (from step 0: no checkpoint_every)")]
    for change, words in cases:
        plan = describe_plan(parse_spec(patched({"resources.max_failures": 2, **change}), capacity=CAP))
        assert plan["resources"]["checkpoint_every"] == (next(iter(change.values())) if change else None)
        [line] = [ln for ln in format_plan(plan).splitlines() if ln.startswith("resources per trial")]
        assert line.endswith("up to 2 retries" + words), line
