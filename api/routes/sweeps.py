"""/api/v1/sweeps: submit, list, inspect, reprioritise, cancel and extend sweeps; their trials,
curves, events, calibration and report."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import analysis, body, idempotency, views
from api.deps import SessionDep, SettingsDep, WriterDep
from api.errors import R401, R403, R404, R409, R413, R415, R422, responses
from api.routes import API_PREFIX, READ_ERRORS, ReadSessionDep
from api.schemas import (
    Calibration,
    ErrorOut,
    EventList,
    EventPublic,
    ReportJson,
    SweepCurves,
    SweepDetail,
    SweepExtend,
    SweepPage,
    SweepPublic,
    SweepUpdate,
    TrialList,
    TrialPublic,
)
from sweepd.engine import warm_start
from sweepd.engine.finalize import result_document
from sweepd.engine.fingerprint import fingerprint
from sweepd.report import markdown_summary
from sweepd.service.extend import ExtendConflict, extend_sweep as extend_stored
from sweepd.spec import Capacity, SpecError, SweepSpec
from sweepd.store import repo
from sweepd.store.db import json_dumps
from sweepd.store.models import SweepState, TrialState
from sweepd.protocol import METRIC_KEYS

router = APIRouter(prefix=f"{API_PREFIX}/sweeps", tags=["sweeps"])

MAX_INT32 = 2**31 - 1  # ids and offsets are 32-bit integers in PostgreSQL
SweepId = Annotated[str, Path(description="the sweep's id", max_length=200)]

_spec_ref = {"$ref": "#/components/schemas/SweepSpec"}
_spec_body = {
    "requestBody": {
        "required": True,
        "description": "a sweep spec (see `examples/demo.yaml`), as JSON or YAML",
        "content": {mt: {"schema": _spec_ref} for mt in body.SPEC_TYPES},
    },
    "parameters": [{
        "name": idempotency.HEADER, "in": "header", "required": False,
        "description": "a unique value per sweep (a UUID; also as a quoted string): sent again with the same "
                       "body, the answer is the sweep the first request made (`Idempotent-Replayed: true`), "
                       "not a second sweep; with another body, a 422",
        "schema": {"type": "string", "minLength": 1, "maxLength": idempotency.MAX_KEY_LENGTH,
                   "pattern": "^[!-~]+$"},
    }],
}


def _capacity(request: Request) -> Capacity:
    """What a trial may reserve: this machine's CPUs and GPUs (detected once), or anything
    when sweeps run on a Ray cluster, whose size only the cluster knows."""
    state = request.app.state
    if getattr(state, "capacity", None) is None:
        settings = state.settings
        state.capacity = Capacity.unlimited() if settings.ray_address else Capacity.detect()
    return state.capacity


def _trials(session: Session, sweep_id: str, state: TrialState | None = None) -> list[TrialPublic]:
    return [TrialPublic.model_validate(t) for t in repo.list_trials(session, sweep_id, state=state)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SweepPublic,
    responses=responses(R401, R403, R413, R415, R422),
    openapi_extra=_spec_body,
    summary="Submit a sweep",
)
async def create_sweep(request: Request, response: Response, session: SessionDep, settings: SettingsDep,
                       token: WriterDep) -> SweepPublic:
    """Validate the spec (every problem at once, each with its field path; data and model
    paths must resolve inside SWEEPD_DATA_ROOTS), store the sweep and start its data preflight.

    What is cheap and certain is checked before the sweep exists, a 422 naming the field: the
    spec, every data file opening (an empty train file), the model's tokenizer loading. The data
    preflight's tokenising pass (every line of every file with the model's tokenizer) then runs
    off the request: the sweep is answered at once in state `validating` ("validating data") and
    becomes `queued` when its data is fine (its summary is the sweep's first "data" event), or
    `failed` with the preflight's first `file:line: reason` as its `error` (every error line in an
    "error" event; no trial is started). A preflight cached from an earlier sweep with the same
    files, tokenizer and data policy is used at once: the sweep is answered `queued`."""
    mt = body.check_media_type(request)
    key = idempotency.key_of(request)  # 422 on a malformed key, before the body is read
    raw = await body.read_limited(request, settings.max_body_bytes)
    capacity = await run_in_threadpool(_capacity, request)

    def replayed(sweep_digest: str) -> tuple[SweepPublic, None, None, bool] | None:
        existing = repo.sweep_by_idempotency_key(session, key) if key is not None else None
        if existing is None:
            return None
        return views.sweep_public(session, idempotency.replay(existing, key, sweep_digest)), None, None, True

    def create() -> tuple[SweepPublic, SweepSpec | None, object, bool]:
        # Parsing and validation run here, in a worker thread: a megabyte of YAML takes seconds of
        # pure-Python parsing, which on the event loop would stall every other request (/healthz).
        request_digest = idempotency.digest(mt, raw) if key is not None else None
        done = replayed(request_digest)
        if done is not None:
            return done
        spec = body.validate_spec(body.decode(raw, mt), data_roots=settings.resolved_data_roots, capacity=capacity)
        problems = warm_start.check_reference(session, spec)  # search.warm_start: <sweep id>
        if problems:
            raise body.unprocessable(*[body.error(body.field_loc(path), msg) for path, msg in problems])
        data = body.precheck_data(spec, home=settings.home)  # 422 on an unreadable file or tokenizer
        state = SweepState.queued if data.summary is not None else SweepState.validating
        try:
            sweep = repo.create_sweep(session, name=spec.name, spec=spec.to_stored(), fingerprint=fingerprint(spec),
                                      state=state, idempotency_key=key, idempotency_digest=request_digest)
        except IntegrityError:  # the same key, sent again while the first request was still running
            session.rollback()
            done = replayed(request_digest)
            if done is None:
                raise
            return done
        repo.add_event(session, sweep.id, "info", f"sweep submitted with token {token.name!r}",
                       payload={"token": token.name, **({"idempotency_key": key} if key else {})})
        if data.summary is not None:
            repo.add_preflight_event(session, sweep.id, data.summary)
        else:
            n = len(spec.data.train) + len(spec.data.eval)
            repo.add_event(session, sweep.id, "state",
                           f"validating data: reading {n} file{'s' if n != 1 else ''} with the tokenizer of "
                           f"{spec.model.path}", payload={"state": SweepState.validating.value})
        session.commit()
        return views.sweep_public(session, sweep), (spec if data.summary is None else None), data.chat, False

    public, pending, chat, was_replayed = await run_in_threadpool(create)
    if pending is not None:  # committed: the worker's own session sees it
        request.app.state.preflight.submit(public.id, pending, chat)
    response.headers["Location"] = f"{API_PREFIX}/sweeps/{public.id}"
    if was_replayed:
        response.headers[idempotency.REPLAYED_HEADER] = "true"
    return public


@router.get("", responses=responses(R401, R422), summary="List sweeps")
def list_sweeps(
    session: ReadSessionDep,
    state: Annotated[SweepState | None, Query(description="only sweeps in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_INT32)] = 0,
    order: Annotated[Literal["newest", "start"], Query(
        description="newest first (default), or `start`: the order queued sweeps start in, highest "
                    "priority first, then oldest (with `state=queued`, the queue)")] = "newest",
) -> SweepPage:
    """Newest first, or in start order."""
    page = repo.list_sweeps(session, state=state, limit=limit, offset=offset, load_spec=False, order=order)
    return SweepPage(items=views.sweep_publics(session, page.items), total=page.total,
                     limit=page.limit, offset=page.offset)


@router.get("/{sweep_id}", responses=READ_ERRORS, summary="A sweep: state, progress, best trial, ledger and spec")
def get_sweep(sweep_id: SweepId, session: ReadSessionDep) -> SweepDetail:
    return views.sweep_detail(session, views.sweep_or_404(session, sweep_id))


@router.patch("/{sweep_id}",
              responses=responses({400: {"model": ErrorOut, "description": "the body is not UTF-8 JSON"}},
                                  R401, R403, R404, R409, R422),
              summary="Change a sweep's priority")
def update_sweep(sweep_id: SweepId, update: SweepUpdate, session: SessionDep, token: WriterDep) -> SweepDetail:
    """A queued sweep moves in the queue at once (highest priority first, then oldest); a running
    sweep's share of the cluster follows at the supervisor's next round. The change is the
    sweep's "info" event (`priority normal -> high`). A finished sweep is a 409."""
    sweep = views.sweep_or_404(session, sweep_id)
    if SweepState(sweep.state).terminal:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            detail=f"sweep {sweep.id!r} is already {sweep.state}: only a validating, queued or "
                                   "running sweep's priority can change")
    before = sweep.priority
    if update.priority != before:
        repo.set_priority(session, sweep.id, update.priority)
        repo.add_event(session, sweep.id, "info", f"priority {before} -> {update.priority}, set with token "
                       f"{token.name!r}", payload={"priority": update.priority, "previous": before, "token": token.name})
    session.commit()
    return views.sweep_detail(session, sweep)


