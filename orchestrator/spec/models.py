"""The run spec: one typed, frozen pydantic model per concern.

Every field a user can write lives here; nothing downstream reads untyped dicts. Cross-field checks
are named functions in ``orchestrator.spec.checks`` that yield findings with a hint; the loader runs
them itself so that all of a spec's problems are reported at once, and a ``RunSpec`` built in code
runs them on construction.

Derived sizes are computed here once (``RunSpec.global_batch_size``, ``tokens_per_step``) and read
everywhere else.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import yaml
from pydantic import AliasChoices, Field, JsonValue, PrivateAttr, ValidationInfo, model_validator

from orchestrator.masking import mask_data, mask_values, put_references
from orchestrator.spec.export import ExportSpec
from orchestrator.spec.kubernetes import KubernetesSpec
from orchestrator.spec.section import MAY_REFER
from orchestrator.spec.section import Section as _Section
from orchestrator.spec.sweep import SweepSpec

# A run's name is a directory name under checkpoint.dir: no "/", never "." or "..".
RUN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


class ModelSpec(_Section):
    n_layers: int = Field(4, ge=1, le=256, description="Number of transformer blocks.")
    n_heads: int = Field(4, ge=1, le=256, description="Attention heads per block.")
    d_model: int = Field(128, ge=8, le=65536, description="Width of the residual stream.")
    context_length: int = Field(128, ge=8, le=131072, description="Tokens per training sequence.")
    vocab_size: int = Field(512, ge=260, le=262144, description="BPE vocabulary size.")
    vocab_multiple: int = Field(
        1,
        ge=1,
        le=4096,
        description="Build the embedding and output head with vocab_size rounded up to a multiple of "
        "this (64 suits GPU matrix multiplies: GPT-2's 50,257 becomes 50,304). The tokenizer, "
        "exported models and sampling keep vocab_size; the extra rows are never a target.",
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    tie_weights: bool = Field(True, description="Share the token embedding with the output head.")
    activation_checkpointing: bool = Field(
        False, description="Recompute each block's activations in backward: less memory, ~25% slower."
    )
    compile: bool = Field(False, description="torch.compile the model (slow first steps, faster later).")


class TokenizerSpec(_Section):
    """Trained here (today's byte-level BPE, on a bounded sample of the corpus), or loaded as is."""

    path: str | None = Field(
        None,
        min_length=1,
        description="A pretrained tokenizer used as is: a tokenizer.json, or a Hugging Face tokenizer "
        "directory holding one. Documents are separated by its end-of-text token (<|endoftext|>, "
        "eos_token or the tokenizer's own). None: train a BPE tokenizer of model.vocab_size.",
    )
    train_sample_mb: float = Field(
        64.0,
        gt=0.0,
        le=1_000_000.0,
        description="A trained tokenizer learns from at most this much text, taken evenly from every "
        "part of the corpus.",
    )


class DataSpec(_Section):
    corpus: Literal["python-docs", "files"] = Field(
        "python-docs",
        description="python-docs: the text of Python's bundled documentation (no download); "
        "files: the files listed in `files`.",
    )
    files: Annotated[list[str], MAY_REFER] = Field(
        [],
        description="With corpus: files. Paths or glob patterns (relative to the working directory) of "
        ".txt, .jsonl, .parquet files, their .gz/.zst forms, or directories written by "
        "datasets.Dataset.save_to_disk.",
    )
    format: Literal["auto", "text", "jsonl", "parquet", "hf-dataset"] = Field(
        "auto",
        description="auto: by file name (.jsonl, .parquet, a saved dataset's directory; anything else "
        "is text); text: documents split at blank lines; jsonl: one record a line; parquet: rows; "
        "hf-dataset: rows of a saved Hugging Face dataset.",
    )
    text_field: str = Field(
        "text",
        min_length=1,
        max_length=256,
        validation_alias=AliasChoices("text_field", "jsonl_field"),
        description="The JSONL field, Parquet column or dataset column that holds the text "
        "(jsonl_field: the older name).",
    )
    encoding_errors: Literal["error", "replace"] = Field(
        "error",
        description="Bytes that are not UTF-8: error names the file and byte offset; replace "
        "substitutes U+FFFD and goes on.",
    )
    tokenizer: TokenizerSpec = TokenizerSpec()
    prepared: str | None = Field(
        None,
        min_length=1,
        description="Where the prepared (tokenized, sharded) dataset lives: a local path, a path "
        "every node mounts, or s3://bucket/prefix. Default: this machine's cache "
        "(ORCHESTRATOR_CACHE_DIR, else ~/.cache/gpt-orchestrator), which only an embedded Ray "
        "can use.",
    )
    shard_mb: float = Field(
        64.0,
        gt=0.0,
        le=100_000.0,
        description="Source text per preparation task, and so per shard (compressed files, Parquet "
        "row groups and dataset files are never split).",
    )
    prepare_batch_mb: float = Field(
        0.5,
        gt=0.0,
        le=4096.0,
        description="Text each preparation task tokenizes at once: its memory is a small multiple of "
        "this, whatever the size of the corpus or of one line.",
    )
    max_files: int = Field(
        100_000, ge=1, le=10_000_000, description="Refuse globs that match more files than this."
    )
    validation_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = 1234


class OptimizerSpec(_Section):
    name: Literal["adamw"] = "adamw"
    lr: float = Field(3e-4, gt=0.0, le=10.0)
    betas: list[float] = Field([0.9, 0.999], min_length=2, max_length=2)
    eps: float = Field(1e-8, gt=0.0)
    weight_decay: float = Field(0.1, ge=0.0)
    grad_clip: float = Field(1.0, ge=0.0, description="0 turns clipping off.")


class ScheduleSpec(_Section):
    warmup_steps: int = Field(20, ge=0, description="Linear warmup from lr/warmup_steps to lr.")
    min_lr: float = Field(3e-5, ge=0.0, description="Cosine annealing floor.")


class TrainSpec(_Section):
    """The loop. ``nan_policy``: what a non-finite loss does (``stop``: fail with a clear message,
    the latest checkpoint untouched; ``skip``: drop that batch's update and count it)."""

    epochs: int = Field(1, ge=1, le=100000)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    micro_batch_size: int = Field(8, ge=1, description="Sequences per worker per forward pass.")
    gradient_accumulation_steps: int = Field(1, ge=1)
    global_batch_size: int | None = Field(
        None,
        ge=1,
        description="Optional check: micro_batch_size x gradient_accumulation_steps x num_workers.",
    )
    log_interval: int = Field(5, ge=1, description="Log training metrics every N steps.")
    eval_interval: int = Field(25, ge=1, description="Evaluate every N steps (a multiple of log_interval).")
    eval_batches: int = Field(8, ge=1, description="Validation micro batches per rank per evaluation.")
    final_eval_sequences: int = Field(
        16384,
        ge=0,
        description="The run's final validation: every validation sequence when the split holds at most "
        "this many (0: always every one), else a fixed, seeded sample of this many spread over the split.",
    )
    seed: int = 1234
    nan_policy: Literal["stop", "skip"] = Field(
        "stop", description="On a NaN/inf loss: stop with a message, or skip the batch and count it."
    )
    max_skipped_steps: int = Field(
        10, ge=0, description="With nan_policy skip: stop once more batches than this were skipped."
    )
    peak_tflops: float | None = Field(
        None,
        gt=0.0,
        le=1_000_000.0,
        allow_inf_nan=False,
        description="Dense peak TFLOP/s of one device at the run's precision, for the mfu metric. "
        "Default: known GPUs by name in bf16/fp16 (H100/H200 SXM 989, H100 PCIe 756, H100 NVL 835, "
        "A100 312); none for CPUs, fp32 and other devices (no mfu is logged then, only tflops).",
    )


class DeepSpeedSpec(_Section):
    zero_stage: Literal[0, 1, 2, 3] = 2
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="fp16 uses dynamic loss scaling and needs a GPU; bf16 works on CPU too."
    )
    offload_optimizer: Literal["none", "cpu", "nvme"] = Field(
        "none", description="Keep optimizer states (and the step) on the CPU or on NVMe (NVMe: ZeRO-3)."
    )
    offload_params: Literal["none", "cpu", "nvme"] = Field(
        "none", description="Keep parameters on the CPU or NVMe between uses (ZeRO-3 only)."
    )
    nvme_path: str | None = Field(None, description="A fast local directory for NVMe offload.")
    raw_config: Annotated[dict[str, JsonValue], MAY_REFER] = Field(
        {},
        description="Escape hatch: raw DeepSpeed config keys merged last, e.g. "
        "{zero_optimization: {reduce_bucket_size: 500000000}}. Checked by DeepSpeed itself "
        "(`orchestrator plan`, `submit`); keys the typed fields own are refused.",
    )


