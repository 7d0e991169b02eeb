"""The fit check through the API: POST /api/v1/sweeps refuses a GPU spec whose largest trial cannot
fit in the server's GPU (or resources.gpu_memory_gb) with a 422 at ``resources``."""

from __future__ import annotations

import json

from sweepd.spec import Capacity
from tests.api.factories import Api, spec_dict
from tests.api.test_sweeps import post_spec


def test_a_spec_that_cannot_fit_is_422_at_resources(api: Api):
    api.app.state.capacity = Capacity(cpus=64, gpus=8, gpu_memory_gb=1.0)  # what _capacity() detected
    r = post_spec(api, json.dumps(spec_dict(api.data, resources={"gpus_per_worker": 1})))
    assert r.status_code == 422, r.text
    [item] = [i for i in r.json()["detail"] if i["loc"] == ["body", "resources"]]
    assert "more than the 1.0 GiB of this server's GPU" in item["msg"]
    assert "resources.zero_stage" in item["msg"] and "resources.micro_batch_tokens" in item["msg"]
    r = post_spec(api, json.dumps(spec_dict(api.data, resources={"gpus_per_worker": 1, "gpu_memory_gb": 80})))
    assert r.status_code == 201, r.text  # the spec's own figure wins over the server's GPU
