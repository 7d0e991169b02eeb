"""Sweeps sharing one cluster on the dashboard (issue 16): the sweeps list shows the queue in the
order the sweeps start (high before normal before low, then oldest first) with each one's place,
and for each running sweep its priority, its share (running trials of the supervisor's limit, or
of max_concurrent without one) and what it waits for; the sweep page shows the same, and a tab
signed in to act changes the priority there."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Env, screenshot
from tests.browser.support import add_trial, ago, demo_spec
from tests.browser.test_dashboard import wait_rendered

SHARE_WAIT = "its fair share of the cluster: 3 of 6 trial slots"
SLOT_WAIT = "a sweep slot: 2 of 2 running"


@dataclass
class Cluster:
    queue: list[str]  # the queued sweeps seeded here, in the order they must start
    low: str  # the last of them
    limited: str  # running, high, 3 running trials of a limit of 3, waiting for its fair share
    unlimited: str  # running, normal, 1 running trial, no limit (max_concurrent 2)


def _queued(s, name: str, priority: str, minutes_ago: float) -> str:
    from sweepd.store import repo
    from sweepd.store.models import Sweep

    sid = repo.create_sweep(s, name=name, spec=demo_spec(name, priority=priority)).id
    s.get(Sweep, sid).created_at = ago(minutes_ago)
    repo.set_share(s, sid, trial_limit=None, waiting_for=SLOT_WAIT)
    return sid


def _running(s, name: str, priority: str, running: int, *, trial_limit: int | None, waiting_for: str | None) -> str:
    from sweepd.store import repo
    from sweepd.store.models import Sweep

    sid = repo.create_sweep(s, name=name, spec=demo_spec(name, priority=priority, search={"max_concurrent": 2})).id
    s.get(Sweep, sid).created_at = ago(15)
    repo.set_sweep_state(s, sid, "running")
    for n in range(running):
        add_trial(s, sid, n, state="running", batch=16, lr=3e-4 * (n + 1), steps=20)
    add_trial(s, sid, running, state="completed", batch=16, lr=1e-4, steps=64, objective=1.4)
    repo.set_share(s, sid, trial_limit=trial_limit, waiting_for=waiting_for)
    return sid


@pytest.fixture
def cluster(env: Env) -> Iterator[Cluster]:
    from sweepd.store import session_scope
    from sweepd.store.models import Sweep

    with session_scope(env.sessionmaker) as s:
        # submitted in this order (oldest first); they must start high, high, normal, normal, low
        low = _queued(s, "q-low-oldest", "low", 300)
        normal_old = _queued(s, "q-normal-old", "normal", 200)
        normal_new = _queued(s, "q-normal-new", "normal", 100)
        high_old = _queued(s, "q-high-old", "high", 50)
        high_new = _queued(s, "q-high-new", "high", 20)
        limited = _running(s, "shared-high", "high", 3, trial_limit=3, waiting_for=SHARE_WAIT)
        unlimited = _running(s, "shared-normal", "normal", 1, trial_limit=None, waiting_for=None)
    out = Cluster(queue=[high_old, high_new, normal_old, normal_new, low], low=low, limited=limited,
                  unlimited=unlimited)
    yield out
    with session_scope(env.sessionmaker) as s:  # the list tests count the seeded sweeps
        for sid in [*out.queue, limited, unlimited]:
            s.delete(s.get(Sweep, sid))


def test_the_list_shows_the_queue_in_start_order_and_each_share(page, env: Env, cluster: Cluster) -> None:
    page.goto("/")
    queue = page.get_by_test_id("queue")
    expect(queue).to_be_visible()
    items = page.get_by_test_id("queue-item")
    expect(items.filter(has_text="q-low-oldest")).to_have_count(1)
    shown = items.evaluate_all("els => els.map(e => [e.dataset.sweepId, Number(e.dataset.position)])")
    ids = [sid for sid, _ in shown]
    # every queued sweep, in start order: positions 1, 2, 3, ... down the card
    assert [pos for _, pos in shown] == list(range(1, len(shown) + 1)), shown
    # high before normal before low, then oldest first (sweeps other tests left queued are newer)
    assert [sid for sid in ids if sid in cluster.queue] == cluster.queue
    assert ids[:4] == cluster.queue[:4] and ids[-1] == cluster.low, ids
    first = items.first
    expect(first.get_by_test_id("queue-position")).to_have_text("#1")
    expect(first).to_contain_text("q-high-old")
    expect(first.get_by_test_id("priority")).to_have_text("high")
    expect(first.get_by_test_id("waiting-for")).to_have_text(f"waiting for {SLOT_WAIT}")
    expect(items.last.get_by_test_id("priority")).to_have_text("low")
    expect(items.last.get_by_test_id("queue-position")).to_have_text(f"#{len(shown)}")

    # the table: a queued sweep's place; a running sweep's priority, share and what it waits for
    row = page.locator(f'[data-testid=sweep-row][data-sweep-id="{cluster.queue[2]}"]')
    expect(row.get_by_test_id("share")).to_contain_text("normal")
    expect(row.get_by_test_id("queue-position")).to_have_text("#3 in the queue")
    limited = page.locator(f'[data-testid=sweep-row][data-sweep-id="{cluster.limited}"]').get_by_test_id("share")
    expect(limited.get_by_test_id("priority")).to_have_text("high")
    expect(limited.get_by_test_id("share-text")).to_have_text("3 of 3 trials")
    expect(limited.get_by_test_id("share-text")).to_have_attribute("title", "running trials of its fair share of "
                                                                            "the cluster (3 trial slots)")
    expect(limited.get_by_test_id("waiting-for")).to_have_text(f"waiting for {SHARE_WAIT}")
    expect(limited.get_by_test_id("queue-position")).to_have_count(0)
    unlimited = page.locator(f'[data-testid=sweep-row][data-sweep-id="{cluster.unlimited}"]').get_by_test_id("share")
    expect(unlimited.get_by_test_id("priority")).to_have_text("normal")
    expect(unlimited.get_by_test_id("share-text")).to_have_text("1 of 2 trials")  # of max_concurrent
    expect(unlimited.get_by_test_id("waiting-for")).to_have_count(0)
    finished = page.locator(f'[data-testid=sweep-row][data-sweep-id="{env.seeded.succeeded}"]')
    expect(finished.get_by_test_id("share")).to_have_text("—")  # a finished sweep shares nothing
    screenshot(page, "list-queue-and-shares")


def test_the_sweep_page_shows_the_share_and_changes_the_priority(page, env: Env, cluster: Cluster) -> None:
    page.goto(f"/sweeps/{cluster.limited}")
    wait_rendered(page)
    line = page.get_by_test_id("sweep-share")
    expect(line).to_be_visible()
    expect(line.get_by_test_id("priority")).to_have_text("high")
    expect(line.get_by_test_id("share-text")).to_have_text("3 of 3 trials")
    expect(line).to_contain_text("(its share of the cluster)")
    expect(line.get_by_test_id("waiting-for")).to_have_text(f"waiting for {SHARE_WAIT}")
    screenshot(page, "sweep-share")

    # the last queued sweep (low, the oldest), raised to high by a tab signed in to act: now the
    # oldest high sweep, it starts first
    page.goto(f"/sweeps/{cluster.low}")
    wait_rendered(page)
    line = page.get_by_test_id("sweep-share")
    expect(line.get_by_test_id("priority")).to_have_text("low")
    expect(line.get_by_test_id("waiting-for")).to_have_text(f"waiting for {SLOT_WAIT}")
    expect(line.get_by_test_id("share-text")).to_have_count(0)
    select = page.get_by_test_id("priority-select")
    expect(select).to_be_visible()
    expect(select).to_have_value("low")
    select.select_option("high")
    expect(page.get_by_test_id("priority-msg")).to_have_text("Priority high.")
    expect(line.get_by_test_id("priority")).to_have_text("high")
    expect(line.get_by_test_id("queue-position")).to_have_text("#1 in the queue")  # the oldest high sweep

    from sweepd.store import repo, session_scope

    with session_scope(env.sessionmaker) as s:
        assert repo.get_sweep(s, cluster.low).priority == "high"
        changes = [e.message for e in repo.list_events(s, cluster.low, kind="info") if e.message.startswith("priority")]
    assert changes == ["priority low -> high, set with token 'browser-tests'"]

    page.goto("/")
    first = page.get_by_test_id("queue-item").first
    expect(first).to_have_attribute("data-sweep-id", cluster.low)


def test_a_finished_sweep_shows_no_share_and_no_priority_control(page, env: Env) -> None:
    page.goto(f"/sweeps/{env.seeded.succeeded}")
    wait_rendered(page)
    expect(page.get_by_test_id("sweep-state")).to_have_text("succeeded")
    expect(page.get_by_test_id("sweep-share")).to_be_hidden()
    expect(page.get_by_test_id("priority-select")).to_be_hidden()


def test_a_read_only_viewer_sees_the_share_but_no_priority_control(public_page, env: Env, cluster: Cluster) -> None:
    public_page.goto(f"/sweeps/{cluster.limited}")
    wait_rendered(public_page)
    expect(public_page.get_by_test_id("sweep-share").get_by_test_id("share-text")).to_have_text("3 of 3 trials")
    expect(public_page.get_by_test_id("priority-select")).to_be_hidden()
