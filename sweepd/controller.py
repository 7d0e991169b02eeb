"""`python -m sweepd.controller SWEEP_ID`: one sweep's controller process, started by the
supervisor. It runs (or resumes) the stored sweep to its end and exits; it dies with its parent
(the service), and the next service start resumes the sweep."""

from __future__ import annotations

import logging
import signal
import sys

from sweepd.runner import drive
from sweepd.settings import get_settings
from sweepd.spec import SweepSpec
from sweepd.store import repo
from sweepd.store.db import make_engine, session_scope


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s controller %(levelname)s %(message)s")
    # SIGTERM (the service stopping) exits through Python, so Ray's atexit shutdown takes its
    # agent processes down too; the sweep stays RUNNING and the next service start resumes it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if len(argv) != 1:
        print("usage: python -m sweepd.controller SWEEP_ID", file=sys.stderr)
        return 2
    sweep_id = argv[0]
    db_url = get_settings().resolved_database_url
    engine = make_engine(db_url)
    with session_scope(engine) as s:
        sweep = repo.get_sweep(s, sweep_id)
        if sweep is None:
            print(f"no sweep {sweep_id!r}", file=sys.stderr)
            return 2
        if sweep.state not in ("queued", "running"):
            print(f"sweep {sweep_id} is {sweep.state}; nothing to do", file=sys.stderr)
            return 0
        spec = SweepSpec.from_stored(sweep.spec)
    try:
        result = drive(engine, db_url, sweep_id, spec)
    except Exception as err:  # the sweep failed as a whole: record why, for people and the API
        logging.exception("sweep %s failed", sweep_id)
        with session_scope(engine) as s:
            repo.set_sweep_state(s, sweep_id, "failed", error=f"controller error: {err}",
                                 only_from=["queued", "running"])
        return 1
    logging.info("sweep %s finished: %s", sweep_id, result["state"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
