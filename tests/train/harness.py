"""Plans tiny runs and launches the real worker under torchrun (2 CPU ranks, gloo, DeepSpeed)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

from orchestrator.net import free_port
from orchestrator.plan import RunIdentity, resolve_tracking_uri
from orchestrator.spec import parse_spec
from orchestrator.track.mlflow_run import create_run
from tests.conftest import prepared_plan

ENGINE_MAIN = Path(__file__).with_name("engine_main.py")

ENGINE_SPEC = """\
name: engine
model: {{n_layers: 2, n_heads: 2, d_model: 32, context_length: 32, vocab_size: 300}}
optimizer: {{lr: 3.0e-3, weight_decay: 0.1}}
schedule: {{warmup_steps: 4, min_lr: 3.0e-4}}
train: {{epochs: 1, max_steps: {steps}, micro_batch_size: 4, log_interval: 1, eval_interval: {eval_interval},
        eval_batches: 2, peak_tflops: {peak_tflops}{train_extra}}}
deepspeed: {{zero_stage: {stage}, precision: {precision}, offload_optimizer: {offload}}}
cluster: {{num_workers: {workers}}}
checkpoint: {{interval: {interval}, keep_last: {keep_last}}}
early_stopping: {{enabled: {es_enabled}, patience: {patience}, min_delta: {min_delta}}}
tracking: {{system_metrics_interval_s: 0.5}}
"""
# A CPU has no known peak: a made-up one, so that the runs log mfu too (tests/train/test_utilisation.py).
ENGINE_PEAK_TFLOPS = 0.05


def engine_spec(**overrides) -> str:
    fields = dict(
        steps=20, eval_interval=10, train_extra="", stage=2, precision="fp32", offload="none",
        workers=2, interval=5, keep_last=2, es_enabled="false", patience=3, min_delta=0.0,
        peak_tflops=ENGINE_PEAK_TFLOPS,
    )  # fmt: skip
    fields.update(overrides)
    return ENGINE_SPEC.format(**fields)


def make_plan(work: Path, spec_text: str, run_name: str, checkpoint_uri: str | None = None):
    """A plan with its own checkpoint directory and MLflow run in `work` (a sqlite store);
    ``checkpoint_uri``: its checkpoints elsewhere (an s3:// prefix)."""
    spec = parse_spec(spec_text)
    run_dir = str(work / "checkpoints" / run_name)
    tracking = resolve_tracking_uri(spec.tracking.uri, work)
    identity = RunIdentity(run_name, run_dir, checkpoint_uri or run_dir, tracking)
    plan = prepared_plan(spec, work, identity)
    Path(plan.checkpoint_dir).mkdir(parents=True)
    return plan.with_run_id(create_run(plan))


def run_engine(
    plan, *fault_args: str, nproc: int = 2, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    command, env = engine_command(plan, *fault_args, nproc=nproc, env=env)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def engine_command(plan, *fault_args: str, nproc: int = 2, env: dict[str, str] | None = None):
    """(torchrun command, environment) that runs the worker on ``plan`` (pickled beside its run)."""
    path = Path(plan.checkpoint_dir).with_suffix(".plan.pkl")
    path.write_bytes(pickle.dumps(plan))
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        **(env or {}),
    }
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        str(ENGINE_MAIN), str(path), *fault_args,
    ]  # fmt: skip
    return command, env


def metric_history(plan, key: str) -> list[tuple[int, float]]:
    from orchestrator.track.mlflow_run import client

    rows = client(plan.tracking_uri).get_metric_history(plan.run_id, key)
    return sorted((m.step, m.value) for m in rows)


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout[-4000:] + "\n--- stderr ---\n" + result.stderr[-6000:]


# Configurations trained once per test session and shared by the engine and export tests: 20 steps,
# evaluations at 10 and 20, checkpoints every 5 (the last two and the best kept).
STAGE_RUNS = {  # name -> spec overrides
    "stage0": {"stage": 0},
    "stage1": {"stage": 1},
    "stage2": {"stage": 2},
    "stage3": {"stage": 3},
    "stage2-offload": {"stage": 2, "offload": "cpu"},
    "stage2-bf16": {"stage": 2, "precision": "bf16"},
}


class TrainedRuns:
    """``runs[name]``: the Plan of the finished run of a STAGE_RUNS configuration, trained on first use.

    Their store holds the artifacts in ``work`` too (MLflow's default artifact root for a sqlite store
    is ./mlruns in the current directory). They run with an empty ``TORCH_EXTENSIONS_DIR``, as on a
    machine's first run, so a test can check that nothing was compiled; ``results`` keeps each
    torchrun's output."""

    def __init__(self, work: Path):
        from orchestrator.track.mlflow_run import client

        self.work, self._plans = work, {}
        self.extensions_dir = work / "empty-torch-extensions"
        self.results: dict[str, subprocess.CompletedProcess] = {}
        client(f"sqlite:///{work / 'mlflow.db'}").create_experiment(
            "engine", artifact_location=str(work / "artifacts")
        )

    def __getitem__(self, name: str):
        if name not in self._plans:
            plan = make_plan(self.work, engine_spec(**STAGE_RUNS[name]), name)
            result = run_engine(plan, env={"TORCH_EXTENSIONS_DIR": str(self.extensions_dir)})
            assert result.returncode == 0, output(result)
            self._plans[name], self.results[name] = plan, result
        return self._plans[name]
