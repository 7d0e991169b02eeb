"""What the driver hands the engine for a sweep's first run and for an extension (the segment,
where trial numbers go on, the study), and `sweepd run`'s fingerprint and warm-start check; Ray
Tune is replaced by a stand-in that records its arguments and writes the trials."""

from __future__ import annotations

import signal

import pytest

from sweepd.service import driver
from sweepd.settings import get_settings
from sweepd.spec import Capacity, SpecError, parse_spec
from sweepd.store import repo, session_scope
from tests.api.factories import LINE, spec_dict


@pytest.fixture
def env(sqlite_url, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(LINE * 4)
    (data / "eval.jsonl").write_text(LINE * 2)
    monkeypatch.setenv("SWEEPD_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("SWEEPD_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    handler = signal.getsignal(signal.SIGTERM)
    yield data
    signal.signal(signal.SIGTERM, handler)
    get_settings.cache_clear()


def fake_tune(engine, calls: list):
    """run_sweep's stand-in: records its arguments and finishes the trials the segment owns."""

    def run_sweep(spec, *, sweep_id, db_url, home, ray_address=None, segment=0, first_number=1, study_name=None):
        calls.append({"segment": segment, "first_number": first_number, "study_name": study_name})
        with session_scope(engine) as s:
            for n in range(first_number, spec.planned_trials + 1):
                repo.upsert_trial(s, sweep_id, n, state="completed", objective=2.0 - n / 10,
                                  config={"learning_rate": 1e-4}, samples=1024)

    return run_sweep


def test_a_sweep_runs_segment_0_and_an_extension_numbers_on_in_the_same_study(env, engine, monkeypatch):
    calls: list = []
    monkeypatch.setattr(driver, "run_sweep", fake_tune(engine, calls))
    spec = parse_spec(spec_dict(env), data_roots=[env], capacity=Capacity.unlimited())
    first = driver.run_local(spec)
    sid = first["sweep_id"]
    assert first["state"] == "succeeded" and len(first["trials"]) == 4
    assert calls == [{"segment": 0, "first_number": 1, "study_name": f"sweepd-{sid}"}]
    with session_scope(engine) as s:
        assert repo.get_sweep(s, sid).fingerprint is not None

    started = []
    result = driver.extend_local(sid, trials=2, on_start=lambda i, sp, resumed: started.append((i, sp.planned_trials, resumed)))
    assert started == [(sid, 6, False)]
    assert calls[-1] == {"segment": 1, "first_number": 5, "study_name": f"sweepd-{sid}"}
    assert result["state"] == "succeeded" and [t["number"] for t in result["trials"]] == [1, 2, 3, 4, 5, 6]
    assert result["best"]["number"] == 6

    # an extension whose driver died is driven on by `sweepd extend ID --local` without an amount
    with session_scope(engine) as s:
        from sweepd.service.extend import extend_sweep

        extend_sweep(s, sid, trials=1)
    driver.extend_local(sid)
    assert calls[-1] == {"segment": 2, "first_number": 7, "study_name": f"sweepd-{sid}"}


def test_sweepd_run_refuses_a_warm_start_from_an_unknown_sweep(env, engine, monkeypatch):
    monkeypatch.setattr(driver, "run_sweep", lambda *a, **k: pytest.fail("nothing to run"))
    raw = spec_dict(env)
    raw["search"]["warm_start"] = "nope123"
    spec = parse_spec(raw, data_roots=[env], capacity=Capacity.unlimited())
    with pytest.raises(SpecError) as err:
        driver.run_local(spec)
    assert err.value.errors[0][0] == "search.warm_start"
    with session_scope(engine) as s:
        assert repo.list_sweeps(s).total == 0
