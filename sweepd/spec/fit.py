"""The fit check of a sweep spec: the peak memory per GPU of its most demanding trials
(trainer/fit.py's estimate), against ``resources.gpu_memory_gb`` or this server's GPU.

Memory depends on the tokens of a trial's largest micro-batch; across the search space those come
from ``resources.micro_batch_tokens`` / ``micro_batch_size``, ``data.max_seq_len`` and the batch
size (a worker never gets more than its share of the step), each of which may be searched or
fixed. ``fit_report`` estimates every distinct extreme (range domains: both ends, as
``sweepd.spec.trials.candidates`` gives them), largest first, with and without activation
checkpointing, and says which the trial would run with (``auto``: without when that fits, as
trainer/fit.py's ``checkpointing_wanted`` decides). ``check_fit`` (sweepd/spec/checks.py)
refuses a GPU spec whose largest trial cannot fit, naming the fields that would make it fit;
``sweepd validate`` prints the report (sweepd/spec/plan.py).

The model's shape: its config.json (a folder, or a Hub name's snapshot in the local cache,
offline), builtin:tiny's built config, else trainer/known_shapes.py's table of well-known models
(for a spec validated away from its cluster); none of them: no estimate, with a note.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.fit import Estimate, estimate, micro_batch_tokens
from trainer.replay_config import REPLAY_MODEL
from trainer.model_config import model_config_of

FIELDS_TO_CHANGE = ("resources.zero_stage", "resources.activation_checkpointing", "resources.offload",
                    "resources.micro_batch_tokens", "resources.workers_per_trial")
MAX_ROWS = 6


@dataclass
class FitRow:
    """One extreme of the space: its values, and the estimate without and with checkpointing."""

    label: str
    tokens: int
    without: Estimate
    with_ckpt: Estimate
    setting: Any  # resources.activation_checkpointing: True, False or "auto"
    memory_gib: float | None

    @property
    def chosen(self) -> Estimate:
        if self.setting is True:
            return self.with_ckpt
        if self.setting is False:
            return self.without
        if self.memory_gib is None:  # auto with nothing to judge by: the trainer leaves it off
            return self.without
        return self.without if self.without.fits(self.memory_gib) else self.with_ckpt

    @property
    def fits(self) -> bool | None:
        return self.chosen.fits(self.memory_gib)

    def as_dict(self) -> dict:
        return {"label": self.label, "tokens": self.tokens, "without_checkpointing": self.without.as_dict(),
                "with_checkpointing": self.with_ckpt.as_dict(), "checkpointing": self.chosen.checkpointing,
                "gib": round(self.chosen.gib, 2), "fits": self.fits}


@dataclass
class FitReport:
    model: str
    source: str | None = None  # where the shape came from
    params: int | None = None
    precision: str = "bf16"
    memory_gib: float | None = None
    memory_source: str | None = None
    rows: list[FitRow] = field(default_factory=list)
    note: str | None = None  # why there is no estimate, or what it assumed
    suggestions: list[str] = field(default_factory=list)

    @property
    def worst(self) -> FitRow | None:
        return max(self.rows, key=lambda r: r.chosen.total) if self.rows else None

    @property
    def fits(self) -> bool | None:
        return None if self.worst is None else self.worst.fits

    def refusal(self) -> str | None:
        """The check's message when the largest trial cannot fit; None otherwise."""
        w = self.worst
        if w is None or w.fits is not False:
            return None
        how = "with activation checkpointing" if w.chosen.checkpointing else "without activation checkpointing"
        text = (f"the largest trial ({w.label}) needs ~{w.chosen.gib:.1f} GiB per GPU {how} "
                f"({w.chosen.breakdown()}; {w.chosen.setting()}), more than the {self.memory_gib:.1f} GiB of "
                f"{self.memory_source}: it would run out of memory. Change {', '.join(FIELDS_TO_CHANGE)}")
        if self.suggestions:
            text += "; each of these alone would fit: " + "; ".join(self.suggestions)
        return text

    def as_dict(self) -> dict:
        return {"model": self.model, "source": self.source, "params": self.params, "precision": self.precision,
                "memory_gib": None if self.memory_gib is None else round(self.memory_gib, 2),
                "memory_source": self.memory_source, "note": self.note, "fits": self.fits,
                "rows": [r.as_dict() for r in self.rows], "suggestions": list(self.suggestions)}


