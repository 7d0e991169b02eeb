"""The dashboard shows where a sweep's prior came from: the sweep page links the sweep that seeded
its study (and says it was extended); a trial page says the trial is the sweep's own and links
the study's prior."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import Env, screenshot
from tests.browser.support import add_trial, demo_spec
from tests.browser.test_dashboard import wait_rendered


def test_sweep_and_trial_pages_show_the_warm_start(page, env: Env) -> None:
    from sqlalchemy import update

    from sweepd.store import repo, session_scope
    from sweepd.store.models import Sweep

    source = env.seeded.succeeded
    with session_scope(env.sessionmaker) as s:
        sw = repo.create_sweep(s, name="nightly-baseline", spec=demo_spec("nightly-baseline", num_trials=2))
        sid = sw.id
        repo.set_sweep_state(s, sid, "running")
        add_trial(s, sid, 0, state="completed", batch=16, lr=3e-4, steps=64, objective=1.38)
        repo.record_warm_start(s, sid, source=source, details={
            "mode": "previous", "source": source, "trials_added": 6, "curves": 6,
            "message": f"warm start: 6 trials from sweep {source} added to the study; 6 curves to the pruner"})
        s.execute(update(Sweep).where(Sweep.id == sid).values(extensions=1))
        repo.set_sweep_state(s, sid, "succeeded")
    try:
        page.goto(f"/sweeps/{sid}")
        wait_rendered(page)
        line = page.get_by_test_id("warm-start")
        expect(line).to_be_visible()
        expect(line).to_contain_text(f"Warm start: 6 trials from sweep {source} seeded the study; 6 curves to the pruner.")
        expect(line).to_contain_text("Extended once")
        expect(page.get_by_test_id("warm-start-source")).to_have_attribute("href", f"/sweeps/{source}")
        screenshot(page, "sweep-warm-start")

        page.goto(f"/trials/{repo.trial_id_for(sid, 0)}")
        wait_rendered(page)
        expect(page.get_by_test_id("trial-origin")).to_have_text("own trial of this sweep")
        expect(page.get_by_test_id("trial-prior-source")).to_have_attribute("href", f"/sweeps/{source}")

        page.goto(f"/sweeps/{source}")  # a cold start without a record: no line
        wait_rendered(page)
        expect(page.get_by_test_id("warm-start")).to_be_hidden()
    finally:
        with session_scope(env.sessionmaker) as s:  # the list tests count the seeded sweeps
            s.delete(s.get(Sweep, sid))
