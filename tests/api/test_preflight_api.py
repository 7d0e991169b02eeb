"""POST /sweeps runs the data preflight: a data error is a 422 naming file:line; a good spec's
summary (over-long samples dropped) is stored as the sweep's "data" event."""

from __future__ import annotations

import json

from sweepd.store import repo
from tests.api.factories import API, LINE, Api, spec_dict

JSON = {"Content-Type": "application/json"}
LONG = json.dumps({"messages": [{"role": "user", "content": "x" * 100}, {"role": "assistant", "content": "y"}]}) + "\n"


def test_a_bad_data_line_is_a_422_naming_file_and_line(api: Api):
    (api.data / "train.jsonl").write_text(LINE + "{oops\n" + LINE)
    r = api.post(f"{API}/sweeps", content=json.dumps(spec_dict(api.data)), headers=JSON)
    assert r.status_code == 422, r.text
    [item] = r.json()["detail"]
    assert item["loc"] == ["body", "data", "train", 0, "path"]
    assert item["msg"].startswith(f"{(api.data / 'train.jsonl').resolve()}:2: not valid JSON")
    with api.sessions() as s:
        assert repo.list_sweeps(s).total == 0  # nothing queued


def test_overlong_error_is_a_422_and_drop_is_counted(api: Api):
    (api.data / "train.jsonl").write_text(LINE * 3 + LONG)
    spec = spec_dict(api.data)
    spec["data"] = {**spec["data"], "max_seq_len": 64, "overlong": "error"}
    r = api.post(f"{API}/sweeps", content=json.dumps(spec), headers=JSON)
    assert r.status_code == 422 and ":4: over-long sample" in r.json()["detail"][0]["msg"], r.text

    spec["data"]["overlong"] = "drop"
    r = api.post(f"{API}/sweeps", content=json.dumps(spec), headers=JSON)
    assert r.status_code == 201, r.text
    events = api.get(f"{API}/sweeps/{r.json()['id']}/events", params={"kind": "data"}).json()["items"]
    assert len(events) == 1 and "1 over-long dropped" in events[0]["message"]
    assert events[0]["payload"]["totals"]["train_samples"] == 3