# DeepSpeed config keys the typed spec sets, and where to set them instead.
OWNED_DEEPSPEED_KEYS = {
    "train_batch_size": "train.global_batch_size (checked) and train.micro_batch_size",
    "train_micro_batch_size_per_gpu": "train.micro_batch_size",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "gradient_clipping": "optimizer.grad_clip",
    "optimizer": "the optimizer section",
    "scheduler": "the schedule section",
    "bf16": "deepspeed.precision",
    "fp16": "deepspeed.precision",
    "zero_optimization.stage": "deepspeed.zero_stage",
    "zero_optimization.offload_optimizer": "deepspeed.offload_optimizer",
    "zero_optimization.offload_param": "deepspeed.offload_params",
}
# Top-level keys of DeepSpeed's config (its config-json reference); DeepSpeed itself ignores unknown
# top-level keys silently, so a typo here would otherwise do nothing.
DEEPSPEED_SECTIONS = {
    "activation_checkpointing", "aio", "amp", "autotuning", "checkpoint", "comet", "comms_logger",
    "communication_data_type", "compression_training", "csv_monitor", "curriculum_learning",
    "data_efficiency", "data_types", "dataloader_drop_last", "disable_allgather", "dump_state",
    "elasticity", "flops_profiler", "gradient_predivide_factor", "memory_breakdown", "prescale_gradients",
    "seq_parallel_communication_data_type", "sparse_attention", "sparse_gradients", "steps_per_print",
    "tensorboard", "torch_autocast", "wall_clock_breakdown", "wandb", "zero_allow_untested_optimizer",
    "zero_force_ds_cpu_optimizer", "zero_optimization",
}  # fmt: skip


