"""The dashboard and token scopes: a read token in localStorage, a token that can write only in
sessionStorage (signed in to act, for the tab's life), reads without a token when they are public."""

from __future__ import annotations

import json

from playwright.sync_api import expect

from tests.browser.conftest import Env, screenshot
from tests.browser.support import TOKEN_KEY, demo_spec

ACT_KEY = "sweepd.act-token"  # the sessionStorage key api.js keeps a write token under
STORAGE = "() => ({local: Object.assign({}, localStorage), session: Object.assign({}, sessionStorage)})"


def storage(page) -> dict[str, dict[str, str]]:
    return page.evaluate(STORAGE)


def queued_sweep(env: Env, name: str) -> str:
    from sweepd.store import repo, session_scope

    with session_scope(env.sessionmaker) as s:
        return repo.create_sweep(s, name=name, spec=demo_spec(name)).id


def sign_in(page, token: str) -> None:
    page.get_by_test_id("login-token").fill(token)
    page.get_by_test_id("login-submit").click()


def test_signing_in_to_act_keeps_no_write_token_in_local_storage(anon_page, env: Env) -> None:
    page = anon_page
    sid = queued_sweep(env, "act-here")
    page.goto("/")
    sign_in(page, env.read_token)  # the reads need a token here: a read token
    expect(page.get_by_test_id("sweep-row").first).to_be_visible()
    expect(page.get_by_test_id("submit-card")).to_be_hidden()
    assert storage(page) == {"local": {TOKEN_KEY: env.read_token}, "session": {}}

    page.goto(f"/sweeps/{sid}")
    expect(page.get_by_test_id("sweep-state")).to_have_text("queued")
    expect(page.get_by_test_id("cancel-button")).to_be_hidden()
    page.get_by_test_id("login-open").click()
    expect(page.get_by_test_id("login")).to_contain_text("Sign in to act")
    expect(page.get_by_test_id("login")).to_contain_text("sessionStorage")
    sign_in(page, env.token)
    expect(page.get_by_test_id("signed-in")).to_contain_text("Signed in to act")
    expect(page.get_by_test_id("cancel-button")).to_be_visible()
    screenshot(page, "signed-in-to-act")
    after = storage(page)
    assert after == {"local": {TOKEN_KEY: env.read_token}, "session": {ACT_KEY: env.token}}
    assert env.token not in json.dumps(after["local"])

    page.get_by_test_id("cancel-button").click()  # the write goes out with the session's token
    page.get_by_test_id("cancel-confirm").click()
    expect(page.get_by_test_id("sweep-state")).to_have_text("cancelled")

    page.goto("/")  # the same tab stays signed in to act ...
    expect(page.get_by_test_id("submit-card")).to_be_visible()
    other = page.context.new_page()  # ... another tab is not
    other.goto("/")
    expect(other.get_by_test_id("sweep-row").first).to_be_visible()
    expect(other.get_by_test_id("login-open")).to_be_visible()
    expect(other.get_by_test_id("submit-card")).to_be_hidden()
    assert storage(other) == {"local": {TOKEN_KEY: env.read_token}, "session": {}}
    other.close()

    page.get_by_test_id("logout").click()  # sign out: the write token is gone, reading goes on
    expect(page.get_by_test_id("login-open")).to_be_visible()
    expect(page.get_by_test_id("submit-card")).to_be_hidden()
    assert storage(page) == {"local": {TOKEN_KEY: env.read_token}, "session": {}}


def test_a_write_token_pasted_to_read_is_kept_for_the_tab_only(anon_page, env: Env) -> None:
    page = anon_page
    page.goto("/")
    sign_in(page, env.token)
    expect(page.get_by_test_id("sweep-row").first).to_be_visible()
    expect(page.get_by_test_id("signed-in")).to_be_visible()
    assert storage(page) == {"local": {}, "session": {ACT_KEY: env.token}}


def test_a_stored_write_token_moves_out_of_local_storage(page, env: Env) -> None:
    """The `page` fixture puts the write token in localStorage, as an older dashboard did."""
    page.goto("/")
    expect(page.get_by_test_id("sweep-row").first).to_be_visible()
    expect(page.get_by_test_id("submit-card")).to_be_visible()
    assert storage(page) == {"local": {}, "session": {ACT_KEY: env.token}}


def test_a_read_token_cannot_sign_in_to_act(public_page, env: Env) -> None:
    page = public_page
    page.goto("/")
    expect(page.get_by_test_id("sweep-row").first).to_be_visible()
    page.get_by_test_id("login-open").click()
    sign_in(page, env.read_token)
    expect(page.get_by_test_id("login")).to_contain_text("can only read")
    page.get_by_test_id("login-cancel").click()
    expect(page.get_by_test_id("login")).to_be_hidden()
    expect(page.get_by_test_id("submit-card")).to_be_hidden()
    assert storage(page)["session"] == {}


def test_public_reads_send_no_token_even_when_signed_in_to_act(public_page, env: Env) -> None:
    page = public_page
    sent: list[tuple[str, str | None]] = []
    page.on("request", lambda r: sent.append((r.method, r.headers.get("authorization")))
            if "/api/v1/" in r.url and "limit=1" not in r.url else None)
    page.goto(f"/sweeps/{env.seeded.running}")
    expect(page.get_by_test_id("sweep-state")).to_be_visible()
    page.get_by_test_id("login-open").click()
    sign_in(page, env.token)
    expect(page.get_by_test_id("cancel-button")).to_be_visible()
    page.reload()
    expect(page.get_by_test_id("cancel-button")).to_be_visible()
    reads = [auth for method, auth in sent if method == "GET"]
    assert reads and all(auth is None for auth in reads), sent
