"""Cross-field checks: named rules over one or more spec sections, each with a hint for the fix.

A check never raises: it yields ``Finding``s, so every problem of a spec is reported at once, and a
check runs as soon as the sections it reads are valid, even when other sections are not. Each
finding's path names the field to change (not the section), relative to the spec's root.

>>> from orchestrator.spec.models import ModelSpec
>>> [f.path for f in run_checks({"model": ModelSpec(d_model=96, n_heads=5)})]
['model.n_heads']
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Finding:
    path: str  # dotted, from the spec's root: the field to change
    message: str
    hint: str


Check = Callable[..., Iterable[Finding]]
# (the sections a check reads, the check), in the order they were defined
CHECKS: list[tuple[tuple[str, ...], Check]] = []
# A check registered with this instead of section names reads the whole spec (every section, as one
# dict), and runs only when every section is valid.
WHOLE_SPEC = "*"


def check(*sections: str) -> Callable[[Check], Check]:
    """Register a check that reads these sections (passed in this order)."""

    def register(function: Check) -> Check:
        CHECKS.append((sections, function))
        return function

    return register


def run_checks(sections: dict[str, Any]) -> list[Finding]:
    """Every finding of every check whose sections are all present (i.e. valid) in ``sections``."""
    found: list[Finding] = []
    for needs, function in CHECKS:
        if needs == (WHOLE_SPEC,):
            if _every_section(sections):
                found.extend(function(sections))
        elif all(name in sections for name in needs):
            found.extend(function(*(sections[name] for name in needs)))
    return found


def _every_section(sections: dict[str, Any]) -> bool:
    from orchestrator.spec.models import RunSpec

    return all(name in sections for name in RunSpec.model_fields)


@check("model")
def heads_divide_width(model) -> Iterator[Finding]:
    if model.d_model % model.n_heads:
        divisors = [d for d in range(1, min(model.d_model, 64) + 1) if model.d_model % d == 0]
        yield Finding(
            "model.n_heads",
            f"d_model ({model.d_model}) must be divisible by n_heads ({model.n_heads})",
            f"pick n_heads from {divisors}",
        )


@check("data")
def files_go_with_the_files_corpus(data) -> Iterator[Finding]:
    if data.corpus == "files" and not data.files:
        yield Finding("data.files", "corpus: files needs at least one path", "files: [data/*.txt]")
    if data.corpus != "files" and data.files:
        yield Finding(
            "data.files", f"files are listed but corpus {data.corpus!r} would ignore them", "corpus: files"
        )


@check("data")
def data_sources_are_readable_kinds(data) -> Iterator[Finding]:
    from orchestrator.storage.location import location_problem

    if data.prepared is not None and location_problem(data.prepared):
        yield Finding("data.prepared", location_problem(data.prepared), "prepared: s3://bucket/datasets")
    if data.tokenizer.path is not None and location_problem(data.tokenizer.path):
        yield Finding("data.tokenizer.path", location_problem(data.tokenizer.path), "path: tokenizer.json")
    for i, pattern in enumerate(data.files):
        if pattern.startswith(("s3:", "gs:", "http:", "https:")):
            yield Finding(
                f"data.files.{i}",
                f"{pattern!r}: source files are read from local or mounted paths",
                "copy the sources to a mounted path, or prepare them where they are "
                "(`orchestrator prepare`) into data.prepared",
            )


@check("checkpoint")
def checkpoint_dir_is_a_served_location(checkpoint) -> Iterator[Finding]:
    from orchestrator.storage.location import location_problem

    problem = location_problem(checkpoint.dir)
    if problem:
        yield Finding("checkpoint.dir", problem, "dir: ./checkpoints, or dir: s3://bucket/runs")
    if location_problem(checkpoint.local_dir) or checkpoint.local_dir.startswith("s3:"):
        yield Finding("checkpoint.local_dir", "must be a local path", "local_dir: ./runs")


@check("optimizer")
def betas_in_range(optimizer) -> Iterator[Finding]:
    if not all(0.0 <= beta < 1.0 for beta in optimizer.betas):
        yield Finding(
            "optimizer.betas",
            f"each beta must be in [0, 1), got {optimizer.betas}",
            "the usual is [0.9, 0.999]",
        )


@check("train")
def eval_on_logging_steps(train) -> Iterator[Finding]:
    if train.eval_interval % train.log_interval:
        suggestion = train.log_interval * max(1, round(train.eval_interval / train.log_interval))
        yield Finding(
            "train.eval_interval",
            f"eval_interval ({train.eval_interval}) must be a multiple of log_interval "
            f"({train.log_interval}) so every validation point has a logging step",
            f"eval_interval: {suggestion}",
        )


@check("deepspeed")
def offload_fits_stage(ds) -> Iterator[Finding]:
    if ds.offload_params != "none" and ds.zero_stage != 3:
        yield Finding(
            "deepspeed.offload_params",
            f"offload_params: {ds.offload_params} needs ZeRO stage 3 (got {ds.zero_stage})",
            "set zero_stage: 3, or use offload_optimizer: cpu with this stage",
        )
    uses_nvme = "nvme" in (ds.offload_optimizer, ds.offload_params)
    if uses_nvme and ds.zero_stage != 3:
        yield Finding(
            "deepspeed.zero_stage",
            f"NVMe offload needs ZeRO stage 3 (got {ds.zero_stage})",
            "set zero_stage: 3, or offload to cpu",
        )
    if uses_nvme and not ds.nvme_path:
        yield Finding("deepspeed.nvme_path", "NVMe offload needs a directory", "set deepspeed.nvme_path")


@check("deepspeed")
def raw_keys_are_deepspeeds_and_not_ours(ds) -> Iterator[Finding]:
    from orchestrator.spec.models import DEEPSPEED_SECTIONS, OWNED_DEEPSPEED_KEYS

    zero = ds.raw_config.get("zero_optimization")
    nested = {f"zero_optimization.{k}" for k in zero} if isinstance(zero, dict) else set()
    for key in sorted(set(ds.raw_config) | nested):
        where = f"deepspeed.raw_config.{key}"
        if key in OWNED_DEEPSPEED_KEYS:
            yield Finding(where, "is set by a typed field", f"use {OWNED_DEEPSPEED_KEYS[key]}")
        elif "." not in key and key not in DEEPSPEED_SECTIONS:
            close = difflib.get_close_matches(key, sorted(DEEPSPEED_SECTIONS), n=1, cutoff=0.6)
            hint = f"did you mean `{close[0]}`?" if close else "see DeepSpeed's config-json reference"
            yield Finding(where, "is not a DeepSpeed config key", hint)


@check("cluster")
def address_fits_backend(cluster) -> Iterator[Finding]:
    address = cluster.address or ""
    if cluster.backend == "ray-job" and not address.startswith(("http://", "https://")):
        yield Finding(
            "cluster.address",
            f"backend ray-job needs address set to the dashboard URL, got {cluster.address!r}",
            "address: http://127.0.0.1:8265",
        )
    if cluster.backend == "ray-local" and address.startswith(("http://", "https://")):
        yield Finding(
            "cluster.address",
            f"{cluster.address!r} is a dashboard URL, which only backend ray-job uses",
            "backend: ray-job, or address: auto / ray://host:10001",
        )
    for name, amount in cluster.resources_per_worker.items():
        if name in ("CPU", "GPU", "memory") or amount <= 0:
            yield Finding(
                f"cluster.resources_per_worker.{name}",
                f"{amount} is not a positive custom resource",
                "CPUs and GPUs go in cpus_per_worker and gpus_per_worker",
            )


@check("cluster")
def host_is_loopback_unless_exposed(cluster) -> Iterator[Finding]:
    """An embedded Ray runs whatever its clients send: it listens where only this machine can reach
    it unless the spec says otherwise in so many words."""
    try:
        address = ipaddress.ip_address(cluster.host)
    except ValueError:
        yield Finding(
            "cluster.host",
            f"{cluster.host!r} is not an IP address",
            "host: 127.0.0.1 (this machine only), or this machine's address on a network you trust "
            "with expose: true",
        )
        return
    if address.version == 6:
        yield Finding(
            "cluster.host",
            f"{cluster.host} is an IPv6 address; an embedded Ray listens on an IPv4 address",
            "host: 127.0.0.1 (this machine only), or an IPv4 address of this machine with expose: true",
        )
        return
    if not address.is_loopback and not cluster.expose:
        yield Finding(
            "cluster.host",
            f"{cluster.host} can be reached from other machines, and whoever reaches an embedded Ray "
            "and holds its token can run code on this one",
            "keep host: 127.0.0.1, or set cluster.expose: true to listen there anyway",
        )


@check("cluster")
def kubernetes_brings_its_own_cluster(cluster) -> Iterator[Finding]:
    if cluster.backend == "kubernetes" and cluster.address is not None:
        yield Finding(
            "cluster.address",
            f"backend kubernetes creates its own Ray cluster, so address {cluster.address!r} has no use",
            "remove address (--set cluster.address=null)",
        )


@check("kubernetes")
def tolerations_are_complete(kubernetes) -> Iterator[Finding]:
    for i, toleration in enumerate(kubernetes.tolerations or []):
        where = f"kubernetes.tolerations.{i}"
        if toleration.operator == "Exists" and toleration.value is not None:
            yield Finding(f"{where}.value", "operator Exists takes no value", "remove value, or use Equal")
        if toleration.operator == "Equal" and toleration.key is None:
            yield Finding(f"{where}.key", "operator Equal needs a key", "set key, or use operator: Exists")
        if toleration.toleration_seconds is not None and toleration.effect != "NoExecute":
            yield Finding(
                f"{where}.toleration_seconds", "only applies to effect NoExecute", "set effect: NoExecute"
            )


@check("kubernetes")
def secret_env_names_secret_and_key(kubernetes) -> Iterator[Finding]:
    from orchestrator.spec.kubernetes import SECRET_KEY

    for name, ref in kubernetes.secret_env.items():
        if not SECRET_KEY.match(ref):
            yield Finding(
                f"kubernetes.secret_env.{name}",
                f"{ref!r} is not <secret name>/<key>",
                f"{name}: my-secret/{name.lower()}",
            )


@check("kubernetes")
def mounts_do_not_overlap(kubernetes) -> Iterator[Finding]:
    from orchestrator.spec.kubernetes import RESERVED_MOUNTS, nested_paths

    mounts = {}
    if kubernetes.checkpoint_claim:
        mounts["checkpoint_mount_path"] = kubernetes.checkpoint_mount_path
    if kubernetes.data_claim:
        mounts["data_mount_path"] = kubernetes.data_mount_path
    for field, path in mounts.items():
        others = [*RESERVED_MOUNTS, *(p for f, p in mounts.items() if f != field)]
        clash = next((other for other in others if nested_paths(path, other)), None)
        if path == "/" or clash:
            yield Finding(
                f"kubernetes.{field}",
                f"{path} overlaps {clash or 'the root'}, which the pods mount",
                f"{field}: /mnt/...",
            )


@check("export")
def export_formats_once_and_register_with_mlflow(export) -> Iterator[Finding]:
    repeated = sorted({f for f in export.formats if export.formats.count(f) > 1})
    if repeated:
        yield Finding("export.formats", f"{', '.join(repeated)} listed twice", "list each format once")
    if export.register_name is not None and "mlflow" not in export.formats:
        yield Finding(
            "export.register_name",
            "registering needs the model logged to MLflow",
            "add mlflow to formats, or drop register_name",
        )


@check("train", "cluster")
def global_batch_multiplies_out(train, cluster) -> Iterator[Finding]:
    if train.global_batch_size is None:
        return
    per_pass = train.micro_batch_size * cluster.num_workers
    actual = per_pass * train.gradient_accumulation_steps
    if actual != train.global_batch_size:
        yield Finding(
            "train.global_batch_size",
            f"is {train.global_batch_size}, but micro_batch_size {train.micro_batch_size} x "
            f"gradient_accumulation_steps {train.gradient_accumulation_steps} x "
            f"cluster.num_workers {cluster.num_workers} = {actual}",
            f"set gradient_accumulation_steps: {train.global_batch_size // per_pass}"
            if train.global_batch_size % per_pass == 0
            else "pick a global batch divisible by micro_batch_size x num_workers",
        )


@check("schedule", "optimizer")
def min_lr_below_lr(schedule, optimizer) -> Iterator[Finding]:
    if schedule.min_lr > optimizer.lr:
        yield Finding(
            "schedule.min_lr",
            f"min_lr ({schedule.min_lr}) is above optimizer.lr ({optimizer.lr})",
            "set min_lr to about lr/10",
        )


@check("schedule", "train")
def warmup_shorter_than_run(schedule, train) -> Iterator[Finding]:
    if train.max_steps is not None and schedule.warmup_steps >= train.max_steps:
        yield Finding(
            "schedule.warmup_steps",
            f"warmup_steps ({schedule.warmup_steps}) must be shorter than train.max_steps "
            f"({train.max_steps})",
            "warm up for about 5-10% of the run",
        )


@check("sweep", "train")
def asha_grace_within_the_trials(sweep, train) -> Iterator[Finding]:
    """ASHA compares trials after `grace_period` steps; a trial that stops before that has no rung."""
    if sweep.scheduler != "asha" or train.max_steps is None:
        return
    grace = sweep.asha.grace_period or train.eval_interval
    if grace > train.max_steps:
        yield Finding(
            "sweep.asha.grace_period",
            f"the grace period ({grace} steps{'' if sweep.asha.grace_period else ', train.eval_interval'}) "
            f"is longer than a trial (train.max_steps {train.max_steps})",
            f"set sweep.asha.grace_period to at most {train.max_steps} (a quarter of the run is usual)",
        )


@check("deepspeed", "cluster")
def fp16_needs_a_gpu(ds, cluster) -> Iterator[Finding]:
    if ds.precision == "fp16" and cluster.gpus_per_worker == 0:
        yield Finding(
            "deepspeed.precision",
            "fp16 needs a GPU: DeepSpeed's CPU accelerator refuses it "
            '("Type fp16 is not supported on your device") and cluster.gpus_per_worker is 0',
            "use precision: bf16 (or fp32) on CPU, or set cluster.gpus_per_worker",
        )


@check("train")
def nan_skip_needs_whole_steps(train) -> Iterator[Finding]:
    if train.nan_policy == "skip" and train.gradient_accumulation_steps != 1:
        yield Finding(
            "train.nan_policy",
            "skip drops whole optimizer steps, which gradient accumulation "
            f"({train.gradient_accumulation_steps} micro batches) would leave half-applied",
            "use nan_policy: stop, or gradient_accumulation_steps: 1 with a larger micro batch",
        )


@check("sweep")
def sweep_paths_name_fields(sweep) -> Iterator[Finding]:
    from orchestrator.spec.sweep import path_problem

    for path in sweep.parameters:
        problem = path_problem(path)
        if problem:
            yield Finding(f"sweep.parameters.{path}", *problem)


@check("sweep")
def sweep_search_fits_its_spaces(sweep) -> Iterator[Finding]:
    for path, space in sweep.parameters.items():
        where = f"sweep.parameters.{path}"
        if sweep.search == "grid" and space.kind != "grid":
            yield Finding(where, f"search: grid runs grid values only, not {space.kind}", "write grid: [...]")
        if sweep.search == "optuna" and space.kind == "grid":
            yield Finding(where, "search: optuna samples each value; it takes no grid", "write choice: [...]")
        nested = any(isinstance(value, (list, dict)) for value in space.values)
        if sweep.search == "optuna" and space.kind == "choice" and nested:
            yield Finding(
                where,
                "Optuna's choices must be single values (numbers, strings, booleans), not lists",
                "search: random, or search a single field",
            )
    from orchestrator.spec.sweep import AshaSpec

    if sweep.asha != AshaSpec() and sweep.scheduler != "asha":
        yield Finding("sweep.scheduler", "asha settings are given but scheduler is none", "scheduler: asha")
    if sweep.trial_count > 10000:
        yield Finding(
            "sweep.num_samples",
            f"the sweep would run {sweep.trial_count} trials (num_samples x grid size); at most 10000",
            "lower num_samples or shorten the grids",
        )


@check(WHOLE_SPEC)
def sweep_values_fit_the_spec(sections) -> Iterator[Finding]:
    """Each value a trial may get is applied to the spec and validated, as `--set path=value` would be."""
    from orchestrator.spec.sweep import path_problem, probe_values, problems_with_values

    parameters = sections["sweep"].parameters
    already = set(problems_with_values(sections, {})) if parameters else set()  # the spec's own
    for path, space in parameters.items():
        if path_problem(path):
            continue  # reported by sweep_paths_name_fields
        refused: dict[str, list] = {}  # label -> [(value, message, hint), ...]: one finding per label
        for label, value in probe_values(space):
            problems = [p for p in problems_with_values(sections, {path: value}) if p not in already]
            if problems:
                refused.setdefault(label, []).append((value, *problems[0]))
        for label, found in refused.items():
            value, message, hint = found[0]
            more = ""
            if len(found) > 1:
                shown = ", ".join([repr(v) for v, *_ in found[1:6]] + ["..."] * (len(found) > 6))
                more = f" (and {len(found) - 1:,} more values of the range: {shown})"
            yield Finding(f"sweep.parameters.{path}", f"{label} {value!r} is refused: {message}{more}", hint)