class ClusterSpec(_Section):
    backend: Literal["ray-local", "ray-job", "kubernetes"] = Field(
        "ray-local",
        description="ray-local: Ray Train driven from this process, on an embedded Ray on 127.0.0.1 "
        "or on the cluster at `address`; ray-job: a Ray job submitted through the Jobs API of the "
        "cluster whose dashboard is at `address`; kubernetes: a KubeRay RayJob that brings its own "
        "Ray cluster (see the kubernetes section).",
    )
    address: Annotated[str | None, MAY_REFER] = Field(
        None,
        description="ray-local: `auto` (the cluster this machine belongs to), `ray://host:port` or "
        "`host:port` of a running cluster; none starts an embedded Ray. ray-job: the dashboard URL, "
        "e.g. http://127.0.0.1:8265.",
    )
    num_workers: int = Field(2, ge=1, le=4096)
    cpus_per_worker: float = Field(1.0, gt=0.0)
    gpus_per_worker: float = Field(0.0, ge=0.0)
    resources_per_worker: dict[str, float] = Field(
        {}, description="Custom Ray resources each worker needs, e.g. {accelerator_a100: 1}."
    )
    label_selector: dict[str, str] = Field(
        {}, description="Node labels a worker's node must carry, e.g. {ray.io/market-type: spot}."
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="How the workers' bundles spread over nodes (Ray placement groups)."
    )
    connect_timeout_s: float = Field(
        30.0,
        gt=0.0,
        le=3600.0,
        description="ray-local with an address: how long to keep trying to reach the cluster before "
        "failing with what could not be reached.",
    )
    placement_timeout_s: float = Field(
        120.0,
        gt=0.0,
        description="Fail with the missing resources named if the workers cannot be placed by then.",
    )
    max_failures: int = Field(
        0, ge=0, le=1000, description="Worker-group restarts allowed; each resumes from a checkpoint."
    )
    host: str = Field(
        "127.0.0.1",
        description="IP address an embedded Ray and its dashboard listen on. Only a loopback address "
        "unless `expose: true`.",
    )
    expose: bool = Field(
        False,
        description="Allow `host` to be an address other machines can reach (a warning is printed): "
        "whoever reaches Ray's ports and holds its token can run code here.",
    )
    ray_auth: Literal["token", "disabled"] = Field(
        "token",
        description="Ray's authentication for an embedded Ray (RAY_AUTH_MODE). `disabled` lets anyone "
        "who reaches its ports run code: only for a machine no one else can reach.",
    )


