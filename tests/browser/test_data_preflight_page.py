"""The sweep page says what the data preflight found: how many samples, and how many over-long
ones were dropped or truncated (the sweep's "data" event)."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import Env
from tests.browser.support import add_trial, demo_spec
from tests.browser.test_dashboard import wait_rendered


def test_the_sweep_page_shows_the_dropped_count(page, env: Env) -> None:
    from sweepd.store import repo, session_scope
    from sweepd.store.models import Sweep

    with session_scope(env.sessionmaker) as s:
        sid = repo.create_sweep(s, name="preflight-page", spec=demo_spec("preflight-page", num_trials=1)).id
        repo.set_sweep_state(s, sid, "running")
        add_trial(s, sid, 0, state="completed", batch=16, lr=3e-4, steps=32, objective=1.4)
        repo.add_preflight_event(s, sid, {"totals": {"train_samples": 1200, "dropped_overlong": 7, "truncated": 0}})
    try:
        page.goto(f"/sweeps/{sid}")
        wait_rendered(page)
        expect(page.get_by_test_id("data-preflight")).to_have_text(
            "Data preflight: 1,200 train samples, 7 over-long dropped, 0 truncated.")
        page.goto(f"/sweeps/{env.seeded.succeeded}")  # a sweep without a preflight event: no line
        wait_rendered(page)
        expect(page.get_by_test_id("data-preflight")).to_be_hidden()
    finally:
        with session_scope(env.sessionmaker) as s:  # the list tests count the seeded sweeps
            s.delete(s.get(Sweep, sid))
