"""Schemathesis (pinned in constraints.txt) over /openapi.json, in-process, on SQLite: generated
requests, valid and invalid, against every operation. Every response must be a non-5xx whose
status code, content type, headers and body match the schema; auth must be enforced.

Half of the positive cases' path ids are replaced by ids of a seeded sweep (so the success
responses are checked, not only the 404s). Examples are bounded so this stays well under a
minute on two cores.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.app import create_app
from sweepd.settings import Settings
from sweepd.spec import Capacity, parse_spec
from sweepd.store import repo, session_scope
from tests.api.factories import LINE, curve, spec_dict

# A fuzzer: ~30 s of generated requests, so it runs in `make test`, not in `make test-fast`.
pytestmark = pytest.mark.slow

MAX_EXAMPLES = 25
SWEEP_ID = "stseed000001"
KNOWN = {"sweep_id": SWEEP_ID, "trial_id": f"{SWEEP_ID}-0000", "name": "to-revoke"}

# Module level, because @schema.parametrize() needs the schema at collection time (and
# schemathesis.pytest.from_fixture does not work with pytest 9). Starting the app migrates a
# SQLite file in a temporary folder; the fixture below seeds it and removes the folder.
_ROOT = Path(tempfile.mkdtemp(prefix="sweepd-schemathesis-"))
_DATA = _ROOT / "data"
_DATA.mkdir()
(_DATA / "train.jsonl").write_text(LINE * 4)
(_DATA / "eval.jsonl").write_text(LINE * 2)
APP = create_app(Settings(database_url=f"sqlite:///{_ROOT / 'sweepd.db'}", home=_ROOT / "home", data_roots=[_DATA]))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def token() -> Iterator[str]:
    spec = json.loads(parse_spec(spec_dict(_DATA), data_roots=[_DATA], capacity=Capacity.unlimited()).model_dump_json())
    with session_scope(APP.state.sessionmaker) as s:
        _, plaintext = repo.create_token(s, "schemathesis", scope="admin")  # every route, tokens included
        repo.create_token(s, KNOWN["name"], scope="read")  # what DELETE /tokens/{name} revokes
        repo.create_sweep(s, name="seeded", spec=spec, id=SWEEP_ID)
        repo.set_sweep_state(s, SWEEP_ID, "running")
        for n, state in enumerate(["completed", "stopped", "running"]):
            trial = repo.upsert_trial(s, SWEEP_ID, n, state=state, config={"learning_rate": 1e-4},
                                      objective=1.0 + n if state == "completed" else None)
            repo.add_metric_points(s, trial.id, curve(40))
        repo.add_event(s, SWEEP_ID, "decision", "trial 1 stopped", trial_id=f"{SWEEP_ID}-0001")
    yield plaintext
    shutil.rmtree(_ROOT, ignore_errors=True)


def use_real_credentials_and_ids(case, token: str) -> None:
    """Schemathesis generates ``Authorization: Bearer <random>`` (or leaves it out, or empties it,
    to test that auth is enforced): a generated bearer token becomes the real one. In positive
    cases, half of the path ids (decided by a hash, so that examples replay) become ids that
    exist, so that success responses get validated too, not only 404s."""
    headers = case.headers or {}
    if str(headers.get("Authorization", "")).startswith("Bearer "):
        case.headers = {**headers, "Authorization": f"Bearer {token}"}
    if case.path_parameters and case.meta is not None and case.meta.generation.mode.is_positive:
        if zlib.crc32(repr(sorted(case.path_parameters.items())).encode()) % 2:
            case.path_parameters = {k: KNOWN.get(k, v) for k, v in case.path_parameters.items()}


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])
def test_api_conforms_to_its_schema(case, token: str):
    use_real_credentials_and_ids(case, token)
    excluded = []
    if case.method == "POST" and case.path == "/api/v1/sweeps":
        # A spec can match the schema and still be refused with a 422: its files must exist inside
        # SWEEPD_DATA_ROOTS and its sections must agree (rules the schema cannot express).
        excluded.append(positive_data_acceptance)
    if case.method == "POST" and case.path.endswith("/extend"):
        # Likewise an extension: its space must lie inside the sweep's, a samples budget is whole.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(excluded_checks=excluded)
