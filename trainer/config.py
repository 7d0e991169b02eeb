"""The trial config: one YAML file describes one fine-tuning run.

Validation lives here (pydantic v2) so that the trainer CLI and the sweep engine reject the same
bad values with the same messages. Every model forbids unknown fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .replay_config import REPLAY_MODEL, ReplayConfig

# builtin:replay trains nothing: it replays recorded curves (trainer/replay.py), and reads no data
BUILTIN_MODELS = ("builtin:tiny", REPLAY_MODEL)
MAX_MICRO_BATCH_TOKENS = 10_000_000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(Strict):
    path: str = Field(description="builtin:tiny, builtin:replay (recorded curves, no training), "
                                  "or a Hugging Face model directory on disk")
    # exclude_if: a model other than builtin:replay is stored as before, with no `replay: null`
    replay: ReplayConfig | None = Field(None, exclude_if=lambda v: v is None, description=(
        "builtin:replay only: which recorded curves, at what pace (default: builtin:curve_bank as recorded)"))

    @model_validator(mode="after")
    def _known_builtin(self) -> "ModelConfig":
        if self.path.startswith("builtin:") and self.path not in BUILTIN_MODELS:
            raise ValueError(f"unknown builtin model {self.path!r}; known: {', '.join(BUILTIN_MODELS)}")
        if self.replay is not None and self.path != REPLAY_MODEL:
            raise ValueError(f"model.replay is only for path {REPLAY_MODEL} (got path {self.path!r})")
        if self.path == REPLAY_MODEL and self.replay is None:
            self.replay = ReplayConfig()
        return self


class DataFile(Strict):
    path: str
    phase: Annotated[int, Field(ge=1)] = 1


class DataConfig(Strict):
    # empty only for builtin:replay, which reads no data (TrialConfig and the sweep spec check it)
    train: list[DataFile]
    eval: list[DataFile] = []
    max_seq_len: Annotated[int, Field(ge=8, le=131072)] = 512
    strategy: Literal["stacked", "phased"] = "stacked"
    lenient: bool = Field(False, description="skip bad lines (and report them) instead of failing")
    overlong: Literal["drop", "truncate", "error"] = Field(
        "drop", description="a sample longer than max_seq_len: drop it (counted), truncate it to "
                            "max_seq_len, or fail (caught by the data preflight before any trial)")


class HParams(Strict):
    effective_batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 32
    learning_rate: Annotated[float, Field(gt=0, le=1.0)] = 2e-5
    warmup_steps: Annotated[int, Field(ge=0, le=10**9)] = 0
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"


class Budget(Strict):
    max_steps: Annotated[int, Field(ge=1, le=10**9)] | None = None
    max_samples: Annotated[int, Field(ge=1, le=10**12)] | None = None
    epochs: Annotated[float, Field(gt=0, le=10**6)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "Budget":
        given = [k for k in ("max_steps", "max_samples", "epochs") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of max_steps, max_samples, epochs"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class CheckpointEvery(Strict):
    """How often a trial writes a resumable checkpoint: exactly one of minutes or samples."""

    minutes: Annotated[float, Field(gt=0, le=10_000_000)] | None = None
    samples: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "CheckpointEvery":
        if (self.minutes is None) == (self.samples is None):
            raise ValueError("give exactly one of minutes, samples")
        return self


class Resources(Strict):
    num_workers: Annotated[int, Field(ge=1, le=512)] = 1
    zero_stage: Literal[0, 1, 2, 3] = 2
    micro_batch_tokens: int | Literal["auto"] = "auto"
    micro_batch_size: Annotated[int, Field(ge=1, le=1_000_000)] | None = Field(
        None, description="samples per micro-batch; when set it replaces token-based packing limits"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    activation_checkpointing: Literal["auto"] | bool = Field(
        "auto", description="recompute activations in the backward pass; auto: on when the fit "
                            "estimate says the trial would not fit in GPU memory without it")
    offload: Literal["none", "optimizer", "optimizer+params"] = Field(
        "none", description="ZeRO offload to CPU memory: the optimizer states (ZeRO stage >= 1), "
                            "or the optimizer states and the parameters (ZeRO stage 3)")
    checkpoint_every: CheckpointEvery | None = Field(
        None, description="write a resumable checkpoint every so many minutes or samples; "
                          "null: never (a retried trial starts from step 0)")
    gpu_memory_gb: Annotated[float, Field(gt=0, le=100_000)] | None = Field(
        None, description="memory per GPU for the fit check; default: read from the device")

    @model_validator(mode="after")
    def _positive_tokens(self) -> "Resources":
        mbt = self.micro_batch_tokens
        if isinstance(mbt, int) and not 8 <= mbt <= MAX_MICRO_BATCH_TOKENS:
            raise ValueError(f"micro_batch_tokens must be 'auto' or from 8 to {MAX_MICRO_BATCH_TOKENS:,}, got {mbt}")
        return self

    @model_validator(mode="after")
    def _offload_needs_zero(self) -> "Resources":
        if offload_problem(self.offload, self.zero_stage):
            raise ValueError(offload_problem(self.offload, self.zero_stage))
        return self


def offload_problem(offload: str, zero_stage: int) -> str | None:
    """Offload moves ZeRO's partitions: the optimizer's from stage 1, the parameters' at stage 3."""
    if offload == "optimizer" and zero_stage < 1:
        return f"offload: optimizer needs zero_stage >= 1 (got zero_stage {zero_stage})"
    if offload == "optimizer+params" and zero_stage != 3:
        return f"offload: optimizer+params needs zero_stage 3 (got zero_stage {zero_stage})"
    return None


