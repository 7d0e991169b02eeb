"""The dashboard under its real Content-Security-Policy (#15 finding 8): every page renders its
tables and charts with no CSP violation and no JavaScript error. (The other browser tests
bypass the CSP only because Playwright's wait_for_function evaluates strings.)"""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import Env, _context


def test_every_page_works_under_the_content_security_policy(browser: Any, env: Env) -> None:
    ctx = _context(browser, env.url, env.read_token, bypass_csp=False)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    try:
        for path, ready in (("/", "table tbody tr"), (f"/sweeps/{env.seeded.running}", "canvas"),
                            (f"/trials/{env.seeded.stopped_trial}", "canvas")):
            response = page.goto(path)
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
            page.wait_for_selector(ready)  # the page's own scripts ran and drew it
            page.wait_for_load_state("networkidle")
        assert errors == []
    finally:
        ctx.close()
