"""A failed trial on the dashboard: the trial page shows the trainer's own message (no Ray
wrapper, no ANSI escape codes) and, for another crash, the exception with its traceback folded
away under it; the sweep page shows the sweep's one-line error. The stored text is what the
engine's recorder makes of Ray's coloured error (recorder.failure_of)."""

from __future__ import annotations

import pickle

from playwright.sync_api import expect
from ray.exceptions import RayTaskError

from tests.browser.conftest import Env, screenshot
from tests.browser.support import add_trial, demo_spec
from tests.browser.test_dashboard import wait_rendered

MESSAGE = "train.jsonl:39: over-long sample: 290 tokens > data.max_seq_len=256"
WRAPPER = "\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=4242, ip=10.0.0.1, repr=run_trial_in_tune)"


def ray_failure(cause: BaseException) -> tuple[str, str | None]:
    """What the recorder stores for a trial Tune reports as errored with ``cause``."""
    from sweepd.engine.recorder import failure_of

    frames = "\n".join(f'  File "/srv/trainer/loop.py", line {i}, in step_{i}\n    run_{i}()' for i in range(15))
    text = f"{WRAPPER}\nTraceback (most recent call last):\n{frames}\n{type(cause).__name__}: {cause}"
    exc = pickle.loads(pickle.dumps(RayTaskError("ImplicitFunc.train", text, cause)))
    return failure_of(exc, "Failure # 1 (occurred at 2026-11-26_14-00-00)\n" + str(exc))


def no_escapes(text: str) -> bool:
    return "\x1b" not in text and "[36m" not in text and "[39m" not in text


def test_trial_page_shows_the_trainer_s_message_and_folds_a_crash_s_traceback(page, env: Env) -> None:
    from sweepd.engine.finalize import failure_message
    from sweepd.store import repo, session_scope
    from sweepd.store.models import Sweep
    from trainer.data import DataError

    data_message, data_detail = ray_failure(DataError(MESSAGE))
    crash_message, crash_detail = ray_failure(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert (data_message, data_detail) == (MESSAGE, None)
    with session_scope(env.sessionmaker) as s:
        sw = repo.create_sweep(s, name="bad-data", spec=demo_spec("bad-data", num_trials=3))
        sid = sw.id
        repo.set_sweep_state(s, sid, "running")
        for n in (0, 1):
            add_trial(s, sid, n, state="failed", batch=16, lr=3e-4, steps=0, error=data_message)
        crash = add_trial(s, sid, 2, state="failed", batch=16, lr=3e-4, steps=3, error=crash_message)
        repo.upsert_trial(s, sid, 2, error_detail=crash_detail)
        crash_id = crash.id
        repo.set_sweep_state(s, sid, "failed", error=failure_message(2, data_message))
    try:
        # the trainer's error: its message, nothing folded
        page.goto(f"/trials/{repo.trial_id_for(sid, 0)}")
        wait_rendered(page)
        expect(page.get_by_test_id("trial-state")).to_have_text("failed")
        error = page.get_by_test_id("trial-error")
        expect(error).to_have_text(f"Error: {MESSAGE}")
        assert no_escapes(error.inner_text()) and "ray::" not in error.inner_text()
        expect(page.get_by_test_id("trial-error-detail")).to_have_count(0)
        screenshot(page, "trial-error")

        # another crash: type and message, the last traceback lines folded under it
        page.goto(f"/trials/{crash_id}")
        wait_rendered(page)
        error = page.get_by_test_id("trial-error")
        expect(error).to_have_text("Error: RuntimeError: CUDA error: an illegal memory access was encountered")
        detail = page.get_by_test_id("trial-error-detail")
        expect(detail).to_be_visible()
        assert detail.evaluate("d => d.tagName === 'DETAILS' && !d.open")
        traceback = page.get_by_test_id("trial-traceback")
        expect(traceback).to_be_hidden()  # folded away
        detail.locator("summary").click()
        expect(traceback).to_be_visible()
        text = traceback.inner_text()
        assert text.rstrip().endswith("RuntimeError: CUDA error: an illegal memory access was encountered")
        assert len(text.strip().splitlines()) == 20 and no_escapes(text) and "ray::" not in text
        assert no_escapes(page.locator("main").inner_text())
        screenshot(page, "trial-crash-traceback")

        # the sweep page: the sweep's one-line error, the trials' messages in the table
        page.goto(f"/sweeps/{sid}")
        wait_rendered(page)
        expect(page.locator("#sweep-error")).to_have_text(f"Error: all 2 trials failed: {MESSAGE}")
        expect(page.get_by_test_id("trial-row")).to_have_count(3)
        assert no_escapes(page.locator("main").inner_text())
    finally:
        with session_scope(env.sessionmaker) as s:  # the list tests count the seeded sweeps
            s.delete(s.get(Sweep, sid))