class TrackingSpec(_Section):
    uri: Annotated[str | None, MAY_REFER] = Field(
        None, description="MLflow tracking URI; default: sqlite:///mlflow.db here."
    )
    experiment: str | None = Field(None, description="MLflow experiment; default: the spec's name.")
    run_name: str | None = Field(
        None,
        pattern=RUN_NAME_PATTERN,
        description="Default: the spec's name plus a timestamp. A directory name: letters, digits, "
        "`_`, `.` and `-`, starting with a letter or digit.",
    )
    flush_interval_s: float = Field(
        1.0, gt=0.0, le=60.0, allow_inf_nan=False, description="Longest a metric waits for its batch."
    )
    drain_timeout_s: float = Field(
        60.0,
        ge=0.0,
        description="At the end, how long to keep trying to deliver unsent metrics before leaving them "
        "in the journal for `orchestrator sync`.",
    )
    request_timeout_s: float = Field(
        30.0, gt=0.0, allow_inf_nan=False, description="Per-request timeout towards a tracking server."
    )
    request_retries: int = Field(2, ge=0, le=10, description="Retries of one request before it fails.")
    system_metrics: bool = Field(
        True,
        description="Log each node's GPU, CPU, memory, disk and network use to MLflow (its System "
        "metrics tab), from a child process of the node's first worker.",
    )
    system_metrics_interval_s: float = Field(
        10.0,
        ge=0.1,
        le=3600.0,
        allow_inf_nan=False,
        description="Seconds between two samples of the system metrics (MLflow's "
        "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides it).",
    )


class ReportSpec(_Section):
    artifacts: bool = Field(True, description="Write the report files live into the run's directory.")
    formats: list[Literal["json", "png"]] = Field(
        ["json", "png"],
        min_length=1,
        description="json: training_metrics.json + summary.json; png: the two plots.",
    )


class CheckpointSpec(_Section):
    dir: str = Field(
        "./checkpoints",
        description="Each run writes into <dir>/<run name>/: a local path, a path every node mounts, "
        "or s3://bucket/prefix (any S3-compatible store; see the storage section).",
    )
    local_dir: str = Field(
        "./runs",
        min_length=1,
        description="With dir on an object store: the node-local directory of each run's journal, "
        "logs, status and live report (<local_dir>/<run name>/). Unused when dir is a path.",
    )
    interval: int | None = Field(
        None, ge=1, description="Save every N optimizer steps (and always at the end); default: end only."
    )
    keep_last: int = Field(2, ge=1, le=1000, description="Complete checkpoints kept, newest first.")
    keep_best: bool = Field(True, description="Also keep the checkpoint with the best evaluation.")


class StorageSpec(_Section):
    """How to reach an object store named by ``s3://`` in checkpoint.dir or data.prepared. Unset fields
    come from the standard AWS variables (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY) or profile. Credentials may only be ``${env:NAME}`` references."""

    endpoint_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/@]+(:[0-9]+)?/?$",
        description="The store's S3 endpoint, e.g. http://minio.storage:9000; default: AWS_ENDPOINT_URL.",
    )
    region: str | None = Field(None, pattern=r"^[a-z0-9-]{1,32}$", description="Default: AWS_REGION.")
    access_key_id: Annotated[str | None, MAY_REFER] = Field(
        None, min_length=1, description="A ${env:NAME} reference."
    )
    secret_access_key: Annotated[str | None, MAY_REFER] = Field(
        None, min_length=1, description="A ${env:NAME} reference."
    )
    retry_deadline_s: float = Field(
        300.0,
        gt=0.0,
        le=86400.0,
        description="How long one storage operation keeps retrying while the store is unreachable "
        "before the run fails.",
    )


