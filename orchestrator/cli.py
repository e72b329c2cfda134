"""The `orchestrator` command: thin commands, each calling one library function.

    orchestrator submit configs/quickstart.yaml
    orchestrator validate configs/quickstart.yaml
    orchestrator report RUN_ID [--out DIR]
    orchestrator status RUN_ID          # state, step, last metrics, worker health (any backend)
    orchestrator logs RUN_ID [-f]       # the job's output (ray-job) or the workers' logs
    orchestrator cancel RUN_ID          # stop a ray-job run
    orchestrator list [--address URL]   # runs in the tracking store, or jobs on a cluster

Exit codes: 0 success, 1 the job or a lookup failed, 2 the input (spec or arguments) is wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from launchers.base import LauncherError
    from orchestrator.plan import PlanError
    from orchestrator.spec import SpecError

    try:
        return args.func(args)
    except LauncherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except SpecError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_USAGE
    except PlanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LookupError as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Train GPT-style models from one YAML spec on Ray + DeepSpeed, tracked in MLflow.",
        epilog="example: orchestrator submit configs/quickstart.yaml",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser(
        "submit",
        help="validate, plan and train a spec",
        epilog="example: orchestrator submit configs/quickstart.yaml",
    )
    submit.add_argument("spec", nargs="?", help="path to a YAML run spec")
    submit.add_argument(
        "--resume",
        metavar="RUN",
        help="continue a run (MLflow run id or run name) from its latest complete checkpoint",
    )
    submit.add_argument(
        "--tracking-uri", default=None, help="with --resume: where the run is tracked (default: ./mlflow.db)"
    )
    submit.add_argument(
        "--detach", action="store_true", help="ray-job: return once the cluster accepted the job"
    )
    submit.add_argument(
        "--progress",
        choices=("auto", "bar", "off"),
        default="auto",
        help="progress bar on stderr: auto (only on a terminal), bar (always), off",
    )
    submit.set_defaults(func=cmd_submit)

    validate = commands.add_parser(
        "validate",
        help="check a spec and print the resolved plan",
        epilog="example: orchestrator validate configs/quickstart.yaml",
    )
    validate.add_argument("spec", help="path to a YAML run spec")
    validate.set_defaults(func=cmd_validate)

    report = commands.add_parser(
        "report",
        help="rebuild a run's JSON and plots from MLflow",
        epilog="example: orchestrator report 3f2c9a... --out /tmp/report",
    )
    report.add_argument("run_id", help="MLflow run id (printed by submit)")
    report.add_argument("--out", help="directory to write into (default: the run's checkpoint dir)")
    report.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)",
    )
    report.set_defaults(func=cmd_report)
    _add_run_commands(commands)
    _add_generate(commands)
    return parser


def _add_generate(commands) -> None:
    generate = commands.add_parser(
        "generate",
        help="sample text from a run's best (or latest) checkpoint",
        epilog='example: orchestrator generate quickstart-20250101-120000 --prompt "The for" --seed 0',
    )
    generate.add_argument("run", help="MLflow run id or run name")
    generate.add_argument("--prompt", required=True)
    generate.add_argument("--max-new-tokens", type=_positive_int, default=100)
    generate.add_argument("--temperature", type=_non_negative_float, default=0.8, help="0 means greedy")
    generate.add_argument("--top-k", type=_positive_int, default=50)
    generate.add_argument("--seed", type=int, default=None, help="same seed, same text")
    generate.add_argument("--checkpoint", choices=["best", "latest"], default="best")
    generate.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI or ./mlflow.db")
    generate.set_defaults(func=cmd_generate)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _add_run_commands(commands) -> None:
    """status / logs / cancel / list: a submitted run, found by its MLflow run id."""
    tracking = {"default": None, "help": "MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)"}
    status = commands.add_parser(
        "status",
        help="state, step, last metrics and worker health of a run",
        epilog="example: orchestrator status 3f2c9a...",
    )
    status.add_argument("run_id", help="MLflow run id (printed by submit)")
    status.add_argument("--tracking-uri", **tracking)
    status.set_defaults(func=cmd_status)
    logs = commands.add_parser(
        "logs",
        help="a run's output: the Ray job's log, or each worker's log",
        epilog="example: orchestrator logs 3f2c9a... -f",
    )
    logs.add_argument("run_id", help="MLflow run id (printed by submit)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    logs.add_argument("--tracking-uri", **tracking)
    logs.set_defaults(func=cmd_logs)
    cancel = commands.add_parser(
        "cancel", help="stop a ray-job run", epilog="example: orchestrator cancel 3f2c9a..."
    )
    cancel.add_argument("run_id", help="MLflow run id (printed by submit)")
    cancel.add_argument("--tracking-uri", **tracking)
    cancel.set_defaults(func=cmd_cancel)
    runs = commands.add_parser(
        "list",
        help="runs in the tracking store, or this orchestrator's jobs on a cluster",
        epilog="example: orchestrator list --address http://127.0.0.1:8265",
    )
    runs.add_argument("--address", help="a Ray dashboard URL: list the jobs there instead")
    runs.add_argument("--tracking-uri", **tracking)
    runs.set_defaults(func=cmd_list)


def _load_plan(spec_path: str):
    from orchestrator.plan import build_plan
    from orchestrator.spec import load_spec

    spec = load_spec(spec_path)
    return build_plan(spec, Path(spec_path).read_text())


def cmd_validate(args) -> int:
    plan = _load_plan(args.spec)
    print(f"{args.spec}: valid")
    print(_describe(plan))
    return EXIT_OK


def cmd_submit(args) -> int:
    if bool(args.spec) == bool(args.resume):
        print("error: give a spec to start a run, or --resume RUN to continue one", file=sys.stderr)
        return EXIT_USAGE
    if args.resume:
        return cmd_resume(args)
    from launchers import get_launcher
    from orchestrator.track.mlflow_run import create_run

    plan = _load_plan(args.spec)
    cluster = plan.spec.cluster
    launcher = get_launcher(cluster.backend, cluster.address)  # fails early if the cluster is unreachable
    Path(plan.checkpoint_dir).mkdir(parents=True, exist_ok=False)
    plan = replace(plan, run_id=create_run(plan, Path(args.spec).read_text()))
    print(_describe(plan), flush=True)
    if cluster.backend == "ray-job":
        return _submit_job(args, launcher, plan)
    from orchestrator.progress import live_progress

    with live_progress(plan.checkpoint_dir, args.progress):
        handle = launcher.submit(plan)
    return _finish(plan, handle)


def _finish(plan, handle) -> int:
    from orchestrator.track.mlflow_run import finish_run

    finish_run(plan.tracking_uri, plan.run_id, handle.state.mlflow_status, plan.checkpoint_dir)
    if handle.error:
        print(f"\nerror: the job failed: {handle.error}", file=sys.stderr)
    if handle.post_mortem:
        print(f"post-mortem {handle.post_mortem}", file=sys.stderr)
    print(_where(plan, handle.state.value), flush=True)
    return EXIT_OK if handle.state.value == "SUCCEEDED" else EXIT_FAILED


def _submit_job(args, launcher, plan) -> int:
    """ray-job: the job's driver finishes the MLflow run; here we only follow it (or not)."""
    from launchers.runs import tag_job

    handle = launcher.submit(plan)
    tag_job(plan.tracking_uri, plan.run_id, handle, plan.spec.cluster.address)
    print(f"\njob        {handle.job_id} on {plan.spec.cluster.address} ({handle.state.value})", flush=True)
    if args.detach:
        print(f"follow     orchestrator logs {plan.run_id} -f\nstatus     orchestrator status {plan.run_id}")
        return EXIT_OK
    for line in launcher.logs(handle.job_id, follow=True):
        print(line, end="", flush=True)
    handle = launcher.status(handle.job_id)
    if handle.error:
        print(f"\nerror: the job failed: {handle.error}", file=sys.stderr)
    print(_where(plan, handle.state.value), flush=True)
    return EXIT_OK if handle.state.value == "SUCCEEDED" else EXIT_FAILED


