"""Which `--set` values a resume may apply to a run's stored spec.

A resume continues the same optimisation: the steps already trained must mean the same thing, so the
model, the data, the optimizer, the schedule, the batch, the precision and the step count stay as
they were. What only changes how the rest is run, watched or kept may change. The ZeRO stage passes
through to the checkpoint check (DeepSpeed loads a stage's shards only into the same stage). The
worker count may change (an elastic resume): gradient accumulation is rescaled so that the global
batch stays what it was (``elastic_overrides``), and the checkpoint is converted to DeepSpeed's
universal form by the workers.

>>> check_resume_overrides(["train.eval_interval=50", "cluster.max_failures=2"])
>>> check_resume_overrides(["optimizer.lr=0.1"])
Traceback (most recent call last):
...
orchestrator.errors.ResumeError: --set optimizer.lr=0.1: cannot change on resume ...
"""

from __future__ import annotations

from orchestrator.errors import ResumeError

# Dotted prefixes a resume may change.
SAFE_ON_RESUME = (
    "train.log_interval",
    "train.eval_interval",
    "train.eval_batches",
    "train.final_eval_sequences",
    "train.nan_policy",
    "train.max_skipped_steps",
    "train.peak_tflops",  # what mfu is measured against, nothing trained
    "early_stopping",
    "checkpoint.interval",
    "checkpoint.keep_last",
    "checkpoint.keep_best",
    "tracking.flush_interval_s",
    "tracking.drain_timeout_s",
    "tracking.request_timeout_s",
    "tracking.request_retries",
    "tracking.system_metrics",
    "tracking.system_metrics_interval_s",
    "report",
    "model.compile",
    "model.activation_checkpointing",  # recomputation gives the same numbers, only slower
    "cluster.address",
    "cluster.cpus_per_worker",
    "cluster.resources_per_worker",
    "cluster.label_selector",
    "cluster.placement_strategy",
    "cluster.placement_timeout_s",
    "cluster.connect_timeout_s",
    "cluster.max_failures",
    "cluster.host",
    "cluster.gpus_per_worker",
    "storage.retry_deadline_s",
)
# Judged against the checkpoint itself (a clear refusal naming the conversion command).
CHECKED_BY_CHECKPOINT = ("cluster.num_workers", "deepspeed.zero_stage")


def check_resume_overrides(overrides) -> None:
    refused = [text for text in overrides if not _allowed(text.partition("=")[0].strip())]
    if refused:
        shown = "\n    ".join(f"--set {text}" for text in refused)
        raise ResumeError(
            f"{shown}: cannot change on resume (the steps already trained would no longer match the "
            "spec); hint: a resume may change "
            + ", ".join(SAFE_ON_RESUME + CHECKED_BY_CHECKPOINT)
            + "; to train with other values, submit the spec as a new run with these --set values"
        )


def _allowed(path: str) -> bool:
    return any(path == safe or path.startswith(safe + ".") for safe in SAFE_ON_RESUME + CHECKED_BY_CHECKPOINT)


def elastic_overrides(stored_spec, overrides: list[str], parse) -> list[str]:
    """``overrides`` plus the gradient accumulation that keeps the stored spec's global batch when
    they change the worker count; a ResumeError when no whole number of micro batches does.
    ``parse(overrides)`` gives the spec the overrides make (to read the new worker count)."""
    changed = parse(overrides)
    old, new = stored_spec, changed
    if new.cluster.num_workers == old.cluster.num_workers:
        return list(overrides)
    per_pass = new.train.micro_batch_size * new.cluster.num_workers
    if old.global_batch_size % per_pass:
        raise ResumeError(
            f"--set cluster.num_workers={new.cluster.num_workers}: the run's global batch of "
            f"{old.global_batch_size} sequences is not a whole number of passes of "
            f"{new.train.micro_batch_size} sequences x {new.cluster.num_workers} workers; the global "
            "batch (and so the data order and the learning-rate schedule) must stay as it was. Hint: "
            f"choose a worker count that divides {old.global_batch_size // new.train.micro_batch_size}"
        )
    steps = old.global_batch_size // per_pass
    kept = [text for text in overrides if not text.startswith("train.gradient_accumulation_steps=")]
    return [*kept, f"train.gradient_accumulation_steps={steps}"]
