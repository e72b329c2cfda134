"""The `orchestrator` command line's arguments: every command with its help and an example.

``build_parser(commands)`` takes the module holding the ``cmd_<name>`` functions, so the parser and the
commands stay apart and neither imports the other's internals.
"""

from __future__ import annotations

import argparse
import math

TRACKING_URI_HELP = "MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)"


def build_parser(commands) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Train GPT-style models from one YAML spec on Ray + DeepSpeed, tracked in MLflow.",
        epilog="example: orchestrator submit configs/quickstart.yaml",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="say more (debug messages)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _spec_commands(sub, commands)
    _run_commands(sub, commands)
    _tracking_commands(sub, commands)
    return parser


def _command(sub, name: str, func, summary: str, example: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name, help=summary, description=summary, epilog=f"example: orchestrator {example}"
    )
    parser.set_defaults(func=func)
    return parser


def _with_spec(parser: argparse.ArgumentParser, nargs: str | None = None) -> argparse.ArgumentParser:
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
    return parser


def _with_run(parser: argparse.ArgumentParser, run_id: bool = True) -> argparse.ArgumentParser:
    if run_id:
        parser.add_argument("run_id", metavar="RUN", help="MLflow run id or run name (printed by submit)")
    parser.add_argument("--tracking-uri", default=None, help=TRACKING_URI_HELP)
    return parser


def _spec_commands(sub, c) -> None:
    example = "{} configs/quickstart.yaml --set train.epochs=1"
    submit = _with_spec(
        _command(sub, "submit", c.cmd_submit, "validate, plan and train a spec", example.format("submit")),
        "?",
    )
    submit.add_argument(
        "--resume",
        metavar="RUN",
        help="continue a run (MLflow run id or name) from its "
        "latest complete checkpoint; --set may change what is safe to change",
    )
    submit.add_argument("--tracking-uri", default=None, help="with --resume: where the run is tracked")
    submit.add_argument("--detach", action="store_true", help="detached backends: return once accepted")
    submit.add_argument(
        "--progress",
        choices=("auto", "bar", "off"),
        default="auto",
        help="progress bar on stderr: auto (only on a terminal), bar (always), off",
    )
    _with_spec(
        _command(
            sub,
            "validate",
            c.cmd_validate,
            "check a spec and print the resolved plan",
            example.format("validate"),
        )
    )
    _with_spec(
        _command(
            sub,
            "prepare",
            c.cmd_prepare,
            "tokenize the spec's corpus into shards (submit does it when they are missing or stale)",
            "prepare configs/gpt2-124m-zero2-bf16.yaml --set data.prepared=s3://bucket/datasets",
        )
    )
    plan = _with_spec(
        _command(
            sub,
            "plan",
            c.cmd_plan,
            "show everything submit would do, without doing it",
            example.format("plan"),
        )
    )
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    k8s = sub.add_parser(
        "k8s",
        help="Kubernetes (KubeRay) helpers",
        description="Kubernetes (KubeRay) helpers",
        epilog="example: orchestrator k8s render configs/quickstart.yaml > rayjob.yaml",
    )
    k8s_commands = k8s.add_subparsers(dest="k8s_command", required=True, metavar="COMMAND")
    _with_spec(
        _command(
            k8s_commands,
            "render",
            c.cmd_k8s_render,
            "print the RayJob and ConfigMap a kubernetes submit would create (no cluster needed)",
            "k8s render configs/quickstart.yaml",
        )
    )
    _sweep_command(sub, c)
    schema = _command(
        sub,
        "schema",
        c.cmd_schema,
        "print the JSON Schema of run specs (for editors)",
        "schema --out schema/run-spec.schema.json",
    )
    schema.add_argument("--out", help="write to this file instead of standard output")


def _sweep_command(sub, c) -> None:
    sweep = _with_spec(
        _command(
            sub,
            "sweep",
            c.cmd_sweep,
            "search hyperparameters: run the spec's sweep section with Ray Tune, one run per trial",
            "sweep configs/sweep-lr.yaml --set sweep.num_samples=8",
        ),
        "?",
    )
    sweep.add_argument(
        "--resume",
        metavar="RUN",
        help="continue a sweep (its parent MLflow run id or name): finished trials are kept, "
        "unfinished ones continue from their checkpoints",
    )
    sweep.add_argument("--tracking-uri", default=None, help="with --resume: where the sweep is tracked")
    sweep.add_argument(
        "--table",
        choices=("auto", "live", "lines"),
        default="auto",
        help="the trials' table: live (redrawn in place), lines (a line per change), auto (live on a "
        "terminal)",
    )