class EarlyStoppingSpec(_Section):
    """Stop when ``metric`` has not improved by ``min_delta`` for ``patience`` evaluations."""

    enabled: bool = False
    metric: Literal["val_loss", "val_perplexity", "val_accuracy"] = Field(
        "val_loss", description="Lower is better, except val_accuracy."
    )
    patience: int = Field(3, ge=1, description="Evaluations without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0.0, allow_inf_nan=False, description="Smallest improvement.")


class RunSpec(_Section):
    """A whole training run. Load it with ``orchestrator.spec.load_spec(path)``."""

    # dotted path -> the `${env:NAME}` text it was read from; see public_dump()
    _secret_refs: dict[str, str] = PrivateAttr(default_factory=dict)
    # NAME -> the value the environment supplied for `${env:NAME}`; see redact(), with_references()
    _secret_env: dict[str, str] = PrivateAttr(default_factory=dict)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    model: ModelSpec = ModelSpec()
    data: DataSpec = DataSpec()
    optimizer: OptimizerSpec = OptimizerSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    train: TrainSpec = TrainSpec()
    deepspeed: DeepSpeedSpec = DeepSpeedSpec()
    cluster: ClusterSpec = ClusterSpec()
    tracking: TrackingSpec = TrackingSpec()
    report: ReportSpec = ReportSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    storage: StorageSpec = StorageSpec()
    early_stopping: EarlyStoppingSpec = EarlyStoppingSpec()
    kubernetes: KubernetesSpec = KubernetesSpec()
    export: ExportSpec = ExportSpec()
    sweep: SweepSpec = SweepSpec()

    def redact(self, text: str) -> str:
        """Mask every resolved secret value inside text that is about to be shown."""
        return mask_values(text, self._secret_env.values())

    def with_references(self, text: str) -> str:
        """Put the `${env:NAME}` reference back where a resolved secret appears (a tracking URI in a
        command to copy, a ticket a cluster resolves again in its own environment)."""
        return put_references(text, self._secret_env)

    def redact_data(self, tree: Any) -> Any:
        """``redact`` applied to every string of JSON-like data, before it is serialised."""
        return mask_data(tree, self.redact)

    def public_dump(self) -> dict:
        """The spec as plain data, with every value that came from `${env:...}` shown as its reference.

        This is what may be printed or logged (MLflow params); the resolved secrets never are.
        """
        data = self.model_dump(mode="json")
        for dotted, reference in self._secret_refs.items():
            *parents, leaf = dotted.split(".")
            node = data
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            node[int(leaf) if isinstance(node, list) else leaf] = reference
        return data

    def resolved_text(self) -> str:
        """The resolved spec (file plus overrides) as YAML, secrets as their `${env:...}` references.

        This is what a run stores as its ``spec.yaml`` and hashes: loading it again (with the same
        environment) gives an equal spec."""
        return yaml.safe_dump(self.public_dump(), sort_keys=False, allow_unicode=True, width=100)

    @property
    def global_batch_size(self) -> int:
        """Sequences per optimizer step: micro batch x accumulation x workers."""
        train = self.train
        return train.micro_batch_size * train.gradient_accumulation_steps * self.cluster.num_workers

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.model.context_length

    @model_validator(mode="after")
    def _cross_field_checks(self, info: ValidationInfo) -> RunSpec:
        """Built in code: fail on the first finding. The loader defers them to collect all at once."""
        if info.context and info.context.get(DEFER_CHECKS):
            return self
        from orchestrator.spec.checks import run_checks

        found = run_checks({name: getattr(self, name) for name in type(self).model_fields})
        if found:
            raise ValueError("; ".join(f"{f.path}: {f.message} (hint: {f.hint})" for f in found))
        return self


# Validation context key: the caller runs orchestrator.spec.checks itself.
DEFER_CHECKS = "defer_cross_field_checks"