def cmd_resume(args) -> int:
    """`submit --resume RUN`: the same MLflow run and checkpoint directory; the worker restores the
    latest complete checkpoint and the learning-rate schedule continues where it stopped."""
    from launchers import get_launcher
    from orchestrator.plan.resume import plan_for_resume
    from orchestrator.track.mlflow_run import client
    from orchestrator.train.checkpoint import latest_complete_checkpoint

    plan, _ = plan_for_resume(args.resume, _tracking_uri(args))
    checkpoint = latest_complete_checkpoint(plan.checkpoint_dir)
    if checkpoint is None:
        print(
            f"error: run {plan.run_name} has no complete checkpoint in {plan.checkpoint_dir} to resume "
            "from\n    hint: submit the spec again as a new run, with checkpoint.interval set",
            file=sys.stderr,
        )
        return EXIT_FAILED
    client(plan.tracking_uri).update_run(plan.run_id, status="RUNNING")
    print(_describe(plan), flush=True)
    print(f"resume     from {checkpoint.path} (step {checkpoint.step} of {plan.total_steps})", flush=True)
    launcher = get_launcher(plan.spec.cluster.backend, plan.spec.cluster.address)
    if plan.spec.cluster.backend == "ray-job":
        return _submit_job(args, launcher, plan)
    from orchestrator.progress import live_progress

    with live_progress(plan.checkpoint_dir, args.progress):
        handle = launcher.submit(plan)
    return _finish(plan, handle)


