"""The preflight memory plan: what one worker will hold, before anything is started.

Pure arithmetic on the spec (no torch import): parameters are counted from the architecture, then
per worker

    framework baseline   torch + DeepSpeed + the process group, measured (see below)
    model states         parameters, gradients, fp32 master copy and Adam moments, each either
                         whole or 1/N-th of it according to the ZeRO stage, in the precision's bytes
    reduce buffers       the gradient buckets ZeRO-1/2/3 fill (as far as the model fills them)
    activations          what one micro batch keeps for backward (less with activation
                         checkpointing), plus the fp32 logits and their softmax and gradient

Offloaded optimizer states move from the device to host memory; on a CPU-only worker both are the
same RAM. The byte counts follow how DeepSpeed 0.19 allocates; the baseline and the activation factor
were calibrated against peak RSS measured on CPU by ``benchmarks/memory_plan.py``, which prints
estimate and measurement side by side (DeepSpeed's own estimators cover model states only and proved
to be lower bounds).

>>> from orchestrator.spec import parse_spec
>>> plan = estimate_memory(parse_spec("name: x"), world_size=2)
>>> plan.parameters, round(plan.per_worker_bytes / 2**20)
(875264, 622)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, replace

from orchestrator.plan.flops import padded_vocab
from orchestrator.spec import RunSpec

MIB = 2**20
# Peak RSS of a worker process before the model counts: python, torch, DeepSpeed (its CPU
# accelerator, communication ops), gloo and the data memory map; measured on torch 2.13 (CPU) and
# DeepSpeed 0.19.8 with a 36k-parameter model (502 MiB on rank 1). Rank 0 also holds the MLflow
# client and matplotlib for the live report: 14-97 MiB more, 60 typical. The plan is for rank 0.
CPU_FRAMEWORK_BASELINE = (500 + 60) * MIB
# CUDA context and kernels of one process on the GPU (not measured here: no GPU on the CI machines).
GPU_FRAMEWORK_BASELINE = 600 * MIB
# DeepSpeed's working memory per parameter beyond the sharded states (see _buffers): peak RSS on
# 2 CPU ranks minus the baseline, the modelled states and activations. (precision, ZeRO stage) ->
# bytes. Calibrated: fp32 stages 0-3 on a 10.9M-parameter GPT, 16-bit stage 2 on the same, 16-bit
# stage 3 on a 38M one. Not measured (estimated from the neighbours): 16-bit stages 0 and 1.
WORKING_BYTES_PER_PARAM = {
    ("fp32", 0): 0.0,
    ("fp32", 1): 8.0,
    ("fp32", 2): 10.5,
    ("fp32", 3): 30.5,
    ("16-bit", 0): 4.0,
    ("16-bit", 1): 12.0,
    ("16-bit", 2): 14.5,
    ("16-bit", 3): 12.5,
}
# Tensors one transformer block keeps for backward, in units of batch x tokens x d_model:
# layer-norm inputs and outputs, q/k/v, attention output, projection, the 4x FFN and its GELU.
BLOCK_ACTIVATION_FACTOR = 17


@dataclass(frozen=True)
class MemoryPlan:
    parameters: int
    largest_layer: int
    baseline_bytes: int
    model_state_bytes: int  # on the training device
    offloaded_bytes: int  # optimizer states / parameters held in host memory instead
    buffer_bytes: int
    activation_bytes: int
    device: str  # "cpu" or "gpu"
    capacity_bytes: int | None  # per worker, when known
    suggestion: str | None = None

    @property
    def per_worker_bytes(self) -> int:
        """What one worker needs on its training device (host RAM on CPU, incl. offload)."""
        offload = self.offloaded_bytes if self.device == "cpu" else 0
        parts = (
            self.baseline_bytes,
            self.model_state_bytes,
            offload,
            self.buffer_bytes,
            self.activation_bytes,
        )
        return sum(parts)

    @property
    def fits(self) -> bool | None:
        return None if self.capacity_bytes is None else self.per_worker_bytes <= self.capacity_bytes

    def describe(self) -> str:
        need = self.per_worker_bytes
        line = (
            f"{need / MIB:,.0f} MiB per worker on {self.device} ({self.parameters:,} params: "
            f"states {self.model_state_bytes / MIB:,.1f}, buffers {self.buffer_bytes / MIB:,.1f}, "
            f"activations {self.activation_bytes / MIB:,.1f}, framework {self.baseline_bytes / MIB:,.0f} MiB"
        )
        if self.offloaded_bytes:
            line += f", {self.offloaded_bytes / MIB:,.1f} MiB offloaded to host"
        line += ")"
        if self.capacity_bytes is not None:
            verdict = "fits" if self.fits else "DOES NOT FIT"
            line += f"; {verdict} in {self.capacity_bytes / MIB:,.0f} MiB available per worker"
        if self.suggestion:
            line += f"\n           hint: {self.suggestion}"
        return line


def count_parameters(spec: RunSpec) -> tuple[int, int]:
    """(total, largest single tensor) of the GPT in ``orchestrator.train.model``, counted once if tied."""
    m = spec.model
    d, vocab = m.d_model, padded_vocab(m)
    block = 12 * d * d + 13 * d  # qkv, proj, 2-layer 4x FFN with biases, two layer norms
    head = 0 if m.tie_weights else vocab * d
    total = vocab * d + m.context_length * d + m.n_layers * block + 2 * d + head
    return total, max(vocab * d, 4 * d * d)


def estimate_memory(spec: RunSpec, world_size: int, capacity_bytes: int | None = None) -> MemoryPlan:
    """The memory plan, with a suggestion when it does not fit ``capacity_bytes`` per worker."""
    plan = _estimate(spec, world_size, capacity_bytes)
    if plan.fits is False:
        plan = replace(plan, suggestion=_suggest(spec, world_size, capacity_bytes))
    return plan


def _estimate(spec: RunSpec, world_size: int, capacity_bytes: int | None) -> MemoryPlan:
    params, largest = count_parameters(spec)
    on_gpu = spec.cluster.gpus_per_worker > 0
    on_device, offloaded = _model_states(spec, params, world_size)
    return MemoryPlan(
        parameters=params,
        largest_layer=largest,
        baseline_bytes=GPU_FRAMEWORK_BASELINE if on_gpu else CPU_FRAMEWORK_BASELINE,
        model_state_bytes=on_device,
        offloaded_bytes=offloaded,
        buffer_bytes=_buffers(spec, params, largest),
        activation_bytes=_activations(spec),
        device="gpu" if on_gpu else "cpu",
        capacity_bytes=capacity_bytes,
    )


def _model_states(spec: RunSpec, params: int, world: int) -> tuple[int, int]:
    """(bytes on the device, bytes offloaded to the host) of parameters, gradients, master, Adam."""
    ds = spec.deepspeed
    half = ds.precision != "fp32"
    weight = 2 if half else 4
    stage = ds.zero_stage
    shard = 1.0 / world
    param_share = shard if stage == 3 else 1.0
    grad_share = shard if stage >= 2 else 1.0
    optim_share = shard if stage >= 1 else 1.0
    parameters = weight * params * param_share
    gradients = weight * params * grad_share
    # fp32 master weights: ZeRO-1/2/3 keep a flat fp32 partition even in fp32; stage 0 only in 16-bit
    master = 4 * params * optim_share if (stage >= 1 or half) else 0
    if stage == 0 and half:
        gradients += 4 * params  # the fp32 gradient copy of DeepSpeed's 16-bit optimizer wrapper
    adam = 8 * params * optim_share
    offload = adam + master if ds.offload_optimizer != "none" else 0
    if ds.offload_params != "none":
        offload += parameters
        parameters = 0
    return int(parameters + gradients + master + adam - offload), int(offload)


def _buffers(spec: RunSpec, params: int, largest: int) -> int:
    """DeepSpeed's working memory beyond the sharded states: reduce buckets (allocated at 500M
    elements, touched as far as the model fills them), flattened gradient copies, the fp32 gradient
    staging of 16-bit runs, and ZeRO-3's gathered parameters and start-up partitioning. Too many
    allocator details to derive; measured per parameter (see WORKING_BYTES_PER_PARAM)."""
    ds = spec.deepspeed
    precision = "fp32" if ds.precision == "fp32" else "16-bit"
    per_param = WORKING_BYTES_PER_PARAM[(precision, ds.zero_stage)]
    return int(per_param * params + (largest * 4 if ds.zero_stage == 3 else 0))


def _activations(spec: RunSpec) -> int:
    m, t = spec.model, spec.train
    act_bytes = 2 if spec.deepspeed.precision != "fp32" else 4
    tokens = t.micro_batch_size * m.context_length
    per_block = BLOCK_ACTIVATION_FACTOR * tokens * m.d_model * act_bytes
    if m.activation_checkpointing:
        blocks = m.n_layers * tokens * m.d_model * act_bytes + per_block  # inputs + one recomputed block
    else:
        blocks = m.n_layers * per_block
    embeddings = 2 * tokens * m.d_model * act_bytes
    logits = tokens * padded_vocab(m) * (act_bytes + 3 * 4)  # logits, fp32 copy, log-softmax, gradient
    return int(blocks + embeddings + logits)


def _suggest(spec: RunSpec, world: int, capacity: int | None) -> str:
    """The first of the usual remedies that makes the plan fit, with its estimate."""
    ds, train, model = spec.deepspeed, spec.train, spec.model
    candidates = []
    for stage in range(ds.zero_stage + 1, 4):
        candidates.append((f"deepspeed.zero_stage: {stage}", _with(spec, "deepspeed", zero_stage=stage)))
    if ds.offload_optimizer == "none":
        candidates.append(
            ("deepspeed.offload_optimizer: cpu", _with(spec, "deepspeed", offload_optimizer="cpu"))
        )
    if not model.activation_checkpointing:
        candidates.append(
            ("model.activation_checkpointing: true", _with(spec, "model", activation_checkpointing=True))
        )
    if train.micro_batch_size > 1:
        smaller = max(1, train.micro_batch_size // 2)
        candidates.append((
            f"train.micro_batch_size: {smaller} with gradient_accumulation_steps: "
            f"{train.gradient_accumulation_steps * 2} (same global batch)",
            _with(spec, "train", micro_batch_size=smaller),
        ))  # fmt: skip
    for text, candidate in candidates:
        need = _estimate(candidate, world, capacity).per_worker_bytes
        if capacity is None or need <= capacity:
            return f"{text} would need about {need / MIB:,.0f} MiB per worker"
    return "no single change fits: combine them, use more workers, or a smaller model"


def _with(spec: RunSpec, section: str, **changes) -> RunSpec:
    updated = getattr(spec, section).model_copy(update=changes)
    return spec.model_copy(update={section: updated})


def host_memory_per_worker(workers_on_host: int) -> int | None:
    """Physical memory of this machine shared by the workers a local launcher puts on it."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    return total // max(1, workers_on_host)


