"""What a plan looks like to a person: the lines `validate`, `plan` and `submit` print.

Beside ``MemoryPlan.describe``; secrets are masked by the callers (``Plan.describe``).
"""

from __future__ import annotations

import ipaddress
import json
from typing import TYPE_CHECKING

from orchestrator.masking import mask_uri_passwords
from orchestrator.plan.memory import estimate_memory, single_worker_stage_hint

if TYPE_CHECKING:
    from orchestrator.plan.plan import Plan
    from orchestrator.spec import RunSpec


def describe_spec(spec: RunSpec) -> str:
    """What a spec alone determines: hardware, engine, model, batch and the memory plan."""
    return "\n".join(_spec_lines(spec))


def _spec_lines(spec: RunSpec) -> list[str]:
    memory = estimate_memory(spec, spec.cluster.num_workers)
    return [
        *_engine_lines(spec),
        f"batch      global {spec.global_batch_size} sequences = {spec.tokens_per_step:,} tokens/step",
        f"memory     {memory.describe()}",
    ]


def exposure_warnings(cluster) -> list[str]:
    """What an embedded Ray opens beyond this machine's own reach, when the spec asked for it."""
    if cluster.backend != "ray-local" or cluster.address:
        return []
    warnings = []
    if not ipaddress.ip_address(cluster.host).is_loopback:  # the spec checks made it an IP address
        warnings.append(
            f"an embedded Ray will listen on {cluster.host}, beyond loopback (cluster.expose: true): "
            "whoever reaches it and holds its token can run code on this machine"
        )
    if cluster.ray_auth == "disabled":
        warnings.append(
            "Ray's token authentication is off (cluster.ray_auth: disabled): any local user or "
            "process that reaches Ray's ports can run code as you"
        )
    return warnings


def _engine_lines(spec: RunSpec) -> list[str]:
    cluster, model = spec.cluster, spec.model
    return [
        *(f"warning    {text}" for text in exposure_warnings(cluster)),
        f"backend    {cluster.backend}, {cluster.num_workers} workers x "
        f"{cluster.cpus_per_worker:g} CPU / {cluster.gpus_per_worker:g} GPU",
        f"deepspeed  ZeRO stage {spec.deepspeed.zero_stage}, {spec.deepspeed.precision}",
        f"model      {model.n_layers} layers, d_model {model.d_model}, {model.n_heads} heads, "
        f"context {model.context_length}, vocab {model.vocab_size}",
    ]


def describe_plan(plan: Plan) -> str:
    spec = plan.spec
    memory = [f"memory     {plan.memory.describe()}"] if plan.memory else []
    capacity = plan.memory.capacity_bytes if plan.memory else None
    stage_hint = single_worker_stage_hint(spec, capacity)
    memory += [f"hint       {stage_hint}"] if stage_hint else []
    capped = "" if spec.train.max_steps is None else ", capped"
    return "\n".join(
        [
            f"run        {plan.run_name}" + (f" (MLflow run {plan.run_id})" if plan.run_id else ""),
            *_engine_lines(spec),
            _data_line(plan),
            f"batch      global {plan.global_batch_size} sequences = {plan.tokens_per_step:,} tokens/step",
            f"steps      {plan.total_steps} ({plan.steps_per_epoch}/epoch, "
            f"{spec.train.epochs} epoch(s){capped})",
            f"artifacts  {plan.checkpoint_dir}",
            *([f"checkpoints {plan.checkpoint_uri}"] if plan.checkpoint_uri != plan.checkpoint_dir else []),
            f"tracking   {mask_uri_passwords(plan.tracking_uri)} (experiment {plan.experiment_name})",
            *memory,
        ]
    )


def _data_line(plan: Plan) -> str:
    data, spec = plan.data, plan.spec
    sizes = f"{data.train_samples:,} train / {data.val_samples:,} validation sequences"
    if data.estimated:
        return (
            f"data       {spec.data.corpus}: not prepared yet; about {data.n_tokens:,} tokens, {sizes} "
            "(an estimate from the sources' size; `orchestrator prepare` makes it exact) -> "
            f"{data.dataset_uri}"
        )
    return (
        f"data       {spec.data.corpus}: {data.n_tokens:,} tokens in {data.n_documents:,} documents, "
        f"{sizes}, {data.n_shards} shards at {data.dataset_uri}"
    )


def describe_submit(plan: Plan) -> str:
    """`orchestrator plan`: the plan, what submit would do, and the DeepSpeed config."""
    steps = "\n".join(f"  - {step}" for step in submit_steps(plan))
    config = json.dumps(plan.spec.redact_data(plan.deepspeed_config), indent=2)
    return plan.spec.redact(f"{describe_plan(plan)}\n\nsubmit would:\n{steps}\n\nDeepSpeed config:\n{config}")


def submit_steps(plan: Plan) -> list[str]:
    spec, cluster = plan.spec, plan.spec.cluster
    prepare = [] if not plan.data.estimated else [f"prepare the data into {plan.data.dataset_uri}"]
    return [
        *prepare,
        f"create {plan.checkpoint_dir}",
        f"create MLflow run {plan.run_name!r} in experiment {plan.experiment_name!r} at "
        f"{mask_uri_passwords(plan.tracking_uri)}",
        f"{where_ray_runs(cluster)}, with a group of {cluster.num_workers} workers "
        f"({cluster.cpus_per_worker:g} CPU, {cluster.gpus_per_worker:g} GPU each, "
        f"{cluster.placement_strategy}, up to {cluster.max_failures} restarts)",
        f"train {plan.total_steps} steps with DeepSpeed ZeRO-{spec.deepspeed.zero_stage}, "
        f"logging every {spec.train.log_interval} and evaluating every {spec.train.eval_interval}",
        f"write training_metrics.json, training_curve.png, loss_by_epoch.png into {plan.checkpoint_dir}",
    ]


def where_ray_runs(cluster) -> str:
    if cluster.backend == "ray-job":
        return f"submit a Ray job through the Jobs API at {cluster.address}"
    if cluster.address:
        return f"run Ray Train on the running cluster at {cluster.address}"
    return f"start an embedded Ray on {cluster.host}"