def _tracking_uri(args) -> str:
    from orchestrator.plan.plan import resolve_tracking_uri

    return resolve_tracking_uri(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"), Path.cwd())


def cmd_status(args) -> int:
    from launchers.base import LauncherError
    from launchers.runs import describe_status, find_run, mlflow_state, run_state

    record = find_run(_tracking_uri(args), args.run_id)
    try:
        state = run_state(record)
    except LauncherError as exc:  # the cluster is gone or refuses us: say so, show what MLflow knows
        print(f"warning: {exc}; the state below is MLflow's", file=sys.stderr)
        state = mlflow_state(record)
    print(describe_status(record, state))
    return EXIT_OK


def cmd_logs(args) -> int:
    from launchers.runs import find_run, follow_worker_logs

    record = find_run(_tracking_uri(args), args.run_id)
    if record.job_id:
        lines = record.launcher().logs(record.job_id, follow=args.follow)
    else:
        lines = follow_worker_logs(record, follow=args.follow)
    for line in lines:
        print(line, end="", flush=True)
    return EXIT_OK


def cmd_cancel(args) -> int:
    from launchers.runs import find_run
    from orchestrator.track.mlflow_run import finish_run

    record = find_run(_tracking_uri(args), args.run_id)
    handle = record.launcher().cancel(record.job_id)
    if handle.state.value == "STOPPED":
        # The job's driver was killed before it could finish its MLflow run.
        finish_run(record.tracking_uri, record.run_id, handle.state.mlflow_status, None)
    print(f"run {record.run_id}: {handle.state.value}")
    return EXIT_OK if handle.state.value == "STOPPED" else EXIT_FAILED


def cmd_list(args) -> int:
    from launchers import get_launcher
    from launchers.base import LauncherError
    from launchers.runs import describe_list_row, list_runs, mlflow_state, run_state

    if args.address:
        for handle in get_launcher("ray-job", args.address).list():
            print(f"{handle.run_id}  {handle.state.value:<9}  {handle.job_id}")
        return EXIT_OK
    for record in list_runs(_tracking_uri(args)):
        try:
            state = run_state(record)
        except LauncherError:  # its cluster is gone: MLflow's word is the last one
            state = mlflow_state(record)
        print(describe_list_row(record, state))
    return EXIT_OK


def cmd_generate(args) -> int:
    from orchestrator.generate import Sampling, generate_from_run

    sampling = Sampling(args.max_new_tokens, args.temperature, args.top_k, args.seed)
    print(generate_from_run(args.run, _tracking_uri(args), args.prompt, sampling, args.checkpoint))
    return EXIT_OK


def cmd_report(args) -> int:
    from orchestrator.plan.plan import resolve_tracking_uri
    from orchestrator.report import rebuild_report

    uri = resolve_tracking_uri(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"), Path.cwd())
    for path in rebuild_report(uri, args.run_id, args.out):
        print(path)
    return EXIT_OK


def _describe(plan) -> str:
    spec = plan.spec
    return "\n".join(
        [
            f"run        {plan.run_name}" + (f" (MLflow run {plan.run_id})" if plan.run_id else ""),
            f"backend    {spec.cluster.backend}, {plan.world_size} workers x "
            f"{spec.cluster.cpus_per_worker:g} CPU / {spec.cluster.gpus_per_worker:g} GPU",
            f"deepspeed  ZeRO stage {spec.deepspeed.zero_stage}, {spec.deepspeed.precision}",
            f"model      {spec.model.n_layers} layers, d_model {spec.model.d_model}, "
            f"{spec.model.n_heads} heads, context {spec.model.context_length}, "
            f"vocab {spec.model.vocab_size}",
            f"data       {spec.data.corpus}: {plan.data.n_tokens:,} tokens, "
            f"{plan.data.train_blocks} train / {plan.data.val_blocks} validation sequences",
            f"batch      global {plan.global_batch_size} sequences = {plan.tokens_per_step:,} tokens/step",
            f"steps      {plan.total_steps} ({plan.steps_per_epoch}/epoch, "
            f"{spec.train.epochs} epoch(s){'' if spec.train.max_steps is None else ', capped'})",
            f"artifacts  {plan.checkpoint_dir}",
            f"tracking   {plan.tracking_uri} (experiment {plan.experiment_name})",
            *([f"memory     {plan.memory.describe()}"] if plan.memory else []),
        ]
    )


def _where(plan, state: str) -> str:
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    with contextlib.suppress(ValueError):  # show a short relative path when there is one
        mlflow_bin = mlflow_bin.relative_to(Path.cwd())
    ui = f"{mlflow_bin} ui --backend-store-uri {shlex.quote(plan.tracking_uri)} --host 127.0.0.1 --port 5000"
    return "\n".join(
        [
            "",
            f"state      {state}",
            f"run id     {plan.run_id}",
            f"artifacts  {plan.checkpoint_dir}",
            "           training_metrics.json  training_curve.png  loss_by_epoch.png",
            f"rebuild    orchestrator report {plan.run_id}",
            f"MLflow UI  {ui}",
            "           then open http://127.0.0.1:5000",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
