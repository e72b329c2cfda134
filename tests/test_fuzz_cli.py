"""Property-based: the command line never ends in a traceback, whatever a spec's `--set` values or a
command's RUN argument hold. Every example goes through the real `main()`; what it may do is exit
0, 1 or 2 with a message (argparse's own usage errors included).

`make test` runs a few dozen examples of each (seconds); `make fuzz` runs 10,000
(``ORCHESTRATOR_FUZZ_EXAMPLES``). Each test has a timeout: a hang fails it, nothing is timed.
"""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.cli import main
from orchestrator.spec.models import RunSpec
from tests.conftest import fuzz_examples

BASE_SPEC = """\
name: fuzz
model: {n_layers: 1, n_heads: 2, d_model: 32, context_length: 16, vocab_size: 300}
data: {corpus: files, files: [corpus.txt]}
train: {max_steps: 40, micro_batch_size: 2}
schedule: {warmup_steps: 2}
"""
RUN_COMMANDS = [
    ["status", "RUN"], ["logs", "RUN"], ["cancel", "RUN"], ["report", "RUN"], ["sync", "RUN"],
    ["generate", "RUN", "--prompt", "x"], ["compare", "RUN", "RUN"], ["submit", "--resume", "RUN"],
]  # fmt: skip


def _field_paths(model=RunSpec, prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            paths += _field_paths(annotation, f"{prefix}{name}.")
        else:
            paths.append(f"{prefix}{name}")
    return paths


# data.files globs are the user's own business (`/**` walks the whole disk): not fuzzed here
PATHS = [p for p in _field_paths() if p != "data.files"]
numbers = (
    st.integers(min_value=-(10**7), max_value=10**7).map(str)
    | st.floats(allow_nan=True, allow_infinity=True).map(repr)
    | st.sampled_from(
        ["0", "1", "2", "3", "true", "false", "null", "[0.9, 0.95]", "{}", "[]", "fp16", "bf16"]
    )
)
hostile_text = numbers | st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40
) | st.sampled_from(
    ["[" * 200, "{a: " * 100, "9" * 5000, "2001-13-45", "!!python/object:os.system x", "*alias", "&a [1]",
     ".nan", "-.inf", "0x10", "1e999", "~", "''", "${env:NOT_SET_ANYWHERE}", "\x1b[2J\u202e", "a\x00b"]
)  # fmt: skip
set_values = st.tuples(st.sampled_from(PATHS) | st.text(max_size=20), hostile_text)
run_refs = (
    st.text(max_size=60)
    | st.from_regex(r"[0-9a-f]{32}", fullmatch=True)
    | st.sampled_from(
        ["fuzz-run", "'; DROP TABLE runs; --", "a\\'b", "../../etc", "-x", "--help", "\x1b]0;t\x07"]
    )
)


def run_main(argv: list[str]) -> int:
    """main()'s exit code; an exception escaping it (a traceback for the user) fails the test."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: a usage error, printed without a traceback
            code = exc.code
    assert code in (0, 1, 2), (argv, code, out.getvalue()[-2000:])
    return code


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A spec with a small data file, and ./mlflow.db holding one orchestrator run named fuzz-run."""
    from orchestrator.data.corpus import python_docs_text
    from orchestrator.track.mlflow_run import client
    from orchestrator.track.runs import BACKEND_TAG, CHECKPOINT_DIR_TAG

    work = tmp_path_factory.mktemp("fuzz")
    (work / "spec.yaml").write_text(BASE_SPEC)
    (work / "corpus.txt").write_text(python_docs_text()[:20_000])
    mlflow = client(f"sqlite:///{work / 'mlflow.db'}")
    tags = {CHECKPOINT_DIR_TAG: str(work / "checkpoints" / "fuzz-run"), BACKEND_TAG: "ray-local"}
    mlflow.create_run(mlflow.create_experiment("fuzz"), run_name="fuzz-run", tags=tags)
    return work


@pytest.mark.timeout(600)
@settings(max_examples=fuzz_examples(25), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(set_values, min_size=1, max_size=3), st.sampled_from(["validate", "plan", "k8s"]))
def test_set_values_never_crash_a_command(workdir, monkeypatch, overrides, command):
    monkeypatch.chdir(workdir)
    argv = ["k8s", "render"] if command == "k8s" else [command]
    for path, value in overrides:
        argv += ["--set", f"{path}={value}"]
    run_main([*argv, "spec.yaml"])


@pytest.mark.timeout(600)
@settings(max_examples=fuzz_examples(40), deadline=None, suppress_health_check=list(HealthCheck))
@given(run_refs, st.sampled_from(RUN_COMMANDS))
def test_run_arguments_never_crash_a_command(workdir, monkeypatch, run_ref, command):
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_main([run_ref if part == "RUN" else part for part in command])


# --- edited run files: what a run leaves in its directory, damaged in generated ways ------------------

RUN_FILES = [
    "step-5/COMPLETE.json",
    "tracking-status.json",
    ".orchestrator-run.json",
    "metrics.journal.jsonl",
]
damage = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [b"", b"{}", b"[]", b"null", b'{"step": "5"}', b'{"run_id": 5, "status": "FINISHED"}',
         b'{"key": "\\ud800", "value": 1, "step": 1, "timestamp": 1}\n', b"\xff\xfe\n{}\n", b"x" * 100_000]
    ),
    st.lists(st.sampled_from([b'{"key": "loss", "value": 1.0, "step": 1, "timestamp": 1}', b"{", b"\xc3"]),
             max_size=20).map(lambda lines: b"\n".join(lines) + b"\n"),
)  # fmt: skip
FILE_COMMANDS = [
    ["sync", "RUN"], ["status", "RUN"], ["report", "RUN"], ["generate", "RUN", "--prompt", "x"],
    ["export", "RUN", "--format", "safetensors", "--out", "exported"], ["submit", "--resume", "RUN"],
]  # fmt: skip


@pytest.mark.timeout(600)
@settings(max_examples=fuzz_examples(30), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(RUN_FILES), damage, min_size=1), st.sampled_from(FILE_COMMANDS))
def test_edited_run_files_never_crash_a_command(workdir, monkeypatch, files, command):
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = workdir / "checkpoints" / "fuzz-run"
    for name, payload in files.items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_bytes(payload)
    run_main(["fuzz-run" if part == "RUN" else part for part in command])