def _values(path: str, s: Any, default: Any) -> list:
    """The values a trial-config leaf takes in the spec: searched or fixed, else ``default``."""
    for _, (p, d) in s.domains.items():
        if p == path:
            return list(d.candidates())
    if path in s.fixed_values:
        return [s.fixed_values[path]]
    return [default]


def _model_path(path: str, base: Path | None) -> str:
    if path.startswith("builtin:"):
        return path
    p = Path(path).expanduser()
    if not p.is_absolute() and base is not None and (base / p).exists():
        return str(base / p)
    return path


def gpu_memory(s: Any, ctx: Any) -> tuple[float | None, str | None]:
    """(GiB per GPU, where that figure comes from): resources.gpu_memory_gb, else this server's GPU."""
    if s.resources.gpu_memory_gb is not None:
        return float(s.resources.gpu_memory_gb), "resources.gpu_memory_gb"
    cap = ctx.cap() if ctx is not None else None
    mem = getattr(cap, "gpu_memory_gb", None)
    if mem:
        return float(mem), "this server's GPU (set resources.gpu_memory_gb for the cluster's)"
    return None, None


def fit_report(s: Any, ctx: Any = None) -> FitReport | None:
    """The estimate for every extreme of a spec (anything with ``model``, ``data``, ``resources``,
    ``domains`` and ``fixed_values``: a SweepSpec, or the checks' Sections). None when a section
    it needs is missing."""
    if s.model is None or s.data is None or s.resources is None:
        return None
    r = s.resources
    gpu = r.gpus_per_worker > 0
    report = FitReport(model=s.model.path, precision="bf16" if gpu else "fp32")
    if s.model.path == REPLAY_MODEL:  # recorded curves: nothing is loaded, nothing to estimate
        report.note = "no memory estimate: builtin:replay replays recorded curves and loads no model"
        return report
    if gpu:
        report.memory_gib, report.memory_source = gpu_memory(s, ctx)
    config, source = model_config_of(_model_path(s.model.path, ctx.base() if ctx is not None else None))
    if config is None:
        report.note = f"no memory estimate: {source}"
        return report
    report.source = source
    workers = r.workers_per_trial
    combos: dict[int, list[str]] = {}
    mbt_values = _values("resources.micro_batch_tokens", s, r.micro_batch_tokens)
    mbs_values = _values("resources.micro_batch_size", s, r.micro_batch_size)
    seq_values = _values("data.max_seq_len", s, s.data.max_seq_len)
    batch_values = _values("hparams.effective_batch_size", s, 32)
    for mbt, mbs, seq, batch in itertools.product(mbt_values, mbs_values, seq_values, batch_values):
        try:
            tokens = micro_batch_tokens(mbt, mbs, int(seq), int(batch), workers)
        except (TypeError, ValueError):
            continue  # a bad value: another check names it
        how = f"micro_batch_size {mbs}" if mbs else f"micro_batch_tokens {mbt}"
        combos.setdefault(tokens, []).append(f"batch {batch}, {how}, max_seq_len {seq}")
    try:
        for tokens in sorted(combos, reverse=True)[:MAX_ROWS]:
            common = dict(tokens=tokens, zero_stage=r.zero_stage, world=workers, offload=r.offload,
                          precision=report.precision)
            row = FitRow(label=combos[tokens][0], tokens=tokens, without=estimate(config, checkpointing=False, **common),
                         with_ckpt=estimate(config, checkpointing=True, **common),
                         setting=r.activation_checkpointing, memory_gib=report.memory_gib)
            report.rows.append(row)
    except (KeyError, ValueError, TypeError) as err:
        report.rows, report.note = [], f"no memory estimate: the model's config lacks {err}"
        return report
    report.params = report.rows[0].without.params if report.rows else None
    if report.fits is False:
        report.suggestions = suggestions(config, report.worst, r, report.memory_gib)
    return report


