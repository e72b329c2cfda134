"""The `orchestrator` command: argument parsing (``orchestrator.cli_parser``) and printing. Each command
calls the library (mostly ``orchestrator.lifecycle``) and shows what came back.

    orchestrator submit configs/quickstart.yaml [--set train.epochs=1]
    orchestrator submit --resume RUN [--set train.eval_interval=50]
    orchestrator validate | plan SPEC          orchestrator schema > run-spec.schema.json
    orchestrator report RUN [--out DIR] [--watch]      orchestrator sync RUN
    orchestrator compare RUN RUN... [--out DIR]        orchestrator ui [SPEC]
    orchestrator status | logs [-f] | cancel RUN       orchestrator list [--address URL]
    orchestrator generate RUN --prompt TEXT
    orchestrator sweep configs/sweep-lr.yaml           orchestrator sweep --resume SWEEP_RUN

Exit codes: 0 success, 1 the job or a lookup failed, 2 the input (spec or arguments) is wrong,
130 interrupted (Ctrl-C or SIGTERM; the run is marked KILLED and can be resumed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from orchestrator.cli_parser import build_parser
from orchestrator.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, OrchestratorError
from orchestrator.interrupts import forget_handled_interrupts
from orchestrator.masking import mask_uri_passwords
from orchestrator.text import PrintableStream

log = logging.getLogger("orchestrator")


def main(argv: list[str] | None = None) -> int:
    # Names, logs and errors come from files, MLflow and clusters: none of it may drive the terminal.
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PrintableStream(sys.stdout), PrintableStream(sys.stderr)
    try:
        return _run(argv)
    except KeyboardInterrupt:  # a second Ctrl-C while the first one's clean-up ran: still no traceback
        return EXIT_INTERRUPTED
    finally:
        sys.stdout, sys.stderr = saved
        forget_handled_interrupts()  # every Ctrl-C was handled above: the exit code is main's


def _run(argv: list[str] | None) -> int:
    args = build_parser(sys.modules[__name__]).parse_args(argv)
    _configure_logging(args.verbose - args.quiet)
    try:
        return args.func(args)
    except OrchestratorError as exc:
        print(mask_uri_passwords(exc.render()), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C (or SIGTERM) where no command handles it itself
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `orchestrator plan ... | head` closed the pipe early: not an error
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:  # a store error a command did not name itself: still no traceback
        from orchestrator.track.runs import is_store_error, store_failure

        if not is_store_error(exc, http=False):  # an HTTP error here may be a cluster's, not MLflow's
            raise
        error = store_failure(exc)
        print(error.render(), file=sys.stderr)
        return error.exit_code


class _Levelled(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = mask_uri_passwords(super().format(record))
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def _configure_logging(verbosity: int) -> None:
    """The library logs; the user sees INFO and up (-q: warnings only, -v: debug)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Levelled("%(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel({-1: logging.WARNING, 0: logging.INFO}.get(max(-1, verbosity), logging.DEBUG))


def _tracking_uri(explicit: str | None) -> str:
    """The existing store a command reads: ``--tracking-uri`` (references resolved), else
    MLFLOW_TRACKING_URI, else ./mlflow.db. A sqlite store that does not exist is an error: a
    command that reads a store never creates one."""
    from orchestrator.plan import tracking_uri_here
    from orchestrator.spec import resolve_references
    from orchestrator.track.runs import require_store

    # Commands this tool prints name a store with `${env:...}` references in place of its secrets.
    uri = tracking_uri_here(resolve_references(explicit) if explicit else None)
    require_store(uri)
    return uri


# --- specs -------------------------------------------------------------------------------------


def cmd_validate(args) -> int:
    from orchestrator.lifecycle import plan_run
    from orchestrator.plan import NotRunnableHere
    from orchestrator.plan.describe import describe_spec
    from orchestrator.spec import load_spec

    spec = load_spec(args.spec, args.overrides)
    print(f"{args.spec}: valid")
    try:
        plan = plan_run(spec)
        if spec.sweep.enabled:
            from orchestrator.sweep import check_grace_period

            check_grace_period(plan)
        print(plan.describe())
    except NotRunnableHere as exc:  # a valid spec written for other machines
        print(spec.redact(describe_spec(spec)))
        print(spec.redact(f"note: this machine cannot run it as is: {exc}"))
        return EXIT_OK
    if spec.sweep.enabled:
        from orchestrator.sweep import describe_sweep

        print(describe_sweep(plan))
    return EXIT_OK


def cmd_plan(args) -> int:
    from orchestrator.lifecycle import plan_run
    from orchestrator.plan import plan_as_dict
    from orchestrator.plan.describe import describe_submit
    from orchestrator.spec import load_spec

    plan = plan_run(load_spec(args.spec, args.overrides))
    if args.json:  # masked before serialising: JSON escapes would hide a secret from a text search
        print(json.dumps(plan.spec.redact_data(plan_as_dict(plan)), indent=2))
    else:
        print(describe_submit(plan))
    return EXIT_OK


def cmd_k8s_render(args) -> int:
    """The RayJob and run-ticket ConfigMap `submit` would create for the kubernetes backend."""
    from launchers.kubernetes import load_for_kubernetes
    from launchers.kubernetes.render import preview_identity, render_job
    from launchers.kubernetes.validate import check_manifests

    spec, notes = load_for_kubernetes(args.spec, args.overrides)
    rendered = render_job(spec, preview_identity(spec, spec.resolved_text()), strict=False)
    check_manifests(rendered.documents())
    for note in [*notes, *rendered.notes]:
        print(spec.redact(f"note: {note}"), file=sys.stderr)
    print(rendered.to_yaml(), end="")
    return EXIT_OK


def cmd_schema(args) -> int:
    from orchestrator.fsutil import write_output_file
    from orchestrator.spec import run_spec_schema

    text = json.dumps(run_spec_schema(), indent=2) + "\n"
    if args.out:
        write_output_file(args.out, text)
    else:
        print(text, end="")
    return EXIT_OK


# --- runs --------------------------------------------------------------------------------------


def cmd_submit(args) -> int:
    from launchers import launcher_for_spec
    from orchestrator import lifecycle
    from orchestrator.spec import load_spec

    if bool(args.spec) == bool(args.resume):
        print("error: give a spec to start a run, or --resume RUN to continue one", file=sys.stderr)
        return EXIT_USAGE
    if args.resume:
        resumed = lifecycle.resume_run(args.resume, _tracking_uri(args.tracking_uri), args.overrides)
        plan, launcher = resumed.plan, launcher_for_spec(resumed.plan.spec)
        print(plan.describe(), flush=True)
        applied = f", with {' '.join(resumed.overrides)}" if resumed.overrides else ""
        print(
            f"resume     from {resumed.checkpoint.location} (step {resumed.checkpoint.step}{applied})",
            flush=True,
        )
    else:
        spec = load_spec(args.spec, args.overrides)
        lifecycle.plan_run(spec, data=lifecycle.known_data(spec))  # every check before any work
        if spec.sweep.enabled:
            log.info("note: submit trains the spec's values; `orchestrator sweep %s` sweeps", args.spec)
        launcher = launcher_for_spec(spec)  # fails early if the cluster is unreachable
        plan = lifecycle.plan_run(spec, data=_prepared(spec, launcher))
        plan = lifecycle.start_run(plan, Path(args.spec).resolve().parent)
        print(plan.describe(), flush=True)
    if launcher.detached:
        return _follow_job(args, plan, launcher, lifecycle.submit_detached(plan, launcher))
    return _run_in_foreground(args, plan, launcher)


def _prepared(spec, launcher):
    """The run's data, prepared first where the launcher says when it is missing or stale."""
    from orchestrator import lifecycle
    from orchestrator.lifecycle.data import require_reachable_data

    if not launcher.prepares_here(spec):
        return lifecycle.known_data(spec)  # prepared where the job runs: here an estimate, said so
    require_reachable_data(spec)
    with launcher.piece_runner(spec) as runner:
        return lifecycle.prepare_data(spec, runner=runner, say=_say)


def _say(line: str) -> None:
    print(line, flush=True)


def cmd_prepare(args) -> int:
    from launchers import launcher_for_spec
    from orchestrator.spec import load_spec

    spec = load_spec(args.spec, args.overrides)
    data = _prepared(spec, launcher_for_spec(spec))
    print(
        f"prepared   {data.dataset_uri}: {data.n_documents:,} documents, {data.n_tokens:,} tokens in "
        f"{data.n_shards} shards; manifest {data.manifest_digest[:16]}"
    )
    print(
        f"           at context {spec.model.context_length}: {data.train_samples:,} training and "
        f"{data.val_samples:,} validation sequences"
    )
    return EXIT_OK


def _run_in_foreground(args, plan, launcher) -> int:
    from orchestrator.lifecycle import execute, resume_command
    from orchestrator.progress import live_progress

    with live_progress(plan.checkpoint_dir, args.progress):
        outcome = execute(plan, launcher)
    if outcome.error and not outcome.interrupted:
        print(f"\nerror: the job failed: {outcome.error}", file=sys.stderr)
    if outcome.post_mortem:
        print(f"post-mortem {outcome.post_mortem}", file=sys.stderr)
    if outcome.interrupted:
        print(
            f"run {plan.run_name} (MLflow run {plan.run_id}) was interrupted and marked KILLED",
            file=sys.stderr,
        )
        print(_how_to_continue(args, plan, resume_command(plan)), file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    if not outcome.tracked:
        print(_tracking_incomplete(plan, outcome), file=sys.stderr, flush=True)
        return EXIT_FAILED
    print(_where(plan, outcome.state.value), flush=True)
    return EXIT_OK if outcome.succeeded else EXIT_FAILED


def _tracking_incomplete(plan, outcome) -> str:
    """The job ended, MLflow could not be told: what happened, and the command that finishes it."""
    from orchestrator.lifecycle.run import sync_command
    from orchestrator.track.runs import FINAL_STATUS_FILE, JobState

    done = "trained" if outcome.state is JobState.SUCCEEDED else f"ended {outcome.state.value}"
    lines = [
        "",
        f"state      {outcome.state.value}: {done}; tracking incomplete (MLflow could not be reached to "
        "finish the run, which it still shows as RUNNING)",
        f"run id     {plan.run_id} ({plan.run_name})",
        f"artifacts  {plan.checkpoint_dir}",
        f"kept       {plan.checkpoint_dir}/{FINAL_STATUS_FILE} and metrics.journal.jsonl",
        f"sync       {sync_command(plan)}   (when MLflow is reachable: sends the rest, sets the status)",
    ]
    return plan.spec.redact("\n".join(lines))


def _how_to_continue(args, plan, resume: str) -> str:
    """The resume command, when the run saved a checkpoint to resume from; else how to start over."""
    from orchestrator.train.checkpoint import latest_complete_checkpoint

    if latest_complete_checkpoint(plan.checkpoint_store()) is not None:
        return f"continue   {resume}"
    again = f"orchestrator submit {args.spec}" if args.spec else resume
    return f"no checkpoint was saved, so there is nothing to resume; start again: {again}"


def _follow_job(args, plan, launcher, handle) -> int:
    """Detached backends: the job's own driver finishes the run; here we only follow it (or not)."""
    from orchestrator import lifecycle

    print(f"\njob        {handle.job_id} on {launcher.name} ({handle.state.value})", flush=True)
    if args.detach:
        print(f"follow     orchestrator logs {plan.run_id} -f\nstatus     orchestrator status {plan.run_id}")
        return EXIT_OK
    try:
        for line in launcher.logs(handle.job_id, follow=True):
            print(line, end="", flush=True)
    except KeyboardInterrupt:
        print(f"\nstopped following; the job goes on: orchestrator cancel {plan.run_id}", file=sys.stderr)
        return EXIT_INTERRUPTED
    handle = launcher.status(handle.job_id)
    lifecycle.settle_detached(plan, handle)
    if handle.error:
        print(f"\nerror: the job failed: {handle.error}", file=sys.stderr)
    print(_where(plan, handle.state.value), flush=True)
    return EXIT_OK if handle.state.value == "SUCCEEDED" else EXIT_FAILED


def _where(plan, state: str) -> str:
    from orchestrator.track.ui import ui_hint

    lines = [
        "",
        f"state      {state}",
        f"run id     {plan.run_id}",
        f"artifacts  {plan.checkpoint_dir}",
        "           training_metrics.json  training_curve.png  loss_by_epoch.png",
        f"rebuild    orchestrator report {plan.run_id}",
        *ui_hint(plan.tracking_uri, plan.run_id, shown_uri=plan.spec.with_references(plan.tracking_uri)),
    ]
    return plan.spec.redact("\n".join(lines))


def cmd_sweep(args) -> int:
    from orchestrator import sweep
    from orchestrator.progress import SweepTablePrinter
    from orchestrator.spec import load_spec

    if bool(args.spec) == bool(args.resume):
        print("error: give a spec to start a sweep, or --resume RUN to continue one", file=sys.stderr)
        return EXIT_USAGE
    if args.resume and args.overrides:
        print("error: a resumed sweep keeps its stored spec; --set cannot change it", file=sys.stderr)
        return EXIT_USAGE
    if args.resume:
        plan = sweep.reopen_sweep(args.resume, _tracking_uri(args.tracking_uri))
        print(
            sweep.describe_sweep(plan) + "\nresume     Ray Tune's experiment in the directory\n", flush=True
        )
        outcome = sweep.resume_sweep(plan, SweepTablePrinter(sys.stdout, args.table))
    else:
        spec = load_spec(args.spec, args.overrides)
        from launchers import launcher_for_spec

        sweep.check_sweepable(spec)  # before a backend is reached for the data
        with launcher_for_spec(spec).piece_runner(spec) as runner:
            plan = sweep.start_sweep(spec, Path(args.spec).resolve().parent, runner=runner)
        print(sweep.describe_sweep(plan) + "\n", flush=True)
        outcome = sweep.run_sweep(plan, SweepTablePrinter(sys.stdout, args.table))
    return _sweep_ended(outcome)


def _sweep_ended(outcome) -> int:
    from orchestrator.sweep import resume_command
    from orchestrator.track.runs import FINISHED_STATUS
    from orchestrator.track.ui import ui_hint

    plan = outcome.plan
    print(f"\n{outcome.table}\n" if outcome.table else "\nno trial started")
    if outcome.interrupted:
        print(
            f"sweep {plan.run_name} (MLflow run {plan.run_id}) was interrupted; its unfinished trials "
            "are marked KILLED",
            file=sys.stderr,
        )
        print(f"continue   {resume_command(plan)}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    lines = [f"state      {outcome.status} ({len(outcome.trials)} trial runs)", f"sweep run  {plan.run_id}"]
    if outcome.best is not None:
        best, metric = outcome.best, plan.spec.sweep.metric
        lines += [
            f"best       {best.run_name} ({metric} {best.final:.4f} at step {best.final_step})",
            f"best spec  {plan.checkpoint_dir}/best_spec.yaml  (orchestrator submit it to train the winner)",
        ]
    lines += [
        f"report     {plan.checkpoint_dir}",
        f"rebuild    orchestrator report {plan.run_id}",
        *ui_hint(plan.tracking_uri, plan.run_id),
    ]
    print(plan.spec.redact("\n".join(lines)), flush=True)
    return EXIT_OK if outcome.status == FINISHED_STATUS else EXIT_FAILED


def cmd_status(args) -> int:
    from launchers import launcher_for_record
    from orchestrator.lifecycle.status import describe_status
    from orchestrator.track.runs import find_record

    record = find_record(_tracking_uri(args.tracking_uri), args.run_id)
    state, job = record.state, None
    if record.job_id:
        try:
            job = launcher_for_record(record).status(record.job_id)
            state = job.state
        except OrchestratorError as exc:  # the cluster is gone or refuses us: say so, show MLflow's
            print(f"warning: {exc}; the state below is MLflow's", file=sys.stderr)
    print(describe_status(record, state, job))
    return EXIT_OK


def cmd_logs(args) -> int:
    from launchers import launcher_for_record
    from orchestrator.lifecycle.status import follow_worker_logs
    from orchestrator.track.runs import find_record

    record = find_record(_tracking_uri(args.tracking_uri), args.run_id)
    if record.job_id:
        lines = launcher_for_record(record).logs(record.job_id, follow=args.follow)
    else:
        lines = follow_worker_logs(record, follow=args.follow)
    for line in lines:
        print(line, end="", flush=True)
    return EXIT_OK


def cmd_cancel(args) -> int:
    from launchers import launcher_for_record
    from orchestrator.lifecycle.settle import cancel_foreground
    from orchestrator.track.finish import finish_run
    from orchestrator.track.runs import KILLED_STATUS, JobState, find_record

    record = find_record(_tracking_uri(args.tracking_uri), args.run_id)
    if not record.job_id:  # trained in the foreground of a submit: settled here if its driver is gone
        status = cancel_foreground(record)
        print(f"run {record.run_id}: {JobState.from_mlflow(status).value}")
        return EXIT_OK if status == KILLED_STATUS else EXIT_FAILED
    handle = launcher_for_record(record).cancel(record.job_id)
    if handle.state is JobState.STOPPED:  # the job's driver may be gone before finishing its run
        finish_run(record.tracking_uri, record.run_id, handle.state.mlflow_status, None)
    print(f"run {record.run_id}: {handle.state.value}")
    return EXIT_OK if handle.state is JobState.STOPPED else EXIT_FAILED


def cmd_list(args) -> int:
    from launchers import launcher_class, launcher_for_record
    from orchestrator.lifecycle.status import describe_list_row
    from orchestrator.track.runs import list_records

    if args.address:
        from orchestrator.spec import resolve_references

        listing = launcher_class("ray-job")(resolve_references(args.address), address_as_written=args.address)
        for handle in listing.list():
            print(f"{handle.run_id}  {handle.state.value:<9}  {handle.job_id}")
        return EXIT_OK
    for record in list_records(_tracking_uri(args.tracking_uri)):
        state = record.state
        if record.job_id:  # when its cluster is gone, MLflow's word is the last one
            with contextlib.suppress(OrchestratorError):
                state = launcher_for_record(record).status(record.job_id).state
        print(describe_list_row(record, state))
    return EXIT_OK


def cmd_generate(args) -> int:
    from orchestrator.generate import Sampling, load_from_directory, load_from_run, write_generation
    from orchestrator.lifecycle import existing_plan

    if bool(args.run) == bool(args.from_hf):
        print("error: name a RUN, or an exported directory with --from-hf DIR", file=sys.stderr)
        return EXIT_USAGE
    if args.from_hf:
        loaded = load_from_directory(args.from_hf)
    else:
        plan = existing_plan(args.run, _tracking_uri(args.tracking_uri))
        loaded = load_from_run(
            plan.spec,
            plan.checkpoint_store(),
            plan.data.tokenizer_path,
            args.checkpoint,
            args.trust_checkpoint,
        )
    sampling = Sampling(
        args.max_new_tokens,
        args.temperature,
        args.top_k,
        args.seed,
        stop_at_end_of_text=not args.past_end_of_text,
    )
    write_generation(sys.stdout, loaded, args.prompt, sampling, use_cache=not args.no_cache)
    return EXIT_OK


def cmd_export(args) -> int:
    from orchestrator.export import export_run
    from orchestrator.lifecycle import existing_plan

    if args.format != "mlflow" and not args.out:
        print(f"error: --format {args.format} needs --out DIR", file=sys.stderr)
        return EXIT_USAGE
    if args.out:
        from orchestrator.fsutil import output_directory

        output_directory(args.out)  # before any checkpoint is read: a place that cannot be written
    plan = existing_plan(args.run, _tracking_uri(args.tracking_uri))
    result = export_run(
        plan.spec, plan.checkpoint_store(), plan.data.tokenizer_path, args.format, args.out,
        which=args.checkpoint, tracking_uri=plan.tracking_uri, run_id=plan.run_id,
        register_name=args.register, dtype=args.dtype, trust_checkpoint=args.trust_checkpoint,
    )  # fmt: skip
    print(f"exported   {result.format} of {result.checkpoint} (step {result.step})")
    if result.out_dir:
        print(f"into       {result.out_dir}")
    if result.model_uri:
        print(f"model      {result.model_uri}")
    if result.registered_name:
        print(f"registered {result.registered_name} version {result.registered_version}")
    return EXIT_OK


# --- tracking and reports ----------------------------------------------------------------------


def cmd_report(args) -> int:
    from orchestrator.report import build_report
    from orchestrator.report.summary import render_summary
    from orchestrator.report.watch import watch_report
    from orchestrator.track.runs import find_run, is_sweep_parent

    uri = _tracking_uri(args.tracking_uri)
    run = find_run(uri, args.run_id)  # by id or by name
    args.run_id = run.info.run_id
    if is_sweep_parent(run):
        return _sweep_report(args, uri)
    if args.watch:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C only stops watching
            for line in watch_report(uri, args.run_id, args.out, args.interval):
                print(line, flush=True)
        return EXIT_OK
    paths, summary = build_report(uri, args.run_id, args.out)
    print("\n".join(str(p) for p in paths) + "\n")
    print(render_summary(summary, f"run {args.run_id}"))
    return EXIT_OK


def _sweep_report(args, uri: str) -> int:
    from orchestrator.sweep import build_sweep_report

    if args.watch:
        print(
            "error: --watch follows one training run; a sweep's table is live in `orchestrator sweep`",
            file=sys.stderr,
        )
        return EXIT_USAGE
    paths, table = build_sweep_report(uri, args.run_id, args.out)
    print("\n".join(str(p) for p in paths) + "\n")
    print(table)
    return EXIT_OK


def cmd_sync(args) -> int:
    from launchers import launcher_for_record
    from orchestrator.lifecycle.settle import sync
    from orchestrator.track.runs import find_record

    record = find_record(_tracking_uri(args.tracking_uri), args.run_id)  # by id or by name
    job = None
    if record.job_id:  # a detached run: its backend says whether its job ended
        with contextlib.suppress(OrchestratorError):
            job = launcher_for_record(record).status(record.job_id)
    result = sync(record, job)
    if result.replay is None:
        print(f"run {record.run_id}: no journal found; nothing to replay")
    else:
        r = result.replay
        damaged = f", {r.damaged_lines} damaged lines skipped" if r.damaged_lines else ""
        print(
            f"run {record.run_id}: journal {r.journal_points} points, {r.already_in_mlflow} already in "
            f"MLflow, {r.sent} sent{damaged}"
        )
    print(f"status     {result.status}" + (f" ({result.note})" if result.note else ""))
    return EXIT_OK


def cmd_compare(args) -> int:
    from orchestrator.report.compare import compare_runs

    if len(args.run_ids) < 2:
        print("error: compare needs at least two run ids", file=sys.stderr)
        return EXIT_USAGE
    from orchestrator.track.runs import find_run

    uri = _tracking_uri(args.tracking_uri)
    run_ids = [find_run(uri, ref).info.run_id for ref in args.run_ids]  # by id or by name
    paths, table = compare_runs(uri, run_ids, args.out)
    print(table + "\n")
    print("\n".join(str(p) for p in paths))
    return EXIT_OK


def cmd_ui(args) -> int:
    from orchestrator.track.mlflow_run import quiet_mlflow_env
    from orchestrator.track.ui import ui_command, ui_environment

    uri = args.tracking_uri
    if uri is None and args.spec:
        from orchestrator.spec import load_spec

        uri = load_spec(args.spec).tracking.uri  # resolved as submit resolves it
    store = _tracking_uri(uri)
    command, url = ui_command(store, args.port)
    if command is None:
        print(f"the tracking store is a server already: open {url}")
        return EXIT_OK
    from orchestrator.net import port_in_use

    if port_in_use(args.port):
        print(f"error: 127.0.0.1:{args.port} is in use; hint: pass another --port", file=sys.stderr)
        return EXIT_USAGE
    print(f"MLflow UI on {url} (Ctrl-C stops it)", flush=True)
    os.execve(command[0], command, {**os.environ, **quiet_mlflow_env(), **ui_environment(store)})


if __name__ == "__main__":
    raise SystemExit(main())
