"""The dashboard in a real browser: list, sweep and trial pages, live updates, stop reasons,
login, submit and cancel. Screenshots of every page go to test-artifacts/screenshots/."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from playwright.sync_api import expect

from tests.browser.conftest import Env, screenshot
from tests.browser.support import SCREENSHOTS, add_trial, curve, decision, demo_spec

ROOT = Path(__file__).resolve().parents[2]

# JS run in the page, on what uPlot was given and drew: curves.js keeps the chart's state on its
# element (`__sweepd`: the uPlot instance `u`, the trial of each series in `meta`, the stop marks).
TRIAL_TRACES = """id => { const c = document.getElementById(id).__sweepd;
  return c && c.u ? c.u.series.filter((s, i) => i > 0 && s.label.startsWith('trial ')).length : null; }"""
TRACE_POINTS = """id => { const c = document.getElementById(id).__sweepd;
  return c.meta.map((m, i) => [m.number, c.u.data[i + 1][0].length]).sort((a, b) => a[0] - b[0]).map(p => p[1]); }"""
STOP_MARKERS = """id => { const c = document.getElementById(id).__sweepd;
  return c.stops.length ? {x: c.stops.map(s => s.x), text: c.stops.map(s => `trial ${s.number}: ${s.reason}`),
                           ids: c.stops.map(s => s.id)} : null; }"""
# Where the first stop mark is, in page coordinates, and the colour of the canvas pixel there (the
# draw hook paints a red x: this checks it is really drawn, where the data says).
STOP_PIXEL = """id => { const c = document.getElementById(id).__sweepd, u = c.u, s = c.stops[0];
  const r = u.over.getBoundingClientRect();
  const cx = Math.round(u.valToPos(s.x, 'x', true)), cy = Math.round(u.valToPos(s.y, 'y', true));
  const px = Array.from(u.ctx.getImageData(cx - 3, cy - 3, 7, 7).data);
  let red = 0; for (let i = 0; i < px.length; i += 4) if (px[i] > 180 && px[i + 1] < 90 && px[i + 2] < 90 && px[i + 3] > 200) red++;
  return {x: r.left + u.valToPos(s.x, 'x'), y: r.top + u.valToPos(s.y, 'y'), red}; }"""


def wait_rendered(page) -> None:
    page.wait_for_function("window.__sweepdRendered === true")


# ---- list -----------------------------------------------------------------------------------


def test_list_page_shows_the_seeded_sweeps(page, env: Env) -> None:
    page.goto("/")
    rows = page.get_by_test_id("sweep-row")
    expect(rows.first).to_be_visible()
    seeded = env.seeded
    for sid, name in seeded.names.items():
        row = page.locator(f'[data-testid=sweep-row][data-sweep-id="{sid}"]')
        expect(row).to_contain_text(name)
        expect(row.get_by_test_id("progress-bar")).to_have_count(1)
    # Newest first.
    ids = rows.evaluate_all("rs => rs.map(r => r.dataset.sweepId)")
    assert ids.index(seeded.queued) < ids.index(seeded.running) < ids.index(seeded.succeeded) < ids.index(seeded.failed)

    running = page.locator(f'[data-testid=sweep-row][data-sweep-id="{seeded.running}"]')
    expect(running.locator(".badge")).to_have_text("running")
    expect(running).to_contain_text("2 done · 1 stopped · 1 running · 1 failed · of 8")
    expect(running).to_contain_text("1.371")  # the best objective so far (trial 1)
    succeeded = page.locator(f'[data-testid=sweep-row][data-sweep-id="{seeded.succeeded}"]')
    expect(succeeded).to_contain_text("saved")  # compute used against the full budget
    expect(succeeded).to_contain_text("1.354")
    failed = page.locator(f'[data-testid=sweep-row][data-sweep-id="{seeded.failed}"]')
    expect(failed).to_contain_text("controller exited")
    expect(page.get_by_test_id("submit-card")).to_be_visible()  # a token holder may submit
    screenshot(page, "list")


def test_list_is_paginated_on_the_server(page, env: Env) -> None:
    page.goto("/?limit=2")
    expect(page.get_by_test_id("sweep-row")).to_have_count(2)
    first = page.get_by_test_id("sweep-row").evaluate_all("rs => rs.map(r => r.dataset.sweepId)")
    expect(page.get_by_test_id("pager-summary")).to_contain_text("1–2 of")
    expect(page.get_by_test_id("pager-prev")).to_have_count(0)
    page.get_by_test_id("pager-next").click()
    expect(page).to_have_url(re.compile(r"offset=2"))
    expect(page.get_by_test_id("sweep-row")).to_have_count(2)
    second = page.get_by_test_id("sweep-row").evaluate_all("rs => rs.map(r => r.dataset.sweepId)")
    assert not set(first) & set(second)
    expect(page.get_by_test_id("pager-prev")).to_be_visible()


# ---- sweep page --------------------------------------------------------------------------------


def test_sweep_page_draws_one_trace_per_trial(page, env: Env) -> None:
    page.goto(f"/sweeps/{env.seeded.running}")
    wait_rendered(page)
    expect(page.get_by_test_id("sweep-name")).to_have_text("lr-batch-search")
    expect(page.get_by_test_id("sweep-state")).to_have_text("running")
    assert page.evaluate(TRIAL_TRACES, "chart-loss") == 6
    assert page.evaluate(TRIAL_TRACES, "chart-grad") == 6
    expect(page.get_by_test_id("chart-loss")).to_have_attribute("data-series", "6")
    # Long curves arrive downsampled: at most 200 points per trial (the completed trial had 128).
    points = page.evaluate(TRACE_POINTS, "chart-loss")
    assert len(points) == 6 and 0 < max(points) <= 200
    # The grad norms span a wide range: log scale (uPlot's distr 3).
    assert page.evaluate("() => document.getElementById('chart-grad').__sweepd.u.scales.y.distr") == 3

    # plotly.js is loaded only after the curves are drawn, for the other two charts.
    page.wait_for_function("window.__sweepdAllRenderedAt !== undefined")
    order = page.evaluate("""() => [window.__sweepdRenderedAt,
        (performance.getEntriesByName('sweepd:plotly-loaded')[0] || {}).startTime]""")
    assert order[1] is not None and order[0] < order[1], order

    # Objective vs hyperparameters: a log-x scatter and a parallel-coordinates view (plotly.js).
    page.wait_for_function("window.__sweepdAllRenderedAt !== undefined")
    scatter = page.evaluate("() => { const g = document.getElementById('chart-scatter'); "
                            "return {type: g.layout.xaxis.type, n: g.data[0].x.length, m: g.data[1].x.length}; }")
    assert scatter == {"type": "log", "n": 2, "m": 4}
    assert page.evaluate("() => document.getElementById('chart-parcoords').data[0].type") == "parcoords"

    table = page.get_by_test_id("trial-row")
    expect(table).to_have_count(6)
    # Sortable: by objective ascending puts trial 1 (1.371) first, and again flips the order.
    page.get_by_test_id("sort-objective").click()
    expect(table.first).to_have_attribute("data-trial-id", f"{env.seeded.running}-0001")
    page.get_by_test_id("sort-objective").click()
    expect(table.first).to_have_attribute("data-trial-id", f"{env.seeded.running}-0000")
    expect(page.locator("th[aria-sort=descending]")).to_contain_text("eval_loss")

    log = page.get_by_test_id("decision-log")
    for sentence in env.seeded.decisions:
        expect(log).to_contain_text(sentence)
    expect(page.get_by_test_id("ledger")).to_contain_text("Stopped trials would have spent")
    expect(page.get_by_test_id("best-config")).to_contain_text('"learning_rate": 0.001')
    expect(page.get_by_test_id("live")).to_contain_text("live")
    expect(page.get_by_test_id("cancel-button")).to_be_visible()
    screenshot(page, "sweep-running")


def test_sweep_page_updates_live(page, env: Env) -> None:
    from sweepd.store import repo, session_scope

    Session = env.sessionmaker
    with session_scope(Session) as s:
        sw = repo.create_sweep(s, name="live-updates", spec=demo_spec("live-updates", num_trials=4))
        repo.set_sweep_state(s, sw.id, "running")
        add_trial(s, sw.id, 0, state="completed", batch=16, lr=3e-4, steps=60, objective=1.45)
        add_trial(s, sw.id, 1, state="running", batch=32, lr=1e-3, steps=10)
        sweep_id = sw.id
    page.goto(f"/sweeps/{sweep_id}")
    wait_rendered(page)
    assert page.evaluate(TRIAL_TRACES, "chart-loss") == 2
    before = page.evaluate(TRACE_POINTS, "chart-loss")
    page.wait_for_function("window.__sweepdRefreshes >= 1")  # the first refresh, all charts drawn
    refreshes = page.evaluate("window.__sweepdRefreshes")

    # The running trial reports more steps, a new trial starts, the pruner decides.
    with session_scope(Session) as s:
        repo.add_metric_points(s, repo.trial_id_for(sweep_id, 1), curve(range(11, 31), batch=32, lr=1e-3))
        add_trial(s, sweep_id, 2, state="running", batch=8, lr=5e-3, steps=15)
        sentence = decision(s, sweep_id, 1, stop=False, at=256, rank=1, cohort=2, keep=1, grad=0.7)

    for chart in ("chart-loss", "chart-grad"):
        page.wait_for_function(f"({TRIAL_TRACES})('{chart}') === 3")
    after = page.evaluate(TRACE_POINTS, "chart-loss")
    assert after[1] == before[1] + 20 and after[2] == 15
    page.wait_for_function(f"window.__sweepdRefreshes > {refreshes}")  # that refresh finished
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # no reload
    expect(page.get_by_test_id("trial-row")).to_have_count(3)
    expect(page.get_by_test_id("decision-log")).to_contain_text(sentence)

    # Once the sweep is finished the page says so and stops polling.
    with session_scope(Session) as s:
        repo.set_sweep_state(s, sweep_id, "succeeded")
    expect(page.get_by_test_id("sweep-state")).to_have_text("succeeded", timeout=10_000)
    expect(page.get_by_test_id("live")).to_contain_text("not refreshing")
    settled = page.evaluate("window.__sweepdRefreshes")
    page.wait_for_timeout(4500)
    assert page.evaluate("window.__sweepdRefreshes") == settled
    expect(page.get_by_test_id("cancel-button")).to_be_hidden()


def test_stopped_trial_shows_its_reason(page, env: Env) -> None:
    seeded = env.seeded
    page.goto(f"/sweeps/{seeded.running}")
    wait_rendered(page)
    # In the trials table...
    row = page.locator(f'[data-testid=trial-row][data-trial-id="{seeded.stopped_trial}"]')
    expect(row.locator(".badge")).to_have_text("stopped")
    expect(row.get_by_test_id("stop-reason")).to_have_text(seeded.stop_reason)
    # ...and as a marker on both curve charts, where it stopped, with the reason as hover text.
    for chart in ("chart-loss", "chart-grad"):
        stops = page.evaluate(STOP_MARKERS, chart)
        assert stops is not None and stops["ids"] == [seeded.stopped_trial]
        assert stops["x"] == [256]
        assert "grad norm 1.84 is 3rd of 3" in stops["text"][0]
        assert page.evaluate(STOP_PIXEL, chart)["red"] >= 4, "no red stop mark drawn on the canvas"
    # Hovering the marker shows the reason.
    mark = page.evaluate(STOP_PIXEL, "chart-loss")
    page.mouse.move(mark["x"], mark["y"])
    tip = page.locator("#chart-loss [data-testid=curve-tip]")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text("trial 2: stopped at 256 samples")
    expect(tip).to_contain_text("the top 1 continues")
    expect(tip).to_have_attribute("data-trial-id", seeded.stopped_trial)
    page.get_by_test_id("chart-loss").screenshot(path=str(SCREENSHOTS / "stop-marker-hover.png"))
    # A click on the hovered trial opens its page (the screenshot may have scrolled: measure again).
    mark = page.evaluate(STOP_PIXEL, "chart-loss")
    page.mouse.move(mark["x"], mark["y"])
    expect(tip).to_have_attribute("data-trial-id", seeded.stopped_trial)
    page.mouse.click(mark["x"], mark["y"])
    expect(page).to_have_url(re.compile(f"/trials/{seeded.stopped_trial}$"))


def test_finished_sweep_shows_best_config_calibration_and_ledger(page, env: Env) -> None:
    sid = env.seeded.succeeded
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(f"/sweeps/{sid}")
    wait_rendered(page)
    expect(page.get_by_test_id("live")).to_contain_text("not refreshing")
    expect(page.get_by_test_id("cancel-button")).to_be_hidden()
    expect(page.get_by_test_id("best-objective")).to_have_text("1.354")
    expect(page.get_by_test_id("best-model-dir")).to_contain_text(f"/srv/sweepd/models/{sid}/best")
    page.get_by_test_id("copy-best").click()
    expect(page.get_by_test_id("best")).to_contain_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert '"effective_batch_size": 32' in copied and '"learning_rate": 0.0006' in copied

    calib = page.get_by_test_id("calibration-row")
    expect(calib.first).to_be_visible()
    assert calib.count() >= 2
    text = page.get_by_test_id("calibration").inner_text()
    assert "grad norm" in text and "loss" in text and "Spearman" in text
    assert re.search(r"[+−-]\d\.\d\d", text), text  # a correlation is shown with its sign
    expect(page.get_by_test_id("ledger-saved")).to_contain_text("saved by stopping 1 trial early")
    screenshot(page, "sweep-finished")


# ---- trial page ----------------------------------------------------------------------------------


def test_trial_page_shows_curves_config_and_events(page, env: Env) -> None:
    seeded = env.seeded
    page.goto(f"/sweeps/{seeded.running}")
    wait_rendered(page)
    page.locator(f'[data-testid=trial-row][data-trial-id="{seeded.stopped_trial}"] a').first.click()
    expect(page).to_have_url(re.compile(f"/trials/{seeded.stopped_trial}$"))
    wait_rendered(page)
    expect(page.get_by_test_id("trial-title")).to_have_text("Trial 2")
    expect(page.get_by_test_id("trial-state")).to_have_text("stopped")
    expect(page.get_by_test_id("trial-reason")).to_contain_text(seeded.stop_reason)
    for chart in ("chart-loss", "chart-grad", "chart-lr"):
        assert page.evaluate(TRIAL_TRACES, chart) == 1
        assert page.evaluate(TRACE_POINTS, chart) == [32]
    assert page.evaluate(STOP_MARKERS, "chart-loss")["x"] == [256]
    assert page.evaluate(STOP_PIXEL, "chart-loss")["red"] >= 4
    expect(page.get_by_test_id("trial-config")).to_contain_text('"learning_rate": 0.008')
    events = page.get_by_test_id("trial-event")
    expect(events).to_have_count(1)  # only this trial's events, not the sweep's others
    expect(events.first).to_contain_text(seeded.stop_reason)
    screenshot(page, "trial")


# ---- login, submit, cancel -------------------------------------------------------------------------


def test_no_token_sees_the_login_and_a_token_gets_in(anon_page, env: Env) -> None:
    page = anon_page
    page.goto("/")
    login = page.get_by_test_id("login")
    expect(login).to_be_visible()
    expect(login).to_contain_text("needs a token")
    expect(page.get_by_test_id("sweeps-table")).to_be_hidden()
    screenshot(page, "login")

    page.get_by_test_id("login-token").fill("swd_not-a-real-token")
    page.get_by_test_id("login-submit").click()
    expect(login).to_contain_text("did not accept")

    page.get_by_test_id("login-token").fill(env.read_token)  # a read token is kept across visits
    page.get_by_test_id("login-submit").click()
    expect(login).to_be_hidden()
    expect(page.get_by_test_id("sweep-row").first).to_be_visible()
    assert page.evaluate("localStorage.getItem('sweepd.token')") == env.read_token

    # The token is kept: the sweep page loads directly.
    page.goto(f"/sweeps/{env.seeded.running}")
    wait_rendered(page)
    expect(page.get_by_test_id("login")).to_be_hidden()


def test_sweep_page_without_token_shows_the_login(anon_page, env: Env) -> None:
    page = anon_page
    page.goto(f"/sweeps/{env.seeded.running}")
    expect(page.get_by_test_id("login")).to_be_visible()
    page.get_by_test_id("login-token").fill(env.token)
    page.get_by_test_id("login-submit").click()
    wait_rendered(page)
    assert page.evaluate(TRIAL_TRACES, "chart-loss") == 6


def test_public_read_needs_no_login_and_hides_the_buttons(public_page, env: Env) -> None:
    page = public_page
    page.goto("/")
    expect(page.get_by_test_id("sweep-row").first).to_be_visible()
    expect(page.get_by_test_id("login")).to_be_hidden()
    expect(page.get_by_test_id("submit-card")).to_be_hidden()
    page.goto(f"/sweeps/{env.seeded.running}")
    wait_rendered(page)
    expect(page.get_by_test_id("cancel-button")).to_be_hidden()
    # Signing in from the header shows the buttons.
    page.get_by_test_id("login-open").click()
    page.get_by_test_id("login-token").fill(env.token)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("cancel-button")).to_be_visible()


def test_submit_shows_the_api_422_field_paths_inline(page, env: Env) -> None:
    page.goto("/")
    expect(page.get_by_test_id("submit-card")).to_be_visible()
    page.get_by_test_id("spec-text").fill(
        "name: broken\nmodel: {path: builtin:tiny}\nsearch:\n  num_trials: -3\n"
        "  space:\n    learning_rate: {loguniform: [0.01, 0.0001]}\n"
        "budget: {max_samples: 2048}\nobjective: {metric: eval_loss, mode: min}\n"
    )
    page.get_by_test_id("submit-button").click()
    errors = page.get_by_test_id("submit-errors")
    expect(errors).to_be_visible()
    expect(errors).to_contain_text("search.num_trials")
    expect(page).to_have_url(re.compile(r"/$"))
    screenshot(page, "submit-422")


def test_cancel_button_cancels_a_queued_sweep(page, env: Env) -> None:
    from sweepd.store import repo, session_scope

    with session_scope(env.sessionmaker) as s:
        sid = repo.create_sweep(s, name="to-cancel", spec=demo_spec("to-cancel")).id
    page.goto(f"/sweeps/{sid}")
    wait_rendered(page)
    expect(page.get_by_test_id("sweep-state")).to_have_text("queued")
    page.get_by_test_id("cancel-button").click()
    page.get_by_test_id("cancel-confirm").click()
    expect(page.get_by_test_id("sweep-state")).to_have_text("cancelled")
    expect(page.get_by_test_id("cancel-msg")).to_contain_text("Cancel requested")
    expect(page.get_by_test_id("cancel-button")).to_be_hidden()


# ---- served files ------------------------------------------------------------------------------------


def test_pages_load_everything_from_the_app(env: Env) -> None:
    with httpx.Client(base_url=env.url) as client:
        for path in ("/", f"/sweeps/{env.seeded.running}", f"/trials/{env.seeded.stopped_trial}"):
            r = client.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert not re.search(r"""(src|href)=["']?(https?:)?//""", r.text), "no CDN links"
        js = client.get("/static/vendor/plotly.min.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert len(js.content) > 1_000_000
        again = client.get("/static/vendor/plotly.min.js", headers={"If-None-Match": js.headers["etag"]})
        assert again.status_code == 304
        # uPlot, fetched from the npm registry at build time (make setup), at the pinned version.
        lock = json.loads((ROOT / "api/dashboard/vendor.lock.json").read_text())["packages"]["uplot"]
        up = client.get("/static/vendor/uPlot.iife.min.js")
        assert up.status_code == 200 and up.headers["content-type"].startswith("text/javascript")
        assert b"uPlot" in up.content and len(up.content) > 20_000
        assert client.get("/static/vendor/uPlot.iife.min.js", headers={"If-None-Match": up.headers["etag"]}).status_code == 304
        assert client.get("/static/vendor/uPlot.min.css").headers["content-type"].startswith("text/css")
        stamp = (ROOT / "api/dashboard/static/vendor/.uplot.version").read_text().split()
        assert stamp == [lock["version"], lock["integrity"]]
        assert client.get("/static/vendor/uPlot.esm.js").status_code == 404
        assert client.get("/static/vendor/..%2F..%2Frouter.py").status_code == 404
        for name in ("api.js", "charts.js", "curves.js", "sweep.js", "list.js", "trial.js", "ui.js", "dashboard.css"):
            assert client.get(f"/static/dashboard/{name}").status_code == 200
        assert client.get("/static/dashboard/..%2Frouter.py").status_code == 404
        assert client.get("/static/dashboard/router.py").status_code == 404


def test_a_missing_vendor_file_says_to_run_make_setup(page, env: Env, tmp_path, monkeypatch) -> None:
    import importlib

    dashboard = importlib.import_module("api.dashboard.router")  # (the package's `router` is the APIRouter)

    monkeypatch.setattr(dashboard, "VENDOR_DIR", tmp_path)  # an install that skipped the fetch
    r = httpx.get(f"{env.url}/static/vendor/uPlot.iife.min.js")
    assert r.status_code == 503 and "make setup" in r.text and "Traceback" not in r.text
    # The page says so in place of the charts; the rest of it works.
    page.goto(f"/sweeps/{env.seeded.running}")
    expect(page.locator("#chart-loss [data-testid=chart-missing]")).to_contain_text("make setup")
    expect(page.get_by_test_id("trial-row")).to_have_count(6)
