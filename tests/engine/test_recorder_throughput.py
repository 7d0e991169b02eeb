"""The recorder keeps each step's throughput and memory (issue 13): ``tokens_per_second``, ``mfu``
and ``peak_memory_gb`` land in their metric-point columns, not in ``extra``; a key the trial left
out (``mfu`` on CPU: the trainable drops None values) is stored as null."""

from __future__ import annotations

from sweepd.engine.recorder import StoreRecorder
from tests.engine.test_recorder import FakeTrial, step, stored, sweep_id  # noqa: F401  (fixture)


def test_throughput_and_memory_are_kept_per_step(engine, sqlite_url, sweep_id):  # noqa: F811
    rec = StoreRecorder(sqlite_url, sweep_id, "eval_loss")
    gpu, cpu = FakeTrial(1), FakeTrial(2)
    for trial in (gpu, cpu):
        rec.on_trial_start(0, [trial], trial)
    for n in (1, 2):
        rec.on_trial_result(n, [gpu], gpu, step(n, tokens_per_second=9000.0 + n, mfu=0.41, peak_memory_gb=17.5))
        rec.on_trial_result(n, [cpu], cpu, step(n, tokens_per_second=120.0, peak_memory_gb=0.8))
    for trial in (gpu, cpu):
        trial.last_result = step(2)
        rec.on_trial_complete(2, [trial], trial)

    _, points = stored(engine, sweep_id, 1)
    assert [(p.tokens_per_second, p.mfu, p.peak_memory_gb) for p in points] == [(9001.0, 0.41, 17.5), (9002.0, 0.41, 17.5)]
    assert all(p.extra is None for p in points)
    assert points[0].to_dict()["tokens_per_second"] == 9001.0
    _, points = stored(engine, sweep_id, 2)
    assert [(p.tokens_per_second, p.mfu, p.peak_memory_gb) for p in points] == [(120.0, None, 0.8)] * 2
