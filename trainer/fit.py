"""Will the trial fit in GPU memory? A per-GPU peak-memory estimate from the model's config.json.

No weights are read: the shape (hidden size, layers, heads, vocabulary ...) of a config.json, of
``builtin:tiny``'s built config, or of trainer/known_shapes.py's table gives the parameter count,
and the trial config gives the rest. The estimate adds up, at the larger of two moments (the start
of a micro-batch's backward pass, when the activations are live, and the optimizer step, when the
fp32 gradient partition and the optimizer's temporaries are; see ``Estimate``):

- **model states** per ZeRO stage and offload, as DeepSpeed keeps them (the ZeRO paper's
  accounting, K = 12 bytes per parameter of fp32 master weights + Adam m and v, partitioned over
  the trial's N = ``resources.num_workers`` data-parallel workers from stage 1 on; see
  ``model_states``). On GPU the weights and gradients are bf16 (2 bytes); on CPU the trainer
  runs fp32 (4 bytes, no bf16), which is the ``fp32`` precision mode;
- **ZeRO buffers**: DeepSpeed's gradient-reduction bucket (``reduce_bucket_size``, default 5e8
  elements, allocated whole on GPU at stages 1-3; on CPU only the part gradients are written to
  becomes resident memory) and stage 3's parameter prefetch bucket (5e7 elements);
- **activations** of one micro-batch of T tokens saved for the backward pass, per decoder layer
  (``activation_bytes``), with or without activation checkpointing. Attention is computed without
  a dense mask (packed samples, flash/SDPA kernels keep O(T) state), so there is no T² term;
- **logits**: the loss (trainer/loss.py) is computed in checkpointed chunks of rows (at most
  4096, fewer for a large vocabulary), so one chunk of logits is live at a time;
- a fixed **overhead** on GPU (``GPU_OVERHEAD_GIB``), none on CPU.

The micro-batch's tokens: ``resources.micro_batch_tokens`` (``auto``: trainer/batching.py's
DEFAULT_MICRO_BATCH_TOKENS), or ``micro_batch_size`` samples of ``max_seq_len``; never more than
a worker's share of the step's samples at ``max_seq_len`` each, never less than one full sample.

``checkpointing_wanted`` turns activation checkpointing on for ``auto`` when the estimate without
it exceeds the GPU's memory. ``sweepd validate`` and the API refuse a spec whose most demanding
trial cannot fit (sweepd/spec/fit.py, the ``check_fit`` spec check).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trainer.model_config import Shape, model_config_of, shape_of

GIB = 2**30

# Memory the GPU loses that no tensor accounts for: the CUDA context with cuBLAS/cuDNN handles and
# NCCL's buffers (measured 1.3-1.7 GiB on an H100 with torch 2.11: trainer's own trial, one GPU),
# plus ~0.5 GiB for the caching allocator's fragmentation that it cannot give back. What it merely
# caches is not counted: before raising out-of-memory PyTorch frees its cached blocks and retries,
# so the peak of live allocations plus this overhead is what must fit. (Left alone on a roomy GPU
# the cache grew 15-50% past the live peak: reserved memory is not what a trial needs.) On CPU
# the measurement baseline (the process before the model is built) holds the equivalent: 0 there.
GPU_OVERHEAD_GIB = 2.0
LOSS_CHUNK = 4096  # rows of logits live at once, if trainer/loss.py cannot be imported
REDUCE_BUCKET = int(5e8)  # DeepSpeed's reduce_bucket_size default, elements
PREFETCH_BUCKET = int(5e7)  # DeepSpeed's stage3_prefetch_bucket_size default, elements
ADAM_BYTES = 8  # fp32 m and v
MASTER_BYTES = 4  # fp32 master weights
FP32_GRAD_BYTES = 4  # the fp32 gradient partition the optimizer steps on



@dataclass(frozen=True)
class Precision:
    """Bytes per element of the trainable weights, their gradients and the activations; ``master``:
    whether the optimizer keeps an fp32 master copy apart (bf16 training) even without ZeRO."""

    name: str
    weight: int
    grad: int
    act: int
    master: bool


BF16 = Precision("bf16", 2, 2, 2, True)  # GPU trials: bf16 weights, grads and activations
FP32 = Precision("fp32", 4, 4, 4, False)  # CPU trials: no bf16 there, everything fp32
PRECISIONS = {"bf16": BF16, "fp32": FP32}


# ---- the estimate ----------------------------------------------------------------------------


def model_states(P: int, stage: int, world: int, offload: str = "none", precision: Precision = BF16,
                 largest_layer: int = 0) -> dict[str, int]:
    """Bytes per GPU of weights, gradients and optimizer states, as DeepSpeed keeps them, split
    by when they are live: ``params``, ``grads`` (kept across a step's micro-batches) and
    ``optimizer`` (fp32 master weights, Adam m and v) all the time; ``step_grads`` (the fp32
    gradient partition the optimizer steps on) only during the optimizer step.

    With w = weight bytes, g = grad bytes, N = world, K = 4 (fp32 grads) + 4 (master) + 8 (Adam):
      stage 0: w·P + g·P + (bf16: 16·P; fp32: 8·P: torch's AdamW steps on the fp32 weights)
      stage 1: w·P + g·P (full gradients until the boundary) + K·P/N
      stage 2: w·P + (g + K)·P/N                          (bf16: 2P + 18P/N, DeepSpeed's own)
      stage 3: (w + g)·largest layer (gathered) + (w + g + K)·P/N
    Offload ``optimizer`` (stages 1-3) moves K·P/N to CPU memory (at stage 2 the reduced gradient
    partition too: DeepSpeed copies it to the CPU); ``optimizer+params`` (stage 3) also the
    parameter and gradient partitions: only the gathered layer stays on the GPU."""
    w, g, N = precision.weight, precision.grad, max(1, world)
    if stage == 0:
        master = MASTER_BYTES * P if precision.master else 0
        step = FP32_GRAD_BYTES * P if precision.master else 0
        return {"params": w * P, "grads": g * P, "optimizer": ADAM_BYTES * P + master, "step_grads": step}
    off_opt = offload in ("optimizer", "optimizer+params")
    optimizer = 0 if off_opt else (MASTER_BYTES + ADAM_BYTES) * P // N
    step = 0 if off_opt else FP32_GRAD_BYTES * P // N
    if stage == 1:
        return {"params": w * P, "grads": g * P, "optimizer": optimizer, "step_grads": step}
    if stage == 2:
        return {"params": w * P, "grads": 0 if off_opt else g * P // N, "optimizer": optimizer, "step_grads": step}
    gathered = largest_layer
    if offload == "optimizer+params":
        return {"params": w * gathered, "grads": g * gathered, "optimizer": 0, "step_grads": 0}
    grads = g * gathered + (0 if off_opt else g * P // N)
    return {"params": w * gathered + w * P // N, "grads": grads, "optimizer": optimizer, "step_grads": step}


def step_temporaries(P: int, stage: int, world: int, offload: str, precision: Precision) -> int:
    """torch's AdamW on CUDA (the foreach implementation) allocates sqrt(v) apart, 4 bytes per
    element it steps on, during the step. On CPU it steps tensor by tensor (nothing sizeable), and
    with the optimizer offloaded it steps on the CPU."""
    if precision.name != "bf16" or (stage >= 1 and offload != "none"):
        return 0
    return 4 * (P if stage == 0 else P // max(1, world))


def zero_buffers(P: int, stage: int, precision: Precision = BF16) -> int:
    """DeepSpeed's reduction bucket (stage >= 1) and stage 3's prefetch bucket. On GPU the
    allocator reserves them whole; on CPU only the pages written hold memory: at most P."""
    if stage == 0:
        return 0
    bucket = REDUCE_BUCKET if precision.name == "bf16" else min(P, REDUCE_BUCKET)
    prefetch = (PREFETCH_BUCKET if precision.name == "bf16" else min(P, PREFETCH_BUCKET)) if stage == 3 else 0
    return (bucket + prefetch) * precision.weight


def layer_activation_bytes_per_token(s: Shape, precision: Precision = BF16) -> int:
    """What one decoder layer saves for the backward pass, per token (a = activation bytes), as
    transformers' Llama-family layers do with trainer/attention.py's packed attention: two
    RMSNorms, each its fp32 input (4h), the normalized value and the weighted output (2a·h); q and
    k after RoPE, v, and the attention output, which o_proj reads as it is (a·(2·q_dim +
    2·kv_dim)), and the kernel's fp32 log-sum-exp (4·heads); the gated MLP's gate, activation, up
    and product (4a·f; a two-matrix MLP: 2a·f). On CPU (fp32) the packed attention runs SDPA
    sample by sample and concatenates the outputs: one more a·q_dim."""
    a, h = precision.act, s.hidden
    norms = 2 * (4 + 2 * a) * h
    outputs = 1 if precision.name == "bf16" else 2
    attn = a * ((1 + outputs) * s.q_dim + 2 * s.kv_dim) + 4 * s.heads
    mlp = (4 if s.gated else 2) * a * s.intermediate
    return norms + attn + mlp


def activation_bytes(s: Shape, tokens: int, checkpointing: bool, precision: Precision = BF16) -> int:
    """Activations of one micro-batch of ``tokens`` tokens at their peak.

    Without checkpointing: every layer's saved tensors and the final norm's, all live when the
    backward pass starts. With checkpointing: each layer keeps only its input (a·h per token), and
    during backward one layer at a time is recomputed in full."""
    a = precision.act
    per_layer = layer_activation_bytes_per_token(s, precision)
    final_norm = (4 + 2 * a) * s.hidden
    if checkpointing:
        return (s.layers * a * s.hidden + per_layer + final_norm) * tokens
    return (s.layers * per_layer + final_norm) * tokens


def loss_chunk_tokens(vocab: int) -> int:
    """Rows of logits the loss holds at once (trainer/loss.py's chunk_tokens_for)."""
    try:
        from trainer.loss import chunk_tokens_for
    except ImportError:  # pragma: no cover - the loss module is part of the trainer
        return LOSS_CHUNK
    return chunk_tokens_for(vocab)


def logits_bytes(s: Shape, tokens: int, precision: Precision = BF16) -> int:
    """trainer/loss.py computes the head and the cross-entropy one chunk of rows at a time, each
    chunk checkpointed, so at most one chunk of logits is live: recomputed in the backward pass,
    its logits in the model's precision (a; an fp32 model's are already fp32), their fp32 copy,
    the fp32 log-softmax and its gradient, and the gradient in the model's precision again."""
    chunk = min(tokens, loss_chunk_tokens(s.vocab))
    low = 2 * precision.act if precision.act < 4 else 0
    return chunk * s.vocab * (low + 12)


@dataclass(frozen=True)
class Estimate:
    """A trial's peak memory per GPU (bytes by part) and what it assumed.

    The peak is the larger of two moments: the start of a micro-batch's backward pass (the
    activations and one chunk of logits are live) and the optimizer step (the fp32 gradient
    partition and the optimizer's temporaries are); weights, kept gradients, optimizer states,
    ZeRO's buffers (on GPU) and the overhead are there at both."""

    parts: dict[str, int]
    params: int
    tokens: int
    zero_stage: int
    world: int
    offload: str
    checkpointing: bool
    precision: str
    notes: tuple[str, ...] = field(default=())

    @property
    def resident(self) -> int:
        p = self.parts
        return p["params"] + p["grads"] + p["optimizer"] + self._buffers(resident=True) + p["overhead"]

    def _buffers(self, resident: bool) -> int:
        """On GPU ZeRO's buckets are allocated whole, always there; on CPU their pages become
        memory only as the backward pass writes gradients into them, while the activations are
        freed, so they count at the step."""
        on_gpu = self.precision == "bf16"
        return self.parts["zero_buffers"] if on_gpu == resident else 0

    @property
    def backward_peak(self) -> int:
        return self.resident + self.parts["activations"] + self.parts["logits"]

    @property
    def step_peak(self) -> int:
        """At ZeRO-1/2 DeepSpeed converts the kept low-precision gradient partition into the fp32
        one the optimizer steps on and frees it; at stage 0 and 3 both stay."""
        freed = self.parts["grads"] if self.zero_stage in (1, 2) and self.precision == "bf16" else 0
        return (self.resident - freed + self.parts["step_grads"] + self.parts["step_temp"]
                + self._buffers(resident=False))

    @property
    def total(self) -> int:
        return max(self.backward_peak, self.step_peak)

    @property
    def model_states(self) -> int:
        """Weights, gradients and optimizer states (DeepSpeed's estimators' "model states")."""
        p = self.parts
        return p["params"] + p["grads"] + p["optimizer"] + p["step_grads"]

    @property
    def gib(self) -> float:
        return self.total / GIB

    def fits(self, memory_gib: float | None) -> bool | None:
        return None if memory_gib is None else self.total <= memory_gib * GIB

    def breakdown(self) -> str:
        """GiB by part at the peak moment, e.g. "weights, gradients and optimizer states 25.3,
        activations 7.6, logits 1.0, ZeRO buffers 0.9, overhead 2.0 at the backward pass"."""
        p = self.parts
        kept = p["params"] + p["grads"] + p["optimizer"]
        text = (f"weights, gradients and optimizer states {kept / GIB:.1f}, activations {p['activations'] / GIB:.1f}, "
                f"logits {p['logits'] / GIB:.1f}, ZeRO buffers {p['zero_buffers'] / GIB:.1f}, "
                f"overhead {p['overhead'] / GIB:.1f}")
        if self.step_peak > self.backward_peak:
            return text + f"; the optimizer step's {self.step_peak / GIB:.1f} is the peak"
        return text + f" at the backward pass (the optimizer step: {self.step_peak / GIB:.1f})"

    def setting(self) -> str:
        off = "" if self.offload == "none" else f", offload {self.offload}"
        return (f"{self.tokens:,} tokens per micro-batch, ZeRO-{self.zero_stage} over {self.world} "
                f"worker{'s' if self.world != 1 else ''}{off}, activation checkpointing "
                f"{'on' if self.checkpointing else 'off'}, {self.precision}")

    def describe(self) -> str:
        return f"{self.gib:.1f} GiB per GPU ({self.breakdown()}; {self.setting()})"

    def as_dict(self) -> dict:
        return {"gib": round(self.gib, 2), "bytes": self.total, "parts_gib": {k: round(v / GIB, 3) for k, v in self.parts.items()},
                "model_states_gib": round(self.model_states / GIB, 3),
                "params": self.params, "tokens": self.tokens, "zero_stage": self.zero_stage, "world": self.world,
                "offload": self.offload, "activation_checkpointing": self.checkpointing, "precision": self.precision}


def estimate(config: dict | Shape, *, tokens: int, zero_stage: int = 2, world: int = 1, offload: str = "none",
             checkpointing: bool = False, precision: str | Precision = "bf16",
             overhead_gib: float | None = None) -> Estimate:
    """The peak memory per GPU of training ``config``'s model on micro-batches of ``tokens``."""
    s = config if isinstance(config, Shape) else shape_of(config)
    prec = PRECISIONS[precision] if isinstance(precision, str) else precision
    P = s.params
    parts = model_states(P, zero_stage, world, offload, prec, s.largest_layer_params)
    parts["step_temp"] = step_temporaries(P, zero_stage, world, offload, prec)
    parts["zero_buffers"] = zero_buffers(P, zero_stage, prec)
    parts["activations"] = activation_bytes(s, tokens, checkpointing, prec)
    parts["logits"] = logits_bytes(s, tokens, prec)
    if overhead_gib is None:
        overhead_gib = GPU_OVERHEAD_GIB if prec.name == "bf16" else 0.0
    parts["overhead"] = int(overhead_gib * GIB)
    notes = ("mixture of experts: every expert's weights counted, activations as one expert",) if s.experts > 1 else ()
    return Estimate(parts=parts, params=P, tokens=int(tokens), zero_stage=zero_stage, world=max(1, world),
                    offload=offload, checkpointing=checkpointing, precision=prec.name, notes=notes)


# ---- from a trial config --------------------------------------------------------------------


def micro_batch_tokens(micro_batch_tokens: int | str | None, micro_batch_size: int | None, max_seq_len: int,
                       effective_batch_size: int | None = None, num_workers: int = 1) -> int:
    """Tokens in a trial's largest micro-batch, as trainer/batching.py forms them: a token budget
    (``auto``: DEFAULT_MICRO_BATCH_TOKENS) or ``micro_batch_size`` samples of up to max_seq_len,
    at most a worker's share of the step, at least one whole sample."""
    from trainer.batching import DEFAULT_MICRO_BATCH_TOKENS

    if micro_batch_size:
        tokens = micro_batch_size * max_seq_len
    else:
        budget = DEFAULT_MICRO_BATCH_TOKENS if micro_batch_tokens in (None, "auto") else int(micro_batch_tokens)
        tokens = max(budget, max_seq_len)
    if effective_batch_size:
        tokens = min(tokens, math.ceil(effective_batch_size / max(1, num_workers)) * max_seq_len)
    return int(tokens)


def trial_tokens(cfg) -> int:
    r = cfg.resources
    return micro_batch_tokens(r.micro_batch_tokens, r.micro_batch_size, cfg.data.max_seq_len,
                              cfg.hparams.effective_batch_size, r.num_workers)


def on_gpu(cfg) -> bool:
    device = cfg.resources.device
    if device == "cpu":
        return False
    if device == "cuda":
        return True
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - no torch or a broken CUDA: a CPU trial
        return False


def estimate_trial(cfg, model_config: dict | None = None, *, checkpointing: bool | None = None,
                   precision: str | None = None) -> Estimate:
    """The estimate for a ``TrialConfig``: its model (``model_config``, else read from
    ``cfg.model.path``), micro-batch, ZeRO stage, workers and offload. ``checkpointing`` None: as
    the config says (``auto`` counts as off: the estimate that decides it). ``precision`` None:
    bf16 on GPU, fp32 on CPU."""
    if model_config is None:
        model_config, _ = model_config_of(cfg.model.path)
        if model_config is None:
            raise ValueError(f"model.path: no config.json for {cfg.model.path!r}")
    if checkpointing is None:
        checkpointing = cfg.resources.activation_checkpointing is True
    if precision is None:
        precision = "bf16" if on_gpu(cfg) else "fp32"
    return estimate(model_config, tokens=trial_tokens(cfg), zero_stage=cfg.resources.zero_stage,
                    world=cfg.resources.num_workers, offload=cfg.resources.offload,
                    checkpointing=checkpointing, precision=precision)


def device_memory_gib(device_index: int = 0) -> float | None:
    """The CUDA device's total memory, None without one."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        return torch.cuda.get_device_properties(device_index).total_memory / GIB
    except Exception:  # noqa: BLE001 - a broken CUDA install: no GPU to judge by
        return None


def checkpointing_wanted(cfg, model_config: dict | None = None, gpu_memory_gb: float | None = None) -> bool:
    """Whether the trial runs with activation checkpointing: true/false as set; auto: when the
    estimate says the trial would not fit in ``gpu_memory_gb`` without it (default:
    ``resources.gpu_memory_gb``, else the CUDA device's total memory; a CPU trial without a
    memory figure: off)."""
    setting = cfg.resources.activation_checkpointing
    if isinstance(setting, bool):
        return setting
    memory = gpu_memory_gb or cfg.resources.gpu_memory_gb
    gpu = on_gpu(cfg)
    if memory is None and gpu:
        memory = device_memory_gib()
    if memory is None:
        return False
    try:
        est = estimate_trial(cfg, model_config, checkpointing=False, precision="bf16" if gpu else "fp32")
    except (KeyError, ValueError, TypeError):  # a config.json without the fields we need: leave it off
        return False
    return not est.fits(memory)