@router.post("/{sweep_id}/cancel", status_code=status.HTTP_202_ACCEPTED,
             responses=responses(R401, R403, R404, R409, R422), summary="Cancel a validating, queued or running sweep")
def cancel_sweep(request: Request, sweep_id: SweepId, session: SessionDep, token: WriterDep) -> SweepPublic:
    """The sweep becomes `cancelled` at once; its driver stops the running trials within
    seconds (a sweep still validating its data: the preflight stops). A sweep that has already
    finished is a 409."""
    sweep = views.sweep_or_404(session, sweep_id)
    done = repo.set_sweep_state(session, sweep.id, SweepState.cancelled,
                                only_from=[SweepState.validating, SweepState.queued, SweepState.running],
                                message=f"sweep cancelled with token {token.name!r}")
    if done is None:
        session.rollback()
        current = repo.get_sweep(session, sweep.id)
        raise HTTPException(status.HTTP_409_CONFLICT,
                            detail=f"sweep {sweep.id!r} is already {current.state if current else 'gone'}: "
                                   "only validating, queued or running sweeps can be cancelled")
    session.commit()
    request.app.state.preflight.cancel(sweep.id)  # a validating sweep: its preflight stops
    return views.sweep_public(session, done)


@router.post("/{sweep_id}/extend", status_code=status.HTTP_202_ACCEPTED,
             responses=responses({400: {"model": ErrorOut, "description": "the body is not UTF-8 JSON"}},
                                 R401, R403, R404, R409, R422),
             summary="Extend a finished sweep: more trials or budget, optionally a narrowed space")
