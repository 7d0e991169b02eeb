"""The read routes' content: trials, metrics downsampling, curves, events, calibration, report."""

from __future__ import annotations

import json

import pytest

from api.analysis import average_ranks, kept_indexes, spearman
from sweepd.engine.finalize import result_document
from sweepd.report import markdown_summary
from sweepd.store import repo, session_scope
from tests.api.factories import API, Api, Seeded, add_trial, curve, make_sweep


def test_trials_list_filter_and_one_trial(api: Api, seeded: Seeded):
    items = api.get(f"{API}/sweeps/{seeded.sweep_id}/trials").json()["items"]
    assert [t["number"] for t in items] == [0, 1, 2, 3, 4]
    assert set(items[0]) == {"id", "sweep_id", "number", "state", "config", "objective", "metrics_final",
                             "stopped_at", "reason", "error", "error_detail", "attempts", "samples", "tokens",
                             "seconds", "started_at", "finished_at"}
    stopped = api.get(f"{API}/sweeps/{seeded.sweep_id}/trials", params={"state": "stopped"}).json()["items"]
    assert [(t["number"], t["stopped_at"], t["reason"]) for t in stopped] == [(3, 64.0, "grad norm is 3rd of 3")]
    one = api.get(f"{API}/trials/{seeded.trial_ids[1]}").json()
    assert one == items[1]
    assert one["objective"] == 1.2 and one["sweep_id"] == seeded.sweep_id


def test_metrics_are_downsampled_to_max_points(api: Api, seeded: Seeded):
    tid = seeded.trial_ids[0]  # 300 points, steps 0..299
    full = api.get(f"{API}/trials/{tid}/metrics").json()
    assert full["trial_id"] == tid and len(full["points"]) == 300
    assert set(full["points"][0]) == {"step", "samples", "tokens", "loss", "grad_norm", "lr", "seconds",
                                      "tokens_per_second", "mfu", "peak_memory_gb", "attempt"}
    assert {p["attempt"] for p in full["points"]} == {1}  # never retried
    assert (full["points"][5]["tokens_per_second"], full["points"][5]["mfu"]) == (1600.0, 0.25)
    for m in (2, 7, 50, 299):
        pts = api.get(f"{API}/trials/{tid}/metrics", params={"max_points": m}).json()["points"]
        steps = [p["step"] for p in pts]
        assert len(pts) == m and steps[0] == 0 and steps[-1] == 299 and steps == sorted(set(steps))
    assert len(api.get(f"{API}/trials/{tid}/metrics", params={"max_points": 5000}).json()["points"]) == 300


COLUMNS = ("step", "samples", "tokens", "loss", "grad_norm", "lr", "seconds", "tokens_per_second", "mfu",
           "peak_memory_gb")


def rows_of(t: dict) -> list[dict]:
    """A columnar curve back to the metrics route's one object per point."""
    cols = [t[f] for f in COLUMNS if f in t]
    assert len({len(c) for c in cols}) <= 1, "every column has one value per point"
    return [dict(zip([f for f in COLUMNS if f in t], values)) for values in zip(*cols)]


def test_curves_return_every_trial_downsampled_like_the_metrics_route(api: Api, seeded: Seeded):
    # a trial with gaps in its steps goes through the windowed query
    gappy = add_trial(api.sessions, seeded.sweep_id, 5, state="completed", objective=1.7,
                      points=[p for p in curve(400) if p["step"] % 3])
    add_trial(api.sessions, seeded.sweep_id, 6, state="pending")  # no points yet
    for m in (2, 25, 200):
        trials = api.get(f"{API}/sweeps/{seeded.sweep_id}/curves", params={"max_points": m}).json()["trials"]
        assert [t["number"] for t in trials] == [0, 1, 2, 3, 4, 5, 6]
        for t in trials:
            # columnar: one list per field, not one object per point
            assert set(t) == {"id", "number", "state", "stopped_at", "reason", *COLUMNS}
            want = api.get(f"{API}/trials/{t['id']}/metrics", params={"max_points": m}).json()["points"]
            want = [{k: v for k, v in p.items() if k != "attempt"} for p in want]  # the route's own label
            assert rows_of(t) == want, (m, t["number"])
            assert len(t["step"]) <= m
        stopped = trials[3]
        assert stopped["state"] == "stopped" and stopped["stopped_at"] == 64
        # the stopped trial keeps its final point (where the pruner stopped it)
        assert stopped["step"][-1] == 7 and stopped["samples"][-1] == 64
        assert all(trials[6][f] == [] for f in COLUMNS)
        assert trials[5]["id"] == gappy
    default = api.get(f"{API}/sweeps/{seeded.sweep_id}/curves").json()["trials"]
    assert max(len(t["step"]) for t in default) == 200


