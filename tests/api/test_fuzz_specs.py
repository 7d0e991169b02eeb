"""The big fuzzer (#15): thousands of generated requests against the app in-process, on SQLite.
No response may be a 5xx, and none may take a second or more.

Most requests POST a sweep spec: a valid one mutated (a field set to a wrong type, a huge or
non-finite number, unicode or a lone surrogate, a deep nest, a long list or string; a key deleted,
an unknown key added, a node wrapped), sent as JSON or YAML, sometimes with an Idempotency-Key,
sometimes as bytes that are not a spec at all. The rest are reads of every route with ids and query
values that exist or not, cancels, extensions with generated bodies, and the token routes.

Every request's wall time is measured. The machine is shared (2 cores, other jobs): a request
that takes a second or more is sent again twice, and only one that is slow all three times counts
as slow (first-try stalls are printed). Hypothesis is derandomized, so a run is repeatable.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from sweepd.settings import Settings
from sweepd.store import repo, session_scope
from tests.api.factories import LINE, add_trial, curve, make_sweep

pytestmark = pytest.mark.slow  # ~2-4 minutes on 2 cores

EXAMPLES = 1500  # each sends 2 to 5 requests: ~5,000 in all
MIN_REQUESTS = 2000
SLOW_S = 1.0
API = "/api/v1"


def base_spec(data: Path) -> dict[str, Any]:
    """A valid spec touching most sections (the mutations' starting point)."""
    return {
        "name": "fuzz",
        "model": {"path": "builtin:tiny"},
        "data": {"train": [{"path": str(data / "train.jsonl")}], "eval": [{"path": str(data / "eval.jsonl")}],
                 "max_seq_len": 512},
        "search": {"algorithm": "tpe", "num_trials": 4, "max_concurrent": 2, "seed": 0,
                   "space": {"effective_batch_size": {"choice": [8, 16]}, "learning_rate": {"loguniform": [1e-4, 1e-2]},
                             "warmup_steps": {"int": [0, 10]}, "lr_scheduler": {"choice": ["constant", "cosine"]}}},
        "fixed": {"eval": {"max_items": 8}},
        "budget": {"max_samples": 256},
        "pruner": {"type": "asha", "signal": "grad_norm", "grace": 32, "reduction_factor": 2, "window": 3},
        "objective": {"metric": "eval_loss", "mode": "min"},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "gpus_per_worker": 0, "zero_stage": 2},
    }  # fmt: skip


def paths_of(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (dict keys, list indexes) into ``node``, the root included."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths_of(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths_of(v, prefix + (i,))
    return out


# ---- values -------------------------------------------------------------------------------------

SURROGATES = ["\ud800", "a\udfffb", "\udc00" * 3]
SPECIAL_NUMBERS = [0, -1, 2**31, 2**63, -(2**63) - 1, 10**30, 10**400, 1e308, -1e308, 5e-324, -0.0,
                   math.inf, -math.inf, math.nan]


def nested(depth: int, leaf: Any, as_list: bool) -> Any:
    for _ in range(depth):
        leaf = [leaf] if as_list else {"n": leaf}
    return leaf


# words and numbers the spec's fields take, so that mutated specs get deep into validation (and
# some through it) rather than all stopping at the first type check
WORDS = ["tpe", "random", "grid", "asha", "median", "none", "paper", "loss", "grad_norm", "objective", "learned",
         "samples", "steps", "tokens", "min", "max", "mc_accuracy", "exact_match", "auto", "optimizer",
         "optimizer+params", "mean", "phased", "stacked", "truncate", "error", "drop", "previous", "constant",
         "cosine", "linear", "gpu_hours"]
KEYS = ["compute_budget", "warm_start", "max_steps", "epochs", "micro_batch_size", "micro_batch_tokens",
        "checkpoint_every", "gpu_memory_gb", "offload", "time_attr", "interval", "min_samples", "smooth",
        "min_completed", "save_best_model", "phase", "lenient", "overlong", "strategy", "hparams", "optimizer",
        "eval", "seed", "samples", "gpu_hours", "minutes", "choice", "uniform", "loguniform", "int",
        "weight_decay", "activation_checkpointing", "max_failures", "schema_version"]
scalars = st.one_of(
    st.sampled_from(WORDS), st.integers(-5, 5_000), st.floats(-10, 1e6),
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(SPECIAL_NUMBERS), st.text(max_size=40), st.sampled_from(SURROGATES),
    st.sampled_from(["builtin:tiny", "../../etc/passwd", "/etc/shadow", "eval_loss", "grid", "samples", "1e-5",
                     "~", "null", "NaN", "\x00", "a\u202eb", "\U0001f600" * 10, "x" * 300]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=6),
    st.dictionaries(st.text(max_size=12), scalars, max_size=4),
    st.builds(nested, st.integers(1, 120), scalars, st.booleans()),  # deep nesting
    st.builds(lambda n, v: [v] * n, st.integers(100, 20_000), scalars),  # long lists
    st.builds(lambda n: list(range(n)), st.integers(100, 20_000)),
    st.builds(lambda n, c: c * n, st.integers(1_000, 200_000), st.sampled_from(["x", "é", "\U0001f600"])),
    st.builds(lambda n: {f"k{i}": i for i in range(n)}, st.integers(100, 5_000)),  # many keys
)


@dataclass
class Mutation:
    op: str  # set | delete | unknown | wrap
    path: tuple
    value: Any = None
    key: str = ""


def apply(spec: dict, m: Mutation) -> Any:
    """``spec`` with ``m`` applied (a path that no longer exists after an earlier mutation: skipped)."""
    if not m.path:  # the document itself
        if m.op == "unknown" and isinstance(spec, dict):
            spec[m.key] = m.value
        return m.value if m.op == "set" else ([spec] if m.op == "wrap" else spec)
    parent: Any = spec
    for part in m.path[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return spec
    last = m.path[-1]
    try:
        current = parent[last]
    except (KeyError, IndexError, TypeError):
        return spec
    if m.op == "set":
        parent[last] = m.value
    elif m.op == "delete":
        del parent[last]
    elif m.op == "wrap":
        parent[last] = {"choice": [current]} if isinstance(current, (int, float)) else [current]
    elif m.op == "unknown" and isinstance(current, dict):
        current[m.key] = m.value
    return spec


def mutations(paths: list[tuple]) -> st.SearchStrategy[Mutation]:
    path = st.sampled_from(paths)
    return st.one_of(
        st.builds(Mutation, st.just("set"), path, values),
        st.builds(Mutation, st.just("delete"), path.filter(bool)),
        st.builds(Mutation, st.just("wrap"), path),
        st.builds(Mutation, st.just("unknown"), path, values,
                  key=st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=20))),
    )


