"""A small Python client for the sweepd REST API (``/api/v1``), used by ``sweepd submit``,
``status``, ``cancel``, ``extend`` and ``priority``, and by anything else that wants to drive sweepd.

    from sweepd.client import SweepdClient

    with SweepdClient("http://127.0.0.1:8080", token="swd_...") as c:
        sweep = c.submit("examples/nightly.yaml")        # a path, YAML/JSON text, or a dict
        final = c.wait(sweep["id"], on_update=print)     # polls until the sweep is finished
        print(final["state"], final["best"])

Connection errors and 502/503/504 answers are retried with exponential backoff
(``backoff * 2**attempt`` seconds, ``retries`` times); other 4xx/5xx answers are not. A submit
carries an ``Idempotency-Key`` (a new UUID per :meth:`SweepdClient.submit`, the same on each of its
retries), so a retry after a lost answer (a proxy's 502, a timeout, a dropped connection) gets the
sweep the first try made instead of making a second one. Every failure is a :class:`ClientError`
whose ``str()`` is one line:

- :class:`AuthError`          401/403: missing, wrong or revoked token
- :class:`NotFoundError`      404: no such sweep
- :class:`SpecRejected`       422: the spec is invalid; ``.errors`` is ``[(field_path, msg), ...]``
- :class:`ConflictError`      409: e.g. cancelling (or reprioritising) a sweep that has already finished
- :class:`ServerUnreachable`  no answer (or only 502/503/504) after all the retries
- :class:`WaitTimeout`        :meth:`SweepdClient.wait` gave up after ``timeout`` seconds
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from sweepd.formatting import dotted_path

API = "/api/v1"
DEFAULT_SERVER = "http://127.0.0.1:8080"
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
RETRY_STATUS = frozenset({502, 503, 504})
MAX_BACKOFF = 30.0

IDEMPOTENCY_HEADER = "Idempotency-Key"

# Transport errors after which the request certainly did not reach the server: safe to retry
# for every method. Others (read timeouts, dropped connections) are retried only for requests
# safe to send twice: reads, a submit with its Idempotency-Key (the server answers a repeat
# with the sweep the first one made) and a priority change. Cancel and extend are not retried after them.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _one_line(text: Any, limit: int = 400) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


class ClientError(Exception):
    """A request to sweepd failed. ``str(err)`` is a one-line reason; ``status`` the HTTP
    status (None when there was no answer)."""

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None):
        super().__init__(_one_line(message))
        self.status = status
        self.url = url

    @property
    def message(self) -> str:
        return self.args[0]


class AuthError(ClientError):
    """401/403: the token is missing, wrong or revoked."""


class NotFoundError(ClientError):
    """404: no such sweep (or route)."""


class ConflictError(ClientError):
    """409: the request does not fit the sweep's state (e.g. cancelling a finished sweep)."""


class SpecRejected(ClientError):
    """422: the server rejected the spec. ``errors`` is a list of ``(field_path, message)``."""

    def __init__(self, errors: list[tuple[str, str]], *, status: int | None = 422, url: str | None = None):
        self.errors = errors
        n = len(errors)
        shown = "; ".join(f"{path}: {msg}" if path else msg for path, msg in errors[:5])
        more = f"; … and {n - 5} more" if n > 5 else ""
        super().__init__(f"invalid spec ({n} problem{'s' if n != 1 else ''}): {shown}{more}",
                         status=status, url=url)


class ServerUnreachable(ClientError):
    """No usable answer after all the retries (connection refused, DNS, timeouts, 502/503/504)."""


class WaitTimeout(ClientError):
    """:meth:`SweepdClient.wait` ran out of time; the sweep goes on."""


# ------------------------------------------------------------------------------------ helpers


def _loc_path(loc: Any) -> str:
    """``["body", "search", "space", 0, "x"]`` -> ``search.space[0].x``; strings pass through."""
    if isinstance(loc, str):
        return loc
    if not isinstance(loc, (list, tuple)):
        return "" if loc is None else str(loc)
    parts = list(loc)
    return dotted_path(parts[1:] if parts and parts[0] == "body" else parts)


def _spec_errors(body: Any) -> list[tuple[str, str]]:
    """The ``(field_path, msg)`` pairs of a 422 answer (FastAPI's ``{"detail": [...]}`` shape,
    or a plain string detail)."""
    detail = body.get("detail") if isinstance(body, Mapping) else body
    if isinstance(detail, list):
        errors = []
        for item in detail:
            if isinstance(item, Mapping):
                errors.append((_loc_path(item.get("loc")), _one_line(item.get("msg", item))))
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                errors.append((str(item[0]), _one_line(item[1])))
            else:
                errors.append(("", _one_line(item)))
        return errors or [("", "rejected")]
    if detail is None:
        return [("", "rejected")]
    return [("", _one_line(detail))]


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return _one_line(response.text or response.reason_phrase, 200)
    if isinstance(body, Mapping) and "detail" in body:
        d = body["detail"]
        if isinstance(d, list):
            return "; ".join(f"{p}: {m}" if p else m for p, m in _spec_errors(body))
        return _one_line(d, 200)
    return _one_line(json.dumps(body), 200)


