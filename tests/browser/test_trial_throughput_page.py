"""The trial page's throughput and memory: latest and median tokens/s and MFU, the peak memory,
from the step lines' ``tokens_per_second``, ``mfu`` and ``peak_memory_gb`` (issue 13); a trial
on CPU (no MFU) and one recorded before those keys existed show a dash, not a zero."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import Env, screenshot
from tests.browser.support import add_trial, curve, demo_spec
from tests.browser.test_dashboard import wait_rendered

TPS = [1000.0, 2000.0, 3000.0, 4000.0, 12345.6]
MFU = [0.30, 0.40, 0.41, 0.42, 0.5]
MEMORY = [10.5, 12.4, 12.4, 12.4, 12.4]


def _points(tps, mfu, memory):
    points = curve(range(1, len(tps) + 1), batch=16, lr=3e-4, seed=1)
    for p, t, m, g in zip(points, tps, mfu, memory, strict=True):
        p.update(tokens_per_second=t, mfu=m, peak_memory_gb=g)
    return points


def test_trial_page_shows_tokens_per_second_mfu_and_peak_memory(page, env: Env) -> None:
    from sweepd.store import repo, session_scope
    from sweepd.store.models import Sweep

    with session_scope(env.sessionmaker) as s:
        sid = repo.create_sweep(s, name="throughput", spec=demo_spec("throughput", num_trials=3)).id
        repo.set_sweep_state(s, sid, "running")
        gpu = add_trial(s, sid, 0, state="completed", batch=16, lr=3e-4, steps=0, objective=1.5).id
        repo.add_metric_points(s, gpu, _points(TPS, MFU, MEMORY))
        cpu = add_trial(s, sid, 1, state="completed", batch=16, lr=3e-4, steps=0, objective=1.6).id
        repo.add_metric_points(s, cpu, _points([50.0, 70.0, 60.0], [None] * 3, [0.8, 0.9, 0.9]))
        old = add_trial(s, sid, 2, state="completed", batch=16, lr=3e-4, steps=4, objective=1.7).id
    try:
        page.goto(f"/trials/{gpu}")
        wait_rendered(page)
        box = page.get_by_test_id("trial-throughput")
        expect(box).to_be_visible()
        expect(page.get_by_test_id("tps-latest")).to_have_text("12,346")
        expect(page.get_by_test_id("tps-median")).to_have_text("3,000")
        expect(box).to_contain_text("median of 5 steps")
        expect(page.get_by_test_id("mfu-latest")).to_have_text("50.0%")
        expect(page.get_by_test_id("mfu-median")).to_have_text("41.0%")
        expect(page.get_by_test_id("peak-memory")).to_have_text("12.4 GiB")
        screenshot(page, "trial-throughput")

        page.goto(f"/trials/{cpu}")
        wait_rendered(page)
        expect(page.get_by_test_id("tps-latest")).to_have_text("60")
        expect(page.get_by_test_id("tps-median")).to_have_text("60")
        expect(page.get_by_test_id("mfu-latest")).to_have_text("—")
        expect(page.get_by_test_id("mfu-median")).to_have_text("—")
        expect(page.get_by_test_id("peak-memory")).to_have_text("0.90 GiB")

        page.goto(f"/trials/{old}")  # points stored before the keys existed
        wait_rendered(page)
        for testid in ("tps-latest", "tps-median", "mfu-latest", "mfu-median", "peak-memory"):
            expect(page.get_by_test_id(testid)).to_have_text("—")
    finally:
        with session_scope(env.sessionmaker) as s:  # the list tests count the seeded sweeps
            s.delete(s.get(Sweep, sid))