# ---- requests -----------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    headers: dict[str, str | bytes] = field(default_factory=dict)


def encode(doc: Any, as_yaml: bool) -> tuple[bytes, str]:
    if as_yaml:
        try:
            return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode("utf-8", "surrogatepass"), \
                "application/yaml"
        except (yaml.YAMLError, RecursionError, UnicodeError):
            pass  # a value YAML cannot hold: send it as JSON
    return json.dumps(doc, allow_nan=True).encode(), "application/json"


ID_TEXT = st.one_of(st.text(max_size=30), st.sampled_from(["..", "%2e%2e", "x" * 200, "\x00", " ", "nope123"]))
QUERY_VALUE = st.one_of(st.text(max_size=20), st.integers().map(str), st.sampled_from(["-1", "0", "1e9", "NaN",
                                                                                       "2147483648", ""]))
READ_ROUTES = ["/sweeps", "/sweeps/{s}", "/sweeps/{s}/trials", "/sweeps/{s}/curves", "/sweeps/{s}/events",
               "/sweeps/{s}/calibration", "/sweeps/{s}/report", "/trials/{t}", "/trials/{t}/metrics"]
QUERY_KEYS = ["limit", "offset", "state", "max_points", "fields", "after_id", "kind", "format"]


def post_spec(paths: list[tuple], base: dict) -> st.SearchStrategy[Request]:
    @st.composite
    def build(draw: Any) -> Request:
        doc: Any = copy.deepcopy(base)
        for m in draw(st.lists(mutations(paths), min_size=0, max_size=4)):
            doc = apply(doc, m)
        content, media = encode(doc, draw(st.booleans()))
        headers = {"Content-Type": draw(st.sampled_from([media, media, media, "text/yaml", "application/json",
                                                         "text/plain", ""]))}
        if draw(st.integers(0, 3)) == 0:
            key = draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=8))
            headers["Idempotency-Key"] = key.encode("latin-1")  # httpx sends str headers as ASCII only
        return Request("POST", f"{API}/sweeps", content=content, headers=headers)

    return build()


garbage = st.builds(
    lambda content, media: Request("POST", f"{API}/sweeps", content=content, headers={"Content-Type": media}),
    st.one_of(st.binary(max_size=200), st.sampled_from([b"{", b"[1,", b"\xef\xbb\xbf{}", b"a: &a [*a]", b"!!python/object:os.system ls",
                                                      b"a: !!binary AAAA", b"- - - -", b"{\"a\": 1e999999}",
                                                      b"{\"name\": 1" + b"0" * 5000 + b"}",  # past int's 4,300 digits
                                                      b"search:\n  num_trials: 1" + b"0" * 5000])),
    st.sampled_from(["application/json", "application/yaml"]),
)  # fmt: skip


@st.composite
def read(draw: Any, known: dict[str, str]) -> Request:
    route = draw(st.sampled_from(READ_ROUTES))
    sid = draw(st.one_of(st.just(known["sweep"]), ID_TEXT))
    tid = draw(st.one_of(st.just(known["trial"]), ID_TEXT))
    params = draw(st.dictionaries(st.sampled_from(QUERY_KEYS), QUERY_VALUE, max_size=3))
    return Request("GET", API + route.format(s=quote(sid, safe=""), t=quote(tid, safe="")), params=params)


