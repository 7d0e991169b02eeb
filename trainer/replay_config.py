"""``model.replay``: how a ``builtin:replay`` trial replays recorded training curves.

    model:
      path: builtin:replay
      replay:
        curves: builtin:curve_bank   # or builtin:night_bank | builtin:vit | builtin:conformer | a .jsonl(.gz) file
        speed: 10                    # 10x the recorded pace (default 1: as recorded)
        max_reports: 50              # resample each curve to at most 50 reported steps
        run: b32_lr4e-03_w0_constant_s0   # optional: every trial replays this run

Pure pydantic (no torch, no file access): the spec checks and the trial itself load the curves
(trainer/replay_bank.py) and say what is wrong with them there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

REPLAY_MODEL = "builtin:replay"
_DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data"
# builtin:<name> -> the recorded bank shipped with sweepd (benchmarks/data/README.md)
BUILTIN_CURVES: dict[str, Path] = {
    "builtin:curve_bank": _DATA / "curve_bank.jsonl.gz",
    "builtin:night_bank": _DATA / "night_bank.jsonl.gz",
    "builtin:vit": _DATA / "algoperf" / "vit.jsonl.gz",
    "builtin:conformer": _DATA / "algoperf" / "conformer.jsonl.gz",
}
DEFAULT_CURVES = "builtin:curve_bank"


class ReplayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    curves: str = Field(DEFAULT_CURVES, description=(
        f"the recorded runs: {', '.join(BUILTIN_CURVES)}, or a gzip/plain JSONL file in the curve "
        "bank's format (benchmarks/data/README.md)"))
    speed: Annotated[float, Field(gt=0, le=1e9)] = Field(
        1.0, description="replay pace as a multiple of the recorded one (10: ten times faster)")
    seconds_per_step: Annotated[float, Field(ge=0, le=86400)] | None = Field(
        None, description="a fixed pace instead: seconds between reported steps (0: no waiting)")
    max_reports: Annotated[int, Field(ge=1, le=10**7)] | None = Field(
        None, description="resample each curve to at most this many reported steps (evenly spaced, last kept)")
    run: str | None = Field(None, description=(
        "replay this recorded run in every trial; default: the run nearest each trial's hyperparameters"))

    @model_validator(mode="after")
    def _one_pace(self) -> "ReplayConfig":
        # by value, not by presence: a dumped config (the spec's trial configs) holds speed 1.0
        if self.speed != 1.0 and self.seconds_per_step is not None:
            raise ValueError("give speed or seconds_per_step, not both")
        if self.curves.startswith("builtin:") and self.curves not in BUILTIN_CURVES:
            raise ValueError(f"unknown builtin curves {self.curves!r}; known: {', '.join(BUILTIN_CURVES)}")
        if not self.curves.strip():
            raise ValueError("curves: empty; give a builtin bank or a file")
        return self

    def curves_path(self) -> Path:
        """The file to read: a builtin bank's, else ``curves`` as given (the spec made it absolute)."""
        return BUILTIN_CURVES.get(self.curves, Path(self.curves).expanduser())

    def pace(self, recorded_seconds: list[float]) -> list[float]:
        """When each reported step is due, in seconds from the trial's start."""
        if self.seconds_per_step is not None:
            return [self.seconds_per_step * (k + 1) for k in range(len(recorded_seconds))]
        return [s / self.speed for s in recorded_seconds]