def test_curves_return_only_the_fields_asked_for(api: Api, seeded: Seeded):
    url = f"{API}/sweeps/{seeded.sweep_id}/curves"
    full = api.get(url, params={"max_points": 25}).json()["trials"]
    some = api.get(url, params={"max_points": 25, "fields": "grad_norm,samples"}).json()["trials"]
    for a, b in zip(full, some, strict=True):
        assert set(b) == {"id", "number", "state", "stopped_at", "reason", "step", "samples", "grad_norm"}
        assert (b["step"], b["samples"], b["grad_norm"]) == (a["step"], a["samples"], a["grad_norm"])
    # a wider sweep's payload: the columns are smaller than objects with a name per value
    r = api.get(url, params={"max_points": 200})
    rows = {"trials": [{k: v for k, v in t.items() if k not in COLUMNS} | {"points": rows_of(t)} for t in r.json()["trials"]]}
    import json
    assert len(r.content) < 0.7 * len(json.dumps(rows, separators=(",", ":")))
    for bad in ("loss,nope", "", ",loss", "loss;drop"):
        assert api.get(url, params={"fields": bad}).status_code == 422, bad


def test_kept_indexes_match_the_repository_rule():
    assert kept_indexes(3, 5) == [0, 1, 2]
    for n, m in [(10, 2), (10, 3), (300, 7), (1000, 999), (2001, 200)]:
        kept = kept_indexes(n, m)
        assert len(kept) == m and kept[0] == 0 and kept[-1] == n - 1 and kept == sorted(set(kept))
        # the repository's rule, row by row: keep row k when it starts a new bucket
        assert kept == [k for k in range(n) if k == 0 or (k * (m - 1)) // (n - 1) > ((k - 1) * (m - 1)) // (n - 1)]


def test_events_in_order_with_after_id_kind_and_limit(api: Api, seeded: Seeded):
    items = api.get(f"{API}/sweeps/{seeded.sweep_id}/events").json()["items"]
    assert [e["kind"] for e in items] == ["state", "decision", "info"]
    decision = items[1]
    assert decision["trial_id"] == seeded.trial_ids[3] and decision["payload"] == {"rung": 0, "stop": True}
    assert set(decision) == {"id", "sweep_id", "trial_id", "kind", "created_at", "message", "payload"}
    newer = api.get(f"{API}/sweeps/{seeded.sweep_id}/events", params={"after_id": items[0]["id"]}).json()["items"]
    assert [e["id"] for e in newer] == [items[1]["id"], items[2]["id"]]
    only = api.get(f"{API}/sweeps/{seeded.sweep_id}/events", params={"kind": "decision"}).json()["items"]
    assert [e["id"] for e in only] == [decision["id"]]
    assert len(api.get(f"{API}/sweeps/{seeded.sweep_id}/events", params={"limit": 1}).json()["items"]) == 1
    last = api.get(f"{API}/sweeps/{seeded.sweep_id}/events", params={"after_id": 2**31 - 1})
    assert last.status_code == 200 and last.json()["items"] == []
    assert api.get(f"{API}/sweeps/{seeded.sweep_id}/events", params={"after_id": 2**31}).status_code == 422


# ---- calibration ------------------------------------------------------------------------------


def test_spearman_by_hand():
    assert average_ranks([10, 20, 20, 30]) == [1, 2.5, 2.5, 4]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / (4.5 * 5) ** 0.5)
    assert spearman([1, 2], [2, 1]) is None  # n < 3
    assert spearman([1, 1, 1], [1, 2, 3]) is None  # constant: undefined