def gpu_memory_bytes() -> int | None:
    """Memory of the first GPU from nvidia-smi (no torch import); None without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
        return int(out.split()[0]) * MIB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def single_worker_stage_hint(spec: RunSpec, capacity_bytes: int | None) -> str | None:
    """With one worker there is nothing for ZeRO to partition: stages 1-3 only add their flat copies,
    hooks and buckets, and stage 0 needs the least memory too. It is recommended (printed), never
    switched to, where its estimate fits (or the capacity is unknown). None when the spec has it
    already, has several workers, or offloads (which needs ZeRO)."""
    ds = spec.deepspeed
    offloads = ds.offload_optimizer != "none" or ds.offload_params != "none"
    if spec.cluster.num_workers != 1 or ds.zero_stage == 0 or offloads:
        return None
    stage0 = spec.model_copy(update={"deepspeed": ds.model_copy(update={"zero_stage": 0})})
    estimate = _estimate(stage0, 1, capacity_bytes)
    if estimate.fits is False:
        return None
    room = "" if capacity_bytes is None else f" of {capacity_bytes / MIB:,.0f}"
    return (
        f"one worker holds the whole model, so ZeRO stage {ds.zero_stage} partitions nothing and only "
        f"adds its copies and hooks: deepspeed.zero_stage: 0 needs about "
        f"{estimate.per_worker_bytes / MIB:,.0f}{room} MiB and does less work per step"
    )
