"""Browser tests: the real app (REST API + dashboard) served by uvicorn in a thread on a temp
SQLite database seeded through the store repository, driven by Playwright in Debian's chromium.

Chromium comes from scripts/ensure_chromium.sh; if it cannot be installed the tests FAIL (they
are never skipped). Screenshots go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.browser import support
from tests.browser.support import SCREENSHOTS, TOKEN_KEY, LiveServer, add_trial, decision, demo_spec, ledger


@dataclass
class Seeded:
    """Ids and facts of the seeded data that the tests check against."""

    running: str = ""
    succeeded: str = ""
    queued: str = ""
    failed: str = ""
    stopped_trial: str = ""
    stop_reason: str = ""
    decisions: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)


@dataclass
class Env:
    url: str  # the app with SWEEPD_PUBLIC_READ off: every read needs a token
    token: str  # scope write (the dashboard keeps it in sessionStorage only)
    sessionmaker: Any
    seeded: Seeded
    public_url: str = ""
    read_token: str = ""  # scope read (the one the dashboard keeps in localStorage)


def _seed(Session: Any) -> Seeded:
    from sweepd.store import repo, session_scope
    from sweepd.store.models import Sweep

    out = Seeded()
    with session_scope(Session) as s:
        # A failed sweep, oldest.
        sw = repo.create_sweep(s, name="oom-crash", spec=demo_spec("oom-crash", num_trials=4))
        out.failed = sw.id
        repo.set_sweep_state(s, sw.id, "running")
        add_trial(s, sw.id, 0, state="failed", batch=32, lr=2e-3, steps=5,
                  error="CUDA out of memory. Tried to allocate 2.00 GiB", started_minutes_ago=2900)
        repo.set_sweep_state(s, sw.id, "failed", error="controller exited: 2 trials failed (max_failures=1)")

        # A finished sweep with a best trial, a saved model and enough trials for calibration.
        sw = repo.create_sweep(s, name="nightly-baseline", spec=demo_spec("nightly-baseline", num_trials=6,
                                                                          save_best_model=True))
        out.succeeded = sw.id
        repo.set_sweep_state(s, sw.id, "running")
        specs = [(16, 3e-4, 128, 1.391), (32, 6e-4, 64, 1.354), (8, 2e-4, 256, 1.402), (16, 1.5e-3, 128, 1.447),
                 (32, 1e-4, 64, 1.468)]
        for n, (bs, lr, steps, obj) in enumerate(specs):
            add_trial(s, sw.id, n, state="completed", batch=bs, lr=lr, steps=steps, objective=obj,
                      warmup=10 * (n % 2), schedule=("cosine" if n % 2 else "constant"), started_minutes_ago=1500 - n)
        add_trial(s, sw.id, 5, state="stopped", batch=8, lr=7e-3, steps=96, stopped_at=768,
                  reason="stopped at 768 samples: grad norm 1.31 is 4th of 5 at this rung; the top 1 continues",
                  started_minutes_ago=1490)
        decision(s, sw.id, 5, stop=True, at=768, rank=4, cohort=5, keep=1, grad=1.31)
        repo.set_best_trial(s, sw.id, repo.trial_id_for(sw.id, 1))
        ledger(s, sw.id, best_model_dir=f"/srv/sweepd/models/{sw.id}/best")
        repo.set_sweep_state(s, sw.id, "succeeded")

        # The running sweep the sweep-page tests look at.
        sw = repo.create_sweep(s, name="lr-batch-search", spec=demo_spec("lr-batch-search", num_trials=8))
        out.running = sw.id
        repo.set_sweep_state(s, sw.id, "running")
        add_trial(s, sw.id, 0, state="completed", batch=16, lr=3e-4, steps=128, objective=1.412)
        add_trial(s, sw.id, 1, state="completed", batch=32, lr=1e-3, steps=64, objective=1.371, warmup=10,
                  schedule="cosine")
        out.stop_reason = decision(s, sw.id, 2, stop=True, at=256, rank=3, cohort=3, keep=1, grad=1.84)
        add_trial(s, sw.id, 2, state="stopped", batch=8, lr=8e-3, steps=32, stopped_at=256, reason=out.stop_reason)
        out.stopped_trial = repo.trial_id_for(sw.id, 2)
        add_trial(s, sw.id, 3, state="running", batch=16, lr=5e-4, steps=40, started_minutes_ago=4)
        add_trial(s, sw.id, 4, state="diverged", batch=8, lr=1e-2, steps=12,
                  error="loss became NaN at step 12: the trial diverged")
        add_trial(s, sw.id, 5, state="pending", batch=32, lr=2e-4, steps=0)
        out.decisions = [
            out.stop_reason,
            decision(s, sw.id, 3, stop=False, at=256, rank=1, cohort=4, keep=1, grad=0.61),
            decision(s, sw.id, 1, stop=False, at=768, rank=1, cohort=2, keep=1, grad=0.55),
        ]
        ledger(s, sw.id)

        sw = repo.create_sweep(s, name="queued-sweep", spec=demo_spec("queued-sweep", num_trials=12))
        out.queued = sw.id

        # Stagger the creation times so the list has a visible order (newest first).
        for minutes, ran, sid in ((3000, 40, out.failed), (1600, 95, out.succeeded), (35, None, out.running),
                                  (1, None, out.queued)):
            sweep = s.get(Sweep, sid)
            sweep.created_at = support.ago(minutes)
            if sweep.started_at is not None:
                sweep.started_at = support.ago(minutes - 1)
            if ran is not None:
                sweep.finished_at = support.ago(minutes - 1 - ran)
        for sid in (out.failed, out.succeeded, out.running, out.queued):
            out.names[sid] = s.get(Sweep, sid).name
    return out


@pytest.fixture(scope="session")
def chromium_path() -> str:
    try:
        return support.ensure_chromium()
    except Exception as exc:  # noqa: BLE001 - a missing browser fails the tests, never skips them
        pytest.fail(f"cannot provide chromium for the browser tests: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    from api.app import create_app
    from api.dashboard import router
    from sweepd.settings import get_settings
    from sweepd.store import make_engine, make_sessionmaker, repo, session_scope, upgrade

    home = tmp_path_factory.mktemp("sweepd-home")
    db_url = f"sqlite:///{home / 'sweepd.db'}"
    # The settings come from the environment as in production; the variables are restored at
    # once (the apps keep their Settings), so tests that run later see the environment unchanged.
    names = ("SWEEPD_HOME", "SWEEPD_DATABASE_URL", "SWEEPD_DATA_ROOTS", "SWEEPD_PUBLIC_READ")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(SWEEPD_HOME=str(home), SWEEPD_DATABASE_URL=db_url, SWEEPD_DATA_ROOTS=str(home),
                      SWEEPD_PUBLIC_READ="0")
    try:
        get_settings.cache_clear()
        settings = get_settings()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
    assert settings.resolved_database_url == db_url and not settings.public_read

    upgrade(db_url)
    engine = make_engine(db_url)
    Session = make_sessionmaker(engine)
    seeded = _seed(Session)
    with session_scope(Session) as s:
        _, token = repo.create_token(s, "browser-tests")
        _, read_token = repo.create_token(s, "browser-reader", scope="read")

    private = LiveServer(create_app(settings, extra_routers=[router])).start()
    public = LiveServer(create_app(settings.model_copy(update={"public_read": True}), extra_routers=[router])).start()
    try:
        yield Env(url=private.url, token=token, sessionmaker=Session, seeded=seeded, public_url=public.url,
                  read_token=read_token)
    finally:
        private.stop()
        public.stop()
        engine.dispose()


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = support.launch_chromium(pw, chromium_path)
        yield b
        b.close()


def _context(browser: Any, base_url: str, token: str | None, *, bypass_csp: bool = True) -> Any:
    # Playwright's wait_for_function evaluates strings, which the app's CSP (no unsafe-eval)
    # forbids; the pages under the real CSP are checked in test_security_headers.py.
    ctx = browser.new_context(base_url=base_url, viewport={"width": 1400, "height": 1000}, bypass_csp=bypass_csp)
    if token:
        ctx.add_init_script(f"window.localStorage.setItem({json.dumps(TOKEN_KEY)}, {json.dumps(token)});")
    ctx.set_default_timeout(15_000)
    # expect()'s own default is 5 s: a finished sweep's first refresh (Plotly's charts included)
    # took 5.9 s on a slow 2-core CI machine. Waiting longer changes no verdict, only flakiness.
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    return ctx


class PageErrors(list):
    """Uncaught exceptions in the page's JS: every test ends with none."""


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


def _page(ctx: Any, errors: PageErrors) -> Any:
    page = ctx.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page


@pytest.fixture
def page(browser: Any, env: Env, page_errors: PageErrors) -> Iterator[Any]:
    """A page holding a valid token (private app)."""
    ctx = _context(browser, env.url, env.token)
    yield _page(ctx, page_errors)
    ctx.close()
    assert not page_errors, f"JavaScript errors in the page: {page_errors}"


@pytest.fixture
def anon_page(browser: Any, env: Env, page_errors: PageErrors) -> Iterator[Any]:
    """A page with no token, on the app whose reads need one."""
    ctx = _context(browser, env.url, None)
    yield _page(ctx, page_errors)
    ctx.close()
    assert not page_errors, f"JavaScript errors in the page: {page_errors}"


@pytest.fixture
def public_page(browser: Any, env: Env, page_errors: PageErrors) -> Iterator[Any]:
    """A page with no token, on the app with SWEEPD_PUBLIC_READ=1."""
    ctx = _context(browser, env.public_url, None)
    yield _page(ctx, page_errors)
    ctx.close()
    assert not page_errors, f"JavaScript errors in the page: {page_errors}"


def screenshot(page: Any, name: str) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=True)
    return path