def extend_sweep(sweep_id: SweepId, extension: SweepExtend, session: SessionDep, token: WriterDep) -> SweepDetail:
    """The same sweep goes on: its spec gets the trials or budget (and the narrowed space), it is
    queued again, and its driver continues the same Optuna study and pruner state in a new Tune
    run. A sweep still queued or running is a 409; a space entry outside the sweep's space, or a
    spec that would not validate, a 422 naming the field."""
    sweep = views.sweep_or_404(session, sweep_id)
    try:
        done = extend_stored(session, sweep.id, trials=extension.trials, budget=extension.budget,
                             space=extension.space, by=f"token {token.name!r}")
    except ExtendConflict as err:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(err)) from None
    except SpecError as err:
        session.rollback()
        raise body.unprocessable(*[body.error(body.field_loc(path), msg) for path, msg in err.errors]) from None
    session.commit()
    return views.sweep_detail(session, done)


@router.get("/{sweep_id}/trials", responses=READ_ERRORS, summary="A sweep's trials, in number order")
def list_trials(
    sweep_id: SweepId,
    session: ReadSessionDep,
    state: Annotated[TrialState | None, Query(description="only trials in this state")] = None,
) -> TrialList:
    return TrialList(items=_trials(session, views.sweep_or_404(session, sweep_id).id, state))


