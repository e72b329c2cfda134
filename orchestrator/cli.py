"""The `orchestrator` command: thin commands, each calling one library function.

    orchestrator submit configs/quickstart.yaml
    orchestrator validate configs/quickstart.yaml
    orchestrator report RUN_ID [--out DIR] [--watch]
    orchestrator sync RUN_ID
    orchestrator compare RUN_ID RUN_ID... [--out DIR]
    orchestrator ui [SPEC]

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
    from orchestrator.plan import PlanError
    from orchestrator.spec import SpecError

    try:
        return args.func(args)
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
    submit.add_argument("spec", help="path to a YAML run spec")
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
    report.add_argument(
        "--watch", action="store_true", help="keep refreshing the report until the run ends (Ctrl-C stops)"
    )
    report.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes with --watch")
    report.set_defaults(func=cmd_report)
    _tracking_commands(commands)
    return parser


def _tracking_commands(commands) -> None:
    """sync, compare, ui: the commands around MLflow."""
    uri_help = "MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)"
    sync = commands.add_parser(
        "sync",
        help="send a run's journaled metrics MLflow is missing (after an outage) and finish the run",
        epilog="example: orchestrator sync 3f2c9a...",
    )
    sync.add_argument("run_id", help="MLflow run id (printed by submit)")
    sync.add_argument("--tracking-uri", default=None, help=uri_help)
    sync.set_defaults(func=cmd_sync)

    compare = commands.add_parser(
        "compare",
        help="overlay the loss and learning-rate curves of runs and tabulate their summaries",
        epilog="example: orchestrator compare 3f2c9a... 8b1d07... --out comparison",
    )
    compare.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="two or more MLflow run ids")
    compare.add_argument(
        "--out", default="comparison", help="directory to write into (default: ./comparison)"
    )
    compare.add_argument("--tracking-uri", default=None, help=uri_help)
    compare.set_defaults(func=cmd_compare)

    ui = commands.add_parser(
        "ui",
        help="start the MLflow UI on 127.0.0.1 for the configured store",
        epilog="example: orchestrator ui configs/quickstart.yaml --port 5000",
    )
    ui.add_argument("spec", nargs="?", help="a run spec whose tracking.uri to open (default: ./mlflow.db)")
    ui.add_argument("--tracking-uri", default=None, help=uri_help)
    ui.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default: 5000)")
    ui.set_defaults(func=cmd_ui)


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
    from launchers import get_launcher
    from orchestrator.track.mlflow_run import create_run

    plan = _load_plan(args.spec)
    Path(plan.checkpoint_dir).mkdir(parents=True, exist_ok=False)
    spec_dir = Path(args.spec).resolve().parent
    plan = replace(plan, run_id=create_run(plan, Path(args.spec).read_text(), spec_dir))
    print(_describe(plan), flush=True)
    try:
        with _sigterm_as_interrupt():
            handle = get_launcher(plan.spec.cluster.backend).submit(plan)
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
    print(_where(plan, handle.state.value), flush=True)
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
