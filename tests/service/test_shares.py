"""Fair shares of one cluster (issue 16): the pure decision (sweepd/service/shares.py)."""

from __future__ import annotations

import pytest

from sweepd.service.shares import Demand, fair_shares, trial_size

GPU_NODE = {"CPU": 64.0, "GPU": 8.0}
ONE_GPU = {"CPU": 1.0, "GPU": 1.0}


def limits(grants) -> dict[str, int]:
    return {k: g.trial_limit for k, g in grants.items()}


def test_two_normal_sweeps_on_8_gpus_get_4_each():
    grants = fair_shares([Demand("a", "normal", ONE_GPU, 8), Demand("b", "normal", ONE_GPU, 8)], GPU_NODE)
    assert limits(grants) == {"a": 4, "b": 4}
    assert all(g.fair_trials == pytest.approx(4) for g in grants.values())


def test_a_high_sweep_takes_twice_a_normal_share():
    grants = fair_shares([Demand("a", "normal", ONE_GPU, 8), Demand("b", "normal", ONE_GPU, 8),
                          Demand("h", "high", ONE_GPU, 8)], GPU_NODE)
    assert limits(grants) == {"a": 2, "b": 2, "h": 4}
    grants = fair_shares([Demand("l", "low", ONE_GPU, 8), Demand("h", "high", ONE_GPU, 8)], GPU_NODE)
    assert limits(grants) == {"l": 2, "h": 6} and grants["h"].fair_trials == pytest.approx(6.4)


def test_what_a_sweep_cannot_use_goes_to_the_others():
    # max_concurrent 1 (or one trial left): the rest of the cluster is the other sweep's
    grants = fair_shares([Demand("small", "high", ONE_GPU, 1), Demand("big", "normal", ONE_GPU, 16)], GPU_NODE)
    assert limits(grants) == {"small": 1, "big": 7}
    assert grants["small"].waiting_for is None  # runs all it can
    assert "7 of 8 trial slots" in grants["big"].waiting_for


def test_limits_never_add_up_to_more_than_the_cluster_holds():
    demands = [Demand(f"s{i}", p, {"CPU": c, "GPU": g}, 8)
               for i, (p, c, g) in enumerate([("low", 4, 1), ("normal", 16, 0), ("high", 1, 2), ("normal", 2, 1)])]
    grants = fair_shares(demands, GPU_NODE)
    for resource, have in GPU_NODE.items():
        assert sum(grants[d.sweep_id].trial_limit * d.per_trial[resource] for d in demands) <= have
    assert all(g.trial_limit >= 1 for g in grants.values())


def test_sweeps_sharing_fewer_slots_than_sweeps_take_turns_by_what_they_are_owed():
    four = [Demand(x, "normal", {"CPU": 1.0}, 4) for x in "abcd"]
    grants = fair_shares(four, {"CPU": 2.0})
    assert sorted(limits(grants).values()) == [0, 0, 1, 1]
    assert all(g.fair_trials == pytest.approx(0.5) for g in grants.values())
    assert "runs when its turn comes" in grants["a"].waiting_for or "runs when its turn comes" in grants["c"].waiting_for
    # the two that ran are ahead of their share now: the next turn is the others'
    turned = fair_shares(four, {"CPU": 2.0}, owed={"a": -5, "b": -5, "c": 5, "d": 5})
    assert limits(turned) == {"a": 0, "b": 0, "c": 1, "d": 1}


def test_a_trial_bigger_than_the_cluster_gets_no_slot_and_says_why():
    grants = fair_shares([Demand("gpu", "normal", ONE_GPU, 4)], {"CPU": 2.0})
    assert grants["gpu"].trial_limit == 0
    assert grants["gpu"].waiting_for == "a cluster that has what one trial needs (1 CPU, 1 GPU)"
    assert trial_size({"CPU": 1.0, "GPU": 0.0}, {"CPU": 4.0}) == 0.25


def test_a_sweep_alone_gets_all_it_can_use():
    grants = fair_shares([Demand("a", "low", {"CPU": 1.0}, 3)], {"CPU": 8.0})
    assert limits(grants) == {"a": 3} and grants["a"].waiting_for is None