_CURVE_FIELD = "(" + "|".join(METRIC_KEYS) + ")"


@router.get("/{sweep_id}/curves", response_model=SweepCurves, responses=READ_ERRORS,
            summary="Every trial's training curve, downsampled, in columns")
def get_curves(
    sweep_id: SweepId,
    session: ReadSessionDep,
    max_points: Annotated[int, Query(ge=2, le=2000, description="points per trial at most")] = 200,
    fields: Annotated[str | None, Query(
        pattern=rf"^{_CURVE_FIELD}(,{_CURVE_FIELD})*$",
        description="comma-separated columns to return (default: all); `step` is always returned",
        examples=["samples,loss,grad_norm"])] = None,
) -> Response:
    """One response for the whole sweep (the dashboard's chart): each trial's points keep the
    first and last step and evenly spaced steps between them (so a stopped trial keeps the point
    where it was stopped). Columnar: per trial one list per field (`step`, `samples`, `loss`,
    ...), index `i` of each being the same point, rather than one object per point."""
    sweep = views.sweep_or_404(session, sweep_id)
    wanted = tuple(fields.split(",")) if fields else METRIC_KEYS
    doc = {"trials": analysis.sweep_curves(session, sweep.id, max_points, wanted)}
    try:
        content = json.dumps(doc, separators=(",", ":"), allow_nan=False)
    except ValueError:  # a non-finite float that did not come through the repository: null
        content = json_dumps(doc)
    return Response(content, media_type="application/json")


@router.get("/{sweep_id}/events", responses=READ_ERRORS,
            summary="A sweep's events: the pruner's decisions, state changes, errors")
def list_events(
    sweep_id: SweepId,
    session: ReadSessionDep,
    after_id: Annotated[int | None, Query(ge=0, le=MAX_INT32, description="only events newer than this id")] = None,
    kind: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.:-]{1,32}$",
                                      description="only this kind: decision, state, info, error, ...")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> EventList:
    """Oldest first (poll with `after_id` = the last id seen)."""
    sweep = views.sweep_or_404(session, sweep_id)
    events = repo.list_events(session, sweep.id, kind=kind, after_id=after_id, limit=limit)
    return EventList(items=[EventPublic.model_validate(e) for e in events])


@router.get("/{sweep_id}/calibration", responses=READ_ERRORS,
            summary="How well the early signals predicted the final objective")
def get_calibration(sweep_id: SweepId, session: ReadSessionDep) -> Calibration:
    """For the completed trials: Spearman's rho between the smoothed `loss` / `grad_norm` at
    each of the pruner's first rungs and the final objective (null when n < 3)."""
    return analysis.calibration(session, views.sweep_or_404(session, sweep_id))


@router.get(
    "/{sweep_id}/report",
    response_model=ReportJson,
    responses={
        **READ_ERRORS,
        200: {"description": "the result document (JSON) or a Markdown summary",
              "content": {"application/json": {}, "text/markdown": {"schema": {"type": "string"}}}},
    },
    summary="The sweep's result: JSON document or Markdown summary",
)
def get_report(
    request: Request,
    sweep_id: SweepId,
    session: ReadSessionDep,
    format: Annotated[Literal["json", "markdown"], Query(description="json or markdown")] = "json",
) -> ReportJson | Response:
    """JSON: the result document (what `sweepd run --out` writes). Markdown: the summary that
    `sweepd submit --summary` writes for CI (sweepd/report.py), linking to this server's dashboard."""
    sweep = views.sweep_or_404(session, sweep_id)
    if format == "markdown":
        public = views.sweep_public(session, sweep).model_dump(mode="json")
        trials = [t.model_dump(mode="json") for t in _trials(session, sweep.id)]
        text = markdown_summary(public, trials, dashboard_url=str(request.base_url))
        return PlainTextResponse(text, media_type="text/markdown")
    return ReportJson.model_validate(result_document(session, sweep.id))