class OptimizerConfig(Strict):
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.95)
    weight_decay: Annotated[float, Field(ge=0, le=100)] = 0.0
    grad_clip: Annotated[float, Field(ge=0, le=1e9)] = 1.0
    eps: Annotated[float, Field(gt=0, le=1)] = 1e-8


class EvalConfig(Strict):
    every_steps: Annotated[int, Field(ge=1, le=10**9)] | None = None
    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = 32
    max_items: Annotated[int, Field(ge=1, le=10**9)] | None = None


class TrialConfig(Strict):
    model: ModelConfig
    data: DataConfig
    hparams: HParams = HParams()
    budget: Budget = Budget(max_steps=100)
    resources: Resources = Resources()
    optimizer: OptimizerConfig = OptimizerConfig()
    eval: EvalConfig = EvalConfig()
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    output_dir: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _replay_reads_no_data(cls, raw):
        """A builtin:replay trial may leave ``data`` out: it reads none."""
        model = raw.get("model") if isinstance(raw, dict) else None
        if isinstance(model, dict) and model.get("path") == REPLAY_MODEL and "data" not in raw:
            return {**raw, "data": {"train": []}}
        return raw

    @model_validator(mode="after")
    def _data_to_train_on(self) -> "TrialConfig":
        if not self.data.train and self.model.path != REPLAY_MODEL:
            raise ValueError(f"data.train: empty: give at least one train file (only {REPLAY_MODEL} reads no data)")
        return self

    @model_validator(mode="after")
    def _batch_fits_workers(self) -> "TrialConfig":
        if self.hparams.effective_batch_size < self.resources.num_workers:
            raise ValueError(
                f"hparams.effective_batch_size ({self.hparams.effective_batch_size}) must be at least "
                f"resources.num_workers ({self.resources.num_workers})"
            )
        return self


class ConfigError(Exception):
    """A user's mistake in a trial config: printed as is, never as a traceback."""


def format_validation_error(err: ValidationError, source: str = "config") -> str:
    lines = [f"{source}: {err.error_count()} problem(s)"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        got = e.get("input")
        shown = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def parse_trial_config(raw: object, source: str = "config", base_dir: Path | None = None) -> TrialConfig:
    """Validate a mapping; relative data paths resolve against base_dir (the YAML's folder)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        cfg = TrialConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None
    if base_dir is not None:
        for f in [*cfg.data.train, *cfg.data.eval]:
            p = Path(f.path)
            if not p.is_absolute():
                f.path = str((base_dir / p).resolve())
    return cfg


def load_trial_config(path: str | Path) -> TrialConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    return parse_trial_config(raw, str(path), base_dir=Path.cwd())


def input_problems(cfg: TrialConfig) -> list[str]:
    """What makes a trial fail at once for want of an input: an unreadable data file or a model
    path that is no folder. Cheap (no torch), so the CLI says it before loading anything; the
    loaders say the same words if a file goes missing later."""
    problems = [unreadable(f.path) for f in [*cfg.data.train, *cfg.data.eval]]
    problems.append(model_dir_problem(cfg.model.path))
    return [p for p in problems if p]


def unreadable(path: str | Path) -> str | None:
    try:
        Path(path).open("rb").close()
    except OSError as err:
        return f"{path}: cannot read ({err.strerror})"
    return None


def model_dir_problem(path: str) -> str | None:
    if path.startswith("builtin:") or Path(path).is_dir():
        return None
    from .hub import ModelNotCached, is_hub_name, resolve_hub_model  # light: no torch

    if is_hub_name(path):  # a Hub name, resolved offline from the local cache
        try:
            resolve_hub_model(path)
            return None
        except ModelNotCached as err:
            return str(err)
    return f"model.path: {path!r} is not a directory (use builtin:tiny or a local HF model folder)"
