"""A sweep whose data preflight still runs (state `validating`) reads "validating data" in the
sweeps list and on its page, where it can be cancelled like a queued one."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import Env
from tests.browser.support import demo_spec
from tests.browser.test_dashboard import wait_rendered


def test_the_list_and_the_sweep_page_say_validating_data(page, env: Env) -> None:
    from sweepd.store import repo, session_scope
    from sweepd.store.models import Sweep

    with session_scope(env.sessionmaker) as s:  # as POST /sweeps leaves it while the preflight runs
        sid = repo.create_sweep(s, name="validating-page", spec=demo_spec("validating-page", num_trials=2),
                                state="validating").id
    try:
        page.goto("/")
        row = page.locator(f'[data-testid="sweep-row"][data-sweep-id="{sid}"]')
        expect(row.locator(".badge")).to_have_text("validating data")
        expect(row).to_have_attribute("data-state", "validating")
        expect(page.get_by_test_id("state-filter").locator('option[value="validating"]')).to_have_text("validating data")

        page.goto(f"/sweeps/{sid}")
        wait_rendered(page)
        expect(page.get_by_test_id("sweep-state")).to_have_text("validating data")
        expect(page.get_by_test_id("validating-note")).to_contain_text("trials start once it passes")
    finally:
        with session_scope(env.sessionmaker) as s:  # the list tests count the seeded sweeps
            s.delete(s.get(Sweep, sid))