def test_calibration_gives_the_expected_signs(api: Api):
    # grace 64 samples, reduction factor 2, budget 1024 samples: rungs at 64, 128 and 256.
    sid = make_sweep(api.sessions, api.data, state="running")
    for n, level in enumerate([0.5, 1.0, 1.5, 2.0, 2.5, 3.0]):
        # a higher early grad norm and a LOWER early loss go with a worse (higher) final eval_loss
        add_trial(api.sessions, sid, n, state="completed", objective=1.0 + level,
                  points=curve(128, batch=8, grad0=level, loss0=5.0 - level))
    add_trial(api.sessions, sid, 6, state="completed", objective=9.0, points=curve(12, batch=8))  # reached 64 only
    add_trial(api.sessions, sid, 7, state="stopped", points=curve(64, batch=8, grad0=99.0))  # not finished
    add_trial(api.sessions, sid, 8, state="completed", objective=None, points=curve(64))  # no objective
    body = api.get(f"{API}/sweeps/{sid}/calibration").json()
    assert body["objective"] == {"metric": "eval_loss", "mode": "min"}
    assert body["n_trials"] == 7
    rows = {(r["signal"], r["at"]): r for r in body["rows"]}
    assert sorted({at for _, at in rows}) == [64, 128, 256]
    for at in (128, 256):
        assert rows[("grad_norm", at)]["spearman"] == pytest.approx(1.0)
        assert rows[("loss", at)]["spearman"] == pytest.approx(-1.0)
        assert rows[("grad_norm", at)]["n"] == 6
    assert rows[("grad_norm", 64)]["n"] == 7  # the short trial counts where it got to
    assert rows[("grad_norm", 64)]["spearman"] > 0 and rows[("loss", 64)]["spearman"] < 0


def test_calibration_with_too_few_trials_is_null(api: Api):
    sid = make_sweep(api.sessions, api.data, state="running")
    add_trial(api.sessions, sid, 0, state="completed", objective=1.0, points=curve(100))
    add_trial(api.sessions, sid, 1, state="completed", objective=2.0, points=curve(100))
    body = api.get(f"{API}/sweeps/{sid}/calibration").json()
    assert body["n_trials"] == 2
    assert all(r["spearman"] is None and r["n"] == 2 for r in body["rows"])


# ---- report -----------------------------------------------------------------------------------


def test_report_json_is_the_result_document(api: Api, seeded: Seeded):
    r = api.get(f"{API}/sweeps/{seeded.sweep_id}/report")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    with api.sessions() as s:
        doc = result_document(s, seeded.sweep_id)
    assert r.json() == json.loads(json.dumps(doc))
    assert [t["number"] for t in doc["trials"]] == [0, 1, 2, 3, 4]
    assert r.json() == api.get(f"{API}/sweeps/{seeded.sweep_id}/report", params={"format": "json"}).json()


def test_report_markdown_is_the_summary_ci_gets(api: Api, seeded: Seeded):
    """format=markdown serves sweepd.report's summary (what `sweepd submit --summary` writes for
    CI) of this API's own JSON, linking to this server's dashboard."""
    sid = seeded.sweep_id
    for n, obj in [(5, 1.1), (6, 1.4), (7, 2.5)]:
        add_trial(api.sessions, sid, n, state="completed", objective=obj, config={"learning_rate": 1e-5, "x": "a|b"})
    with session_scope(api.sessions) as s:
        repo.set_best_trial(s, sid, f"{sid}-0005")
        repo.update_ledger(s, sid, {"spent": {"samples": 12000, "tokens": 240000, "seconds": 12.5},
                                    "stopped_trials_would_have_spent": {"samples": 4000, "tokens": 80000, "seconds": 4.0},
                                    "without_pruning": {"samples": 16000, "tokens": 320000, "seconds": 16.5},
                                    "fraction_saved": 0.25, "trials_stopped": 1})  # fmt: skip
    r = api.get(f"{API}/sweeps/{sid}/report", params={"format": "markdown"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
    md = r.text
    sweep = api.get(f"{API}/sweeps/{sid}").json()
    trials = api.get(f"{API}/sweeps/{sid}/trials").json()["items"]
    assert md == markdown_summary(sweep, trials, dashboard_url="http://testserver/")  # one renderer
    assert md.startswith("## ⏳ sweepd sweep `api-test` running")
    assert f"(http://testserver/sweeps/{sid})" in md
    assert "8 trials" in md and "(6 completed, 1 stopped, 1 running)" in md
    assert "### Best: trial 5 — eval_loss = **1.1**" in md
    assert "| learning_rate | 1e-05 |" in md and "| x | a\\|b |" in md  # table cells are escaped
    top = md.split("### Top 5 trials")[1].split("###")[0]
    ranked = [int(line.split("|")[2]) for line in top.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert ranked == [5, 1, 6, 0, 2]  # objectives 1.1, 1.2, 1.4, 1.5, 1.9 (lower is better)
    assert "| used | 12,000 | 240,000 | 12.5 s |" in md and "| saved by stopping early | 4,000 | 80,000 |" in md
    assert "**25.0%**" in md