def _is_file(text: str) -> bool:
    if "\n" in text or len(text) > 1024:
        return False
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def _spec_body(spec: str | os.PathLike | Mapping[str, Any]) -> tuple[bytes, str]:
    """The request body and content type for a spec given as a dict, a file, or YAML/JSON text."""
    if isinstance(spec, Mapping):
        return json.dumps(dict(spec)).encode(), "application/json"
    if isinstance(spec, os.PathLike) or _is_file(str(spec)):
        path = Path(spec)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ClientError(f"cannot read spec {str(path)!r}: {err.strerror or err}") from None
        kind = "application/json" if path.suffix.lower() == ".json" else "application/yaml"
        return text.encode("utf-8"), kind
    text = str(spec)
    if "\n" not in text.strip() and text.strip().lower().endswith((".yaml", ".yml", ".json")):
        raise ClientError(f"cannot read spec {text.strip()!r}: no such file")
    kind = "application/json" if text.lstrip().startswith(("{", "[")) else "application/yaml"
    return text.encode("utf-8"), kind


def load_space(space: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """A narrowed search space for ``extend``: a mapping, or a YAML/JSON file holding one (bare,
    under ``space:``, or a whole spec, whose ``search.space`` it takes)."""
    if not isinstance(space, Mapping):
        import yaml

        path = Path(space)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ClientError(f"cannot read space {str(path)!r}: {err.strerror or err}") from None
        except yaml.YAMLError as err:
            raise ClientError(f"{path}: not YAML/JSON: {_one_line(err, 200)}") from None
        space = data
    if isinstance(space, Mapping) and isinstance(space.get("search"), Mapping):  # a whole spec: its space
        space = space["search"]
    if isinstance(space, Mapping) and isinstance(space.get("space"), Mapping):
        space = space["space"]
    if not isinstance(space, Mapping):
        raise ClientError(f"a space is a mapping of search-space keys to domains, got {type(space).__name__}")
    return dict(space)


# ------------------------------------------------------------------------------------- client


class SweepdClient:
    """The REST API of one sweepd server. Thread-unsafe like the httpx.Client it wraps; use it
    as a context manager or call :meth:`close`."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 10,
        retries: int = 5,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if backoff < 0:
            raise ValueError(f"backoff must be >= 0, got {backoff}")
        self.base_url = (base_url or os.environ.get("SWEEPD_SERVER") or DEFAULT_SERVER).rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"server URL must start with http:// or https://, got {self.base_url!r}")
        self.token = token if token is not None else os.environ.get("SWEEPD_TOKEN") or None
        self.retries = retries
        self.backoff = backoff
        self._sleep = sleep
        headers = {"Accept": "application/json", "User-Agent": "sweepd-client"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        kwargs: dict[str, Any] = {}
        if transport is not None:
            kwargs["transport"] = transport
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, **kwargs)

    # -- plumbing

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "SweepdClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _delay(self, attempt: int) -> float:
        return min(MAX_BACKOFF, self.backoff * (2 ** attempt))

    def _request(self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any) -> httpx.Response:
        """One request with retries; returns a 2xx response or raises a ClientError.
        ``idempotent``: safe to send again after a transport error once it may have been sent
        (default: for GET, HEAD and OPTIONS)."""
        url = f"{self.base_url}{path}"
        if idempotent is None:
            idempotent = method.upper() in ("GET", "HEAD", "OPTIONS")
        last = ""
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as err:
                last = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
                if not (idempotent or isinstance(err, _NOT_SENT)):
                    raise ServerUnreachable(
                        f"{method} {url} failed after the request was sent ({last}); not retried",
                        url=url) from None
            else:
                if response.status_code not in RETRY_STATUS:
                    return self._check(response, url)
                last = f"HTTP {response.status_code}"
            if attempt < self.retries:
                self._sleep(self._delay(attempt))
        tries = self.retries + 1
        raise ServerUnreachable(
            f"cannot reach sweepd at {self.base_url} ({last}; {tries} attempt{'s' if tries != 1 else ''})",
            url=url)

    @staticmethod
    def _check(response: httpx.Response, url: str) -> httpx.Response:
        code = response.status_code
        if code < 400:
            return response
        if code in (401, 403):
            why = "missing or invalid token" if code == 401 else "token not allowed"
            raise AuthError(f"{why} ({code} from {url}): {_detail(response)}", status=code, url=url)
        if code == 404:
            raise NotFoundError(f"not found ({url}): {_detail(response)}", status=code, url=url)
        if code == 409:
            raise ConflictError(_detail(response), status=code, url=url)
        if code == 422:
            try:
                body = response.json()
            except ValueError:
                body = response.text
            raise SpecRejected(_spec_errors(body), status=code, url=url)
        raise ClientError(f"HTTP {code} from {response.request.method} {url}: {_detail(response)}",
                          status=code, url=url)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ClientError(f"{method} {path}: the answer is not JSON: {_one_line(response.text, 120)}",
                              status=response.status_code) from None

    # -- the API

    def health(self) -> Any:
        """``GET /healthz``: the server's health answer (JSON when it sends JSON)."""
        response = self._request("GET", "/healthz")
        try:
            return response.json()
        except ValueError:
            return response.text

    def submit(self, spec: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
        """Post a sweep spec: a dict (sent as JSON), a path to a YAML/JSON file, or YAML/JSON
        text. Returns the new sweep: state ``validating`` while the server's data preflight reads
        the data (then ``queued``, or ``failed`` with the data error as its ``error``), or
        ``queued`` at once when that preflight is cached. Raises SpecRejected with every problem
        found before the sweep exists (the spec, a data file that does not open, a tokenizer
        that does not load). Every retry of this submit sends the same ``Idempotency-Key``, so
        the server makes one sweep however many tries it took."""
        body, content_type = _spec_body(spec)
        headers = {"Content-Type": content_type, IDEMPOTENCY_HEADER: str(uuid.uuid4())}
        return self._json("POST", f"{API}/sweeps", idempotent=True, content=body, headers=headers)

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        """The sweep: state, progress, best trial, ledger, spec."""
        return self._json("GET", f"{API}/sweeps/{sweep_id}")

    def list_sweeps(self, state: str | None = None, limit: int = 50, offset: int = 0,
                    order: str = "newest") -> dict[str, Any]:
        """A page of sweeps, newest first (``order="start"``: in the order queued sweeps start):
        ``{"items": [...], ...}`` as the server sends it."""
        params: dict[str, Any] = {"limit": limit, "offset": offset, "order": order}
        if state is not None:
            params["state"] = state
        return self._json("GET", f"{API}/sweeps", params=params)

    def trials(self, sweep_id: str) -> list[dict[str, Any]]:
        """The sweep's trials in number order."""
        body = self._json("GET", f"{API}/sweeps/{sweep_id}/trials")
        items = body.get("items", []) if isinstance(body, Mapping) else body
        return list(items or [])

    def cancel(self, sweep_id: str) -> Any:
        """Ask the server to cancel the sweep (202); ConflictError when it has already finished."""
        return self._json("POST", f"{API}/sweeps/{sweep_id}/cancel")

    def set_priority(self, sweep_id: str, priority: str) -> dict[str, Any]:
        """Change the sweep's priority (low, normal or high): a queued sweep moves in the queue, a
        running one's share of the cluster follows. Returns the sweep; ConflictError when it has
        already finished, SpecRejected (naming ``priority``) for a value the server refuses."""
        # idempotent: setting the same priority twice is the same as once (a retry is safe)
        return self._json("PATCH", f"{API}/sweeps/{sweep_id}", idempotent=True, json={"priority": priority})

    def extend(self, sweep_id: str, *, trials: int | None = None, budget: float | None = None,
               space: str | os.PathLike | Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Extend a finished sweep: ``trials`` more trials and/or ``budget`` more compute budget
        (in its unit), optionally with a narrowed ``space`` (a mapping of space entries, or a
        YAML/JSON file of one, bare or under ``space:``, or a whole spec). Returns the
        sweep, queued again; ConflictError while it is queued or running, SpecRejected when the
        extension is not possible (a space key outside the sweep's space is named)."""
        body: dict[str, Any] = {}
        if trials is not None:
            body["trials"] = trials
        if budget is not None:
            body["budget"] = budget
        if space is not None:
            body["space"] = load_space(space)
        return self._json("POST", f"{API}/sweeps/{sweep_id}/extend", json=body)

    def report(self, sweep_id: str, format: str = "json") -> Any:
        """The server's report on the sweep: a dict for ``json``, text for ``markdown``."""
        if format not in ("json", "markdown"):
            raise ValueError(f"format must be 'json' or 'markdown', got {format!r}")
        response = self._request("GET", f"{API}/sweeps/{sweep_id}/report", params={"format": format})
        return response.json() if format == "json" else response.text

    def wait(
        self,
        sweep_id: str,
        poll: float = 2.0,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Poll the sweep every ``poll`` seconds until it is succeeded, failed or cancelled (through
        ``validating``, ``queued`` and ``running``), and return it. ``on_update(sweep)`` is called after every poll (the last one included).
        Raises WaitTimeout after ``timeout`` seconds (the sweep goes on)."""
        if poll <= 0:
            raise ValueError(f"poll must be > 0, got {poll}")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            sweep = self.get_sweep(sweep_id)
            if on_update is not None:
                on_update(sweep)
            if sweep.get("state") in TERMINAL_STATES:
                return sweep
            if deadline is not None and time.monotonic() + poll > deadline:
                raise WaitTimeout(f"sweep {sweep_id} still {sweep.get('state')} after {timeout:g} s")
            self._sleep(poll)
