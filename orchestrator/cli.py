"""The `orchestrator` command: thin commands, each calling one library function.

    orchestrator submit configs/quickstart.yaml [--set train.epochs=1]
    orchestrator validate configs/quickstart.yaml
    orchestrator plan configs/quickstart.yaml
    orchestrator schema > run-spec.schema.json
    orchestrator report RUN_ID [--out DIR] [--watch]
    orchestrator sync RUN_ID
    orchestrator compare RUN_ID RUN_ID... [--out DIR]
    orchestrator ui [SPEC]
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
EXIT_INTERRUPTED = 130  # the shell's convention for a command ended by Ctrl-C


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
    except BrokenPipeError:  # `orchestrator plan ... | head` closed the pipe early: not an error
        sys.stderr.close()
        return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Train GPT-style models from one YAML spec on Ray + DeepSpeed, tracked in MLflow.",
        epilog="example: orchestrator submit configs/quickstart.yaml",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = _spec_command(commands, "submit", cmd_submit, "validate, plan and train a spec", "?")
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
    _spec_command(commands, "validate", cmd_validate, "check a spec and print the resolved plan")
    plan = _spec_command(commands, "plan", cmd_plan, "show everything submit would do, without doing it")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")

    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of run specs (for editors)",
        epilog="example: orchestrator schema --out schema/run-spec.schema.json",
    )
    schema.add_argument("--out", help="write to this file instead of standard output")
    schema.set_defaults(func=cmd_schema)

    report = _run_command(
        commands, "report", cmd_report, "rebuild a run's JSON, plots and summary from MLflow",
        "orchestrator report 3f2c9a... --out /tmp/report",
    )  # fmt: skip
    report.add_argument("--out", help="directory to write into (default: the run's checkpoint dir)")
    report.add_argument(
        "--watch", action="store_true", help="keep refreshing the report until the run ends (Ctrl-C stops)"
    )
    report.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes with --watch")
    _add_run_commands(commands)
    _add_generate(commands)
    _tracking_commands(commands)
    return parser


def _spec_command(
    commands, name: str, func, summary: str, nargs: str | None = None
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=f"example: orchestrator {name} configs/quickstart.yaml --set train.epochs=1",
    )
    parser.add_argument("spec", nargs=nargs, help="path to a YAML run spec")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override one spec value, validated like the file (repeatable), "
        "e.g. --set deepspeed.zero_stage=3",
    )
    parser.set_defaults(func=func)
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


TRACKING_URI_HELP = "MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)"


def _run_command(commands, name: str, func, summary: str, example: str, run_id: bool = True):
    """A subcommand about tracked runs: an optional RUN_ID argument and --tracking-uri."""
    parser = commands.add_parser(name, help=summary, description=summary, epilog=f"example: {example}")
    if run_id:
        parser.add_argument("run_id", help="MLflow run id (printed by submit)")
    parser.add_argument("--tracking-uri", default=None, help=TRACKING_URI_HELP)
    parser.set_defaults(func=func)
    return parser


def _tracking_commands(commands) -> None:
    """sync, compare, ui: the commands around MLflow."""
    _run_command(
        commands, "sync", cmd_sync,
        "send a run's journaled metrics MLflow is missing (after an outage) and finish the run",
        "orchestrator sync 3f2c9a...",
    )  # fmt: skip
    compare = _run_command(
        commands, "compare", cmd_compare,
        "overlay the loss and learning-rate curves of runs and tabulate their summaries",
        "orchestrator compare 3f2c9a... 8b1d07... --out comparison", run_id=False,
    )  # fmt: skip
    compare.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="two or more MLflow run ids")
    compare.add_argument(
        "--out", default="comparison", help="directory to write into (default: ./comparison)"
    )
    ui = _run_command(
        commands, "ui", cmd_ui, "start the MLflow UI on 127.0.0.1 for the configured store",
        "orchestrator ui configs/quickstart.yaml --port 5000", run_id=False,
    )  # fmt: skip
    ui.add_argument("spec", nargs="?", help="a run spec whose tracking.uri to open (default: ./mlflow.db)")
    ui.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default: 5000)")


def _add_run_commands(commands) -> None:
    """status / logs / cancel / list: a submitted run, found by its MLflow run id."""
    _run_command(
        commands, "status", cmd_status, "state, step, last metrics and worker health of a run",
        "orchestrator status 3f2c9a...",
    )  # fmt: skip
    logs = _run_command(
        commands, "logs", cmd_logs, "a run's output: the Ray job's log, or each worker's log",
        "orchestrator logs 3f2c9a... -f",
    )  # fmt: skip
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    _run_command(commands, "cancel", cmd_cancel, "stop a ray-job run", "orchestrator cancel 3f2c9a...")
    runs = _run_command(
        commands, "list", cmd_list, "runs in the tracking store, or this orchestrator's jobs on a cluster",
        "orchestrator list --address http://127.0.0.1:8265", run_id=False,
    )  # fmt: skip
    runs.add_argument("--address", help="a Ray dashboard URL: list the jobs there instead")


def _load_plan(args):
    from orchestrator.plan import PlanError, build_plan
    from orchestrator.spec import load_spec

    spec = load_spec(args.spec, args.overrides)
    plan = build_plan(spec, Path(args.spec).read_text())
    if spec.deepspeed.raw_config:
        from orchestrator.plan.deepspeed_config import check_with_deepspeed

        verdict = check_with_deepspeed(plan.deepspeed_config)
        if verdict:
            raise PlanError(
                f"DeepSpeed refuses deepspeed.raw_config: {verdict}; hint: fix or remove those keys"
            )
    return plan


def cmd_validate(args) -> int:
    from orchestrator.plan import NotRunnableHere, build_plan
    from orchestrator.spec import load_spec

    spec = load_spec(args.spec, args.overrides)
    try:
        plan = build_plan(spec, Path(args.spec).read_text())
    except NotRunnableHere as exc:
        # A valid spec written for other machines: show what can be known without them.
        print(f"{args.spec}: valid")
        print(spec.redact("\n".join(_spec_lines(spec))))
        print(f"note: this machine cannot run it as is: {exc}")
        return EXIT_OK
    print(f"{args.spec}: valid")
    print(spec.redact(_describe(plan)))
    return EXIT_OK


def cmd_submit(args) -> int:
    if bool(args.spec) == bool(args.resume):
        print("error: give a spec to start a run, or --resume RUN to continue one", file=sys.stderr)
        return EXIT_USAGE
    if args.resume:
        return cmd_resume(args)
    from launchers import get_launcher
    from orchestrator.track.mlflow_run import create_run

    plan = _load_plan(args)
    cluster = plan.spec.cluster
    launcher = get_launcher(cluster.backend, cluster.address)  # fails early if the cluster is unreachable
    Path(plan.checkpoint_dir).mkdir(parents=True, exist_ok=False)
    spec_dir = Path(args.spec).resolve().parent
    plan = replace(plan, run_id=create_run(plan, Path(args.spec).read_text(), spec_dir))
    print(plan.spec.redact(_describe(plan)), flush=True)
    return _run_job(args, launcher, plan)


def _run_job(args, launcher, plan) -> int:
    """Launch, then finish tracking truthfully: FINISHED, FAILED, or KILLED on Ctrl-C / SIGTERM."""
    if plan.spec.cluster.backend == "ray-job":
        return _submit_job(args, launcher, plan)
    from orchestrator.progress import live_progress

    try:
        with _sigterm_as_interrupt(), live_progress(plan.checkpoint_dir, args.progress):
            handle = launcher.submit(plan)
    except (KeyboardInterrupt, SystemExit):  # Ray Train's own Ctrl-C handler ends in sys.exit
        print("\ninterrupted: marking the MLflow run KILLED", file=sys.stderr, flush=True)
        _finish_tracking(plan, "KILLED")
        return EXIT_INTERRUPTED
    except BaseException:
        _finish_tracking(plan, "FAILED")
        raise
    tracked = _finish_tracking(plan, handle.state.mlflow_status)
    if handle.error:
        print(f"\nerror: the job failed: {handle.error}", file=sys.stderr)
    if handle.post_mortem:
        print(f"post-mortem {handle.post_mortem}", file=sys.stderr)
    print(plan.spec.redact(_where(plan, handle.state.value)), flush=True)
    return EXIT_OK if handle.state.value == "SUCCEEDED" and tracked else EXIT_FAILED


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """A job stopped by SIGTERM (kill, a scheduler) ends like Ctrl-C: its run is marked KILLED."""
    import signal

    def _interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_plan(args) -> int:
    import json

    from orchestrator.plan import plan_as_dict

    plan = _load_plan(args)
    if args.json:
        text = json.dumps(plan_as_dict(plan), indent=2)
    else:
        steps = "\n".join(f"  - {step}" for step in _submit_steps(plan))
        config = json.dumps(plan.deepspeed_config, indent=2)
        text = f"{_describe(plan)}\n\nsubmit would:\n{steps}\n\nDeepSpeed config:\n{config}"
    print(plan.spec.redact(text))
    return EXIT_OK


def _submit_steps(plan) -> list[str]:
    cluster = plan.spec.cluster
    return [
        f"create {plan.checkpoint_dir}",
        f"create MLflow run {plan.run_name!r} in experiment {plan.experiment_name!r} at {plan.tracking_uri}",
        f"{_where_ray_runs(cluster)}, with a group of {cluster.num_workers} workers "
        f"({cluster.cpus_per_worker:g} CPU, {cluster.gpus_per_worker:g} GPU each, "
        f"{cluster.placement_strategy}, up to {cluster.max_failures} restarts)",
        f"train {plan.total_steps} steps with DeepSpeed ZeRO-{plan.spec.deepspeed.zero_stage}, "
        f"logging every {plan.spec.train.log_interval} and evaluating every {plan.spec.train.eval_interval}",
        f"write training_metrics.json, training_curve.png, loss_by_epoch.png into {plan.checkpoint_dir}",
    ]


def _where_ray_runs(cluster) -> str:
    if cluster.backend == "ray-job":
        return f"submit a Ray job through the Jobs API at {cluster.address}"
    if cluster.address:
        return f"run Ray Train on the running cluster at {cluster.address}"
    return f"start an embedded Ray on {cluster.host}"


def cmd_schema(args) -> int:
    import json

    from orchestrator.spec import run_spec_schema

    text = json.dumps(run_spec_schema(), indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")
    return EXIT_OK


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
    return _run_job(args, launcher, plan)


def _finish_tracking(plan, status: str) -> bool:
    """Deliver the journal, upload the report, set the status; on failure say how to finish later."""
    from orchestrator.track.finish import finish_run

    try:
        finish_run(plan.tracking_uri, plan.run_id, status, plan.checkpoint_dir)
        return True
    except Exception as exc:
        print(
            f"warning: could not finish the MLflow run at {plan.tracking_uri} ({_first_line(exc)}); "
            f"its metrics are safe in {plan.checkpoint_dir}/metrics.journal.jsonl: run "
            f"`orchestrator sync {plan.run_id}` when MLflow is reachable",
            file=sys.stderr,
            flush=True,
        )
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


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
    from orchestrator.track.finish import finish_run

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
    from orchestrator.report.summary import render_summary
    from orchestrator.report.watch import watch_report

    uri = _tracking_uri(args)
    if args.watch:
        return watch_report(uri, args.run_id, args.out, args.interval)
    from orchestrator.report import build_report

    paths, summary = build_report(uri, args.run_id, args.out)
    for path in paths:
        print(path)
    print()
    print(render_summary(summary, f"run {args.run_id}"))
    return EXIT_OK


def cmd_sync(args) -> int:
    from orchestrator.track.finish import sync_run

    result = sync_run(_tracking_uri(args), args.run_id)
    if result.replay is None:
        print(f"run {args.run_id}: no journal found; nothing to replay")
    else:
        r = result.replay
        print(
            f"run {args.run_id}: journal {r.journal_points} points, {r.already_in_mlflow} already in "
            f"MLflow, {r.sent} sent"
        )
    print(f"status     {result.status}")
    return EXIT_OK


def cmd_compare(args) -> int:
    from orchestrator.report.compare import compare_runs

    if len(args.run_ids) < 2:
        print("error: compare needs at least two run ids", file=sys.stderr)
        return EXIT_USAGE
    paths, table = compare_runs(_tracking_uri(args), args.run_ids, args.out)
    print(table)
    print()
    for path in paths:
        print(path)
    return EXIT_OK


def cmd_ui(args) -> int:
    from orchestrator.track.ui import ui_command

    uri = args.tracking_uri or (_load_spec_tracking_uri(args.spec) if args.spec else None)
    command, url = ui_command(_tracking_uri(argparse.Namespace(tracking_uri=uri)), args.port)
    if command is None:
        print(f"the tracking store is a server already: open {url}")
        return EXIT_OK
    print(f"MLflow UI on {url} (Ctrl-C stops it)", flush=True)
    from orchestrator.track.mlflow_run import quiet_mlflow_env

    os.execve(command[0], command, {**os.environ, **quiet_mlflow_env()})


def _load_spec_tracking_uri(spec_path: str) -> str | None:
    from orchestrator.plan.plan import resolve_tracking_uri
    from orchestrator.spec import load_spec

    spec = load_spec(spec_path)
    return resolve_tracking_uri(spec.tracking.uri, Path.cwd())  # as submit resolves it


def _spec_lines(spec) -> list[str]:
    """What a spec alone determines: hardware, engine, model, batch and the memory plan."""
    from orchestrator.plan.memory import estimate_memory

    cluster, train, model = spec.cluster, spec.train, spec.model
    batch = train.micro_batch_size * train.gradient_accumulation_steps * cluster.num_workers
    memory = estimate_memory(spec, cluster.num_workers)
    return [
        f"backend    {cluster.backend}, {cluster.num_workers} workers x "
        f"{cluster.cpus_per_worker:g} CPU / {cluster.gpus_per_worker:g} GPU",
        f"deepspeed  ZeRO stage {spec.deepspeed.zero_stage}, {spec.deepspeed.precision}",
        f"model      {model.n_layers} layers, d_model {model.d_model}, {model.n_heads} heads, "
        f"context {model.context_length}, vocab {model.vocab_size}",
        f"batch      global {batch} sequences = {batch * model.context_length:,} tokens/step",
        f"memory     {memory.describe()}",
    ]


def _describe(plan) -> str:
    spec = plan.spec
    memory = [f"memory     {plan.memory.describe()}"] if plan.memory else []
    return "\n".join(
        [
            f"run        {plan.run_name}" + (f" (MLflow run {plan.run_id})" if plan.run_id else ""),
            *_spec_lines(spec)[:3],
            f"data       {spec.data.corpus}: {plan.data.n_tokens:,} tokens, "
            f"{plan.data.train_blocks} train / {plan.data.val_blocks} validation sequences",
            f"batch      global {plan.global_batch_size} sequences = {plan.tokens_per_step:,} tokens/step",
            f"steps      {plan.total_steps} ({plan.steps_per_epoch}/epoch, "
            f"{spec.train.epochs} epoch(s){'' if spec.train.max_steps is None else ', capped'})",
            f"artifacts  {plan.checkpoint_dir}",
            f"tracking   {plan.tracking_uri} (experiment {plan.experiment_name})",
            *memory,
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
