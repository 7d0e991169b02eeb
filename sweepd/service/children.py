"""Child processes of the service that must not outlive it."""

from __future__ import annotations

import ctypes
import signal


def die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGKILL it when the thread that started it dies
    (PR_SET_PDEATHSIG), so a killed service leaves no driver or Ray head behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