def suggestions(config: dict, worst: FitRow, r: Any, memory_gib: float) -> list[str]:
    """Single changes to ``resources`` that would make the largest trial fit, with their estimate."""
    base = worst.chosen
    ckpt = base.checkpointing
    common = dict(tokens=base.tokens, zero_stage=base.zero_stage, world=base.world, offload=base.offload,
                  checkpointing=ckpt, precision=base.precision)
    out: list[str] = []

    def fits(**change) -> Estimate | None:
        est = estimate(config, **{**common, **change})
        return est if est.fits(memory_gib) else None

    if not ckpt and (e := fits(checkpointing=True)):
        out.append(f"resources.activation_checkpointing: true (~{e.gib:.1f} GiB)")
    for stage in range(base.zero_stage + 1, 4):
        offload = base.offload if base.offload != "optimizer+params" or stage == 3 else "optimizer"
        if e := fits(zero_stage=stage, offload=offload):
            out.append(f"resources.zero_stage: {stage} (~{e.gib:.1f} GiB)")
            break
    for stage, offload in ((max(1, base.zero_stage), "optimizer"), (3, "optimizer+params")):
        if (stage, offload) != (base.zero_stage, base.offload) and (e := fits(zero_stage=stage, offload=offload)):
            extra = f" with resources.zero_stage: {stage}" if stage != base.zero_stage else ""
            out.append(f"resources.offload: {offload}{extra} (~{e.gib:.1f} GiB)")
            break
    lo, hi = 8, base.tokens - 1  # the largest micro-batch that fits, in tokens
    if fits(tokens=lo):
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(tokens=mid) else (lo, mid - 1)
        if lo < base.tokens:
            out.append(f"resources.micro_batch_tokens: {lo:,} or less (each micro-batch also holds at least one "
                       f"whole sample of up to data.max_seq_len tokens)")
    for n in (2, 4, 8, 16, 32, 64, 128, 256, 512):
        if n > base.world and (e := fits(world=n)):
            out.append(f"resources.workers_per_trial: {n} (~{e.gib:.1f} GiB: ZeRO partitions over more GPUs)")
            break
    return out


def _size(est: dict) -> str:
    """GiB to one decimal; under 1 GiB (a CPU trial of a tiny model) in MiB."""
    mib = est.get("bytes", est["gib"] * 2**30) / 2**20
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def format_fit(fit: dict | None) -> list[str]:
    """The lines ``sweepd validate`` prints, from ``FitReport.as_dict()``."""
    if not fit:
        return []
    gpu = fit["precision"] == "bf16"
    params = fit.get("params")
    size = ""
    if params:
        size = f", {params / 1e9:.2f}B parameters" if params >= 1e8 else f", {params:,} parameters"
    lines = [f"memory {'per GPU' if gpu else 'per worker (CPU trial, fp32)'}: model {fit['model']}{size}"
             + (f" (shape from {fit['source']})" if fit.get("source") else "")]
    if fit.get("note"):
        lines.append(f"  {fit['note']}")
    for row in fit["rows"]:
        wo, wi = row["without_checkpointing"], row["with_checkpointing"]
        lines.append(f"  {row['label']}: {row['tokens']:,} tokens per micro-batch: ~{_size(wo)} without "
                     f"activation checkpointing, ~{_size(wi)} with it "
                     f"(the trial runs with it {'on' if row['checkpointing'] else 'off'})")
    if not fit["rows"] or not gpu:
        return lines
    worst = max(fit["rows"], key=lambda r: r["gib"])
    mem, where = fit.get("memory_gib"), fit.get("memory_source")
    if mem is None:
        lines.append(f"  verdict: not judged: no GPU memory figure (set resources.gpu_memory_gb); the largest "
                     f"trial needs ~{worst['gib']:.1f} GiB per GPU")
    elif worst["fits"]:
        how = "with activation checkpointing" if worst["checkpointing"] else "without activation checkpointing"
        lines.append(f"  verdict: fits: the largest trial needs ~{worst['gib']:.1f} GiB per GPU {how}, "
                     f"of {mem:.1f} GiB ({where})")
    else:
        lines.append(f"  verdict: does NOT fit: the largest trial needs ~{worst['gib']:.1f} GiB per GPU, "
                     f"more than {mem:.1f} GiB ({where})")
        lines += [f"    would fit: {x}" for x in fit.get("suggestions") or []]
    return lines