def _run_commands(sub, c) -> None:
    _with_run(
        _command(
            sub,
            "status",
            c.cmd_status,
            "state, step, last metrics and worker health of a run",
            "status 3f2c9a...",
        )
    )
    logs = _with_run(
        _command(
            sub,
            "logs",
            c.cmd_logs,
            "a run's output: the job's log, or each worker's log",
            "logs 3f2c9a... -f",
        )
    )
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    _with_run(_command(sub, "cancel", c.cmd_cancel, "stop a detached job (ray-job)", "cancel 3f2c9a..."))
    runs = _with_run(
        _command(
            sub,
            "list",
            c.cmd_list,
            "runs in the tracking store, or jobs on a cluster",
            "list --address http://127.0.0.1:8265",
        ),
        run_id=False,
    )
    runs.add_argument(
        "--address", type=_dashboard_url, help="a Ray dashboard URL: list the jobs there instead"
    )
    generate = _command(
        sub,
        "generate",
        c.cmd_generate,
        "sample text from a run's checkpoint or an exported model",
        'generate quickstart-20250101-120000 --prompt "The for" --seed 0',
    )
    generate.add_argument("run", nargs="?", help="MLflow run id or run name")
    generate.add_argument(
        "--from-hf", metavar="DIR", help="an exported directory (hf or safetensors) instead"
    )
    generate.add_argument(
        "--prompt", action="append", required=True, type=_text, help="repeatable: several are one batch"
    )
    generate.add_argument("--max-new-tokens", type=_positive_int, default=100)
    generate.add_argument("--temperature", type=_non_negative_float, default=0.8, help="0 means greedy")
    generate.add_argument("--top-k", type=_positive_int, default=50)
    generate.add_argument("--seed", type=_seed, default=None, help="same seed, same text (0 to 2^64-1)")
    generate.add_argument("--no-cache", action="store_true", help="recompute the context for every token")
    generate.add_argument(
        "--past-end-of-text",
        action="store_true",
        help="go on after <|endoftext|> (by default a row ends there, as in transformers)",
    )
    _checkpoint_choice(generate)
    export = _command(
        sub,
        "export",
        c.cmd_export,
        "hand a run's model on: Hugging Face, MLflow model, safetensors",
        "export quickstart-20250101-120000 --format hf --out exported/hf",
    )
    export.add_argument("run", help="MLflow run id or run name")
    export.add_argument("--format", choices=("hf", "mlflow", "safetensors"), required=True)
    export.add_argument("--out", metavar="DIR", help="where to write (hf, safetensors; optional for mlflow)")
    export.add_argument("--register", metavar="NAME", help="mlflow: register as a new version of this model")
    export.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    _checkpoint_choice(export)


def _checkpoint_choice(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", choices=["best", "latest"], default="best")
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="load a checkpoint whose pickles hold more than data (only one you trust)",
    )
    parser.add_argument("--tracking-uri", default=None, help=TRACKING_URI_HELP)


def _tracking_commands(sub, c) -> None:
    report = _with_run(
        _command(
            sub,
            "report",
            c.cmd_report,
            "rebuild a run's JSON, plots and summary from MLflow",
            "report 3f2c9a... --out /tmp/report",
        )
    )
    report.add_argument("--out", help="directory to write into (default: the run's checkpoint dir)")
    report.add_argument(
        "--watch", action="store_true", help="keep refreshing until the run ends (Ctrl-C stops)"
    )
    report.add_argument(
        "--interval", type=_positive_float, default=5.0, help="seconds between refreshes with --watch"
    )
    _with_run(
        _command(
            sub,
            "sync",
            c.cmd_sync,
            "send a run's journaled metrics MLflow is missing (after an outage) and finish the run",
            "sync 3f2c9a...",
        )
    )
    compare = _with_run(
        _command(
            sub,
            "compare",
            c.cmd_compare,
            "overlay the loss and learning-rate curves of runs and tabulate their summaries",
            "compare 3f2c9a... 8b1d07... --out cmp",
        ),
        run_id=False,
    )
    compare.add_argument("run_ids", nargs="+", metavar="RUN", help="two or more MLflow run ids or run names")
    compare.add_argument(
        "--out", default="comparison", help="directory to write into (default: ./comparison)"
    )
    ui = _with_run(
        _command(
            sub,
            "ui",
            c.cmd_ui,
            "start the MLflow UI on 127.0.0.1 for the configured store",
            "ui configs/quickstart.yaml --port 5000",
        ),
        run_id=False,
    )
    ui.add_argument("spec", nargs="?", help="a run spec whose tracking.uri to open (default: ./mlflow.db)")
    ui.add_argument("--port", type=_port, default=5000, help="port on 127.0.0.1 (default: 5000)")


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to 2^64-1, got {text!r}")
    return value


def _text(text: str) -> str:
    """Text as the command line gave it; bytes that are not UTF-8 arrive as lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError("is not UTF-8 text; check the terminal's encoding") from None
    return text


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text!r}")
    return value


def _dashboard_url(text: str) -> str:
    """http(s)://host[:port] of a Ray dashboard; `${env:...}` references in it are resolved later."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(_text(text))
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port out of range or not a number
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(
            f"must be a Ray dashboard URL such as http://127.0.0.1:8265, got {text!r}"
        )
    return text


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number, 1 to 65535, got {text!r}")
    return value


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