@st.composite
def write(draw: Any, known: dict[str, str]) -> Request:
    sid = quote(draw(st.one_of(st.just(known["sweep"]), st.just(known["finished"]), ID_TEXT)), safe="")
    kind = draw(st.sampled_from(["cancel", "extend", "tokens", "token"]))
    if kind == "cancel":
        return Request("POST", f"{API}/sweeps/{sid}/cancel")
    if kind == "extend":
        doc = draw(st.one_of(st.dictionaries(st.sampled_from(["trials", "budget", "space", "x"]), values, max_size=3),
                             values))
        return Request("POST", f"{API}/sweeps/{sid}/extend", content=json.dumps(doc, allow_nan=True).encode(),
                       headers={"Content-Type": "application/json"})
    if kind == "tokens":
        doc = draw(st.dictionaries(st.sampled_from(["name", "scope", "expires_in"]), values, max_size=3))
        return Request("POST", f"{API}/tokens", content=json.dumps(doc, allow_nan=True).encode(),
                       headers={"Content-Type": "application/json"})
    return Request(draw(st.sampled_from(["GET", "DELETE"])), f"{API}/tokens/{quote(draw(ID_TEXT), safe='')}")


# ---- the run ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str], Path]]:
    root = tmp_path_factory.mktemp("fuzz")
    data = root / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(LINE * 4)
    (data / "eval.jsonl").write_text(LINE * 2)
    app = create_app(Settings(database_url=f"sqlite:///{root / 'sweepd.db'}", home=root / "home", data_roots=[data]))
    with TestClient(app, raise_server_exceptions=False) as client:  # a 5xx is counted, not raised
        with session_scope(app.state.sessionmaker) as s:
            _, token = repo.create_token(s, "fuzz", scope="admin")
        sid = make_sweep(app.state.sessionmaker, data, state="running")
        tid = add_trial(app.state.sessionmaker, sid, 0, state="completed", objective=1.0, points=curve(100))
        finished = make_sweep(app.state.sessionmaker, data, state="succeeded")
        client.headers["Authorization"] = f"Bearer {token}"
        # warm up what the first submit loads once (capacity detection, the tokenizer, the preflight cache)
        warm = client.post(f"{API}/sweeps", content=json.dumps(base_spec(data)), headers={"Content-Type": "application/json"})
        assert warm.status_code == 201, warm.text
        app.state.preflight.futures[warm.json()["id"]].result(timeout=120)
        yield client, {"sweep": sid, "trial": tid, "finished": finished}, data


def test_thousands_of_generated_requests_get_no_5xx_and_no_slow_answer(fuzz_app):
    client, known, data = fuzz_app
    base = base_spec(data)
    paths = paths_of(base)
    request = st.one_of(post_spec(paths, base), post_spec(paths, base), garbage, read(known), read(known),
                        write(known))
    sent: list[tuple[str, str, int, float]] = []  # (method, path, status, seconds)
    errors: list[str] = []
    stalls: list[str] = []
    slow: list[str] = []

    def send(r: Request) -> tuple[int, float]:
        t = time.perf_counter()
        resp = client.request(r.method, r.path, params=r.params, content=r.content, headers=r.headers)
        return resp.status_code, time.perf_counter() - t

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(request, min_size=2, max_size=5))
    def run(requests: list[Request]) -> None:
        for r in requests:
            status, seconds = send(r)
            sent.append((r.method, r.path, status, seconds))
            what = f"{r.method} {r.path[:80]} {r.params} ({len(r.content or b''):,} bytes) -> {status}"
            if status >= 500:
                errors.append(what)
            if seconds >= SLOW_S:  # the machine, or this request? send it twice more
                again = [send(r)[1] for _ in range(2)]
                stalls.append(f"{what}: {seconds:.2f} s, again {again[0]:.2f} s, {again[1]:.2f} s")
                if min(again) >= SLOW_S:
                    slow.append(stalls[-1])

    run()
    n = len(sent)
    posts = sum(1 for m, p, _, _ in sent if m == "POST" and p == f"{API}/sweeps")
    created = sum(1 for m, p, s, _ in sent if m == "POST" and p == f"{API}/sweeps" and s == 201)
    times = sorted(s for *_, s in sent)
    print(f"\n{n} requests ({posts} spec POSTs, {created} made a sweep); statuses "
          f"{sorted({s for _, _, s, _ in sent})}; p50 {1000 * times[n // 2]:.1f} ms, p99 {1000 * times[int(n * 0.99)]:.1f} ms, "
          f"max {1000 * times[-1]:.0f} ms; {len(stalls)} first-try stalls over {SLOW_S:g} s")
    for line in stalls:
        print("  stall:", line)
    assert n >= MIN_REQUESTS
    assert posts >= MIN_REQUESTS // 3 and created > 0  # the specs are the point
    assert not errors, f"{len(errors)} responses >= 500:\n" + "\n".join(errors[:20])
    assert not slow, f"{len(slow)} requests slow every time:\n" + "\n".join(slow[:20])
