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


# --- hostile globs: symbolic-link loops, a large tree, the whole file system, broken classes -----------

GLOB_SPEC = """\
name: globs
model: {n_layers: 1, n_heads: 2, d_model: 32, context_length: 16, vocab_size: 300}
data: {corpus: files, files: [GLOB], max_files: 1000, prepared: prepared}
train: {max_steps: 40, micro_batch_size: 2}
schedule: {warmup_steps: 2}
"""
GLOB_SECONDS = 20  # what one expansion may take, whatever the glob


@pytest.fixture(scope="module")
def glob_tree(tmp_path_factory):
    """tree/ with links to itself and its parents, two directories linking to each other, 5,000
    files in 50 directories (more than data.max_files), and a file 120 directories deep."""
    work = tmp_path_factory.mktemp("globs")
    tree = work / "tree"
    for name in ("a", "b", "c"):
        (tree / name).mkdir(parents=True)
        (tree / name / f"{name}.txt").write_text(f"text of {name}\n")
    (tree / "self").symlink_to(".")
    (tree / "a" / "up").symlink_to("..")
    (tree / "b" / "to_c").symlink_to("../c")
    (tree / "c" / "to_b").symlink_to("../b")
    for d in range(50):
        (tree / "big" / f"d{d}").mkdir(parents=True)
        for f in range(100):
            (tree / "big" / f"d{d}" / f"f{f}.txt").write_bytes(b"x\n")
    deep = tree / "deep" / "/".join(["d"] * 120)
    deep.mkdir(parents=True)
    (deep / "x.txt").write_text("deep text\n")
    return work


HOSTILE_GLOBS = [
    "tree/**/*.txt",  # 5,000 matches: more than data.max_files
    "tree/self/self/self/**/*.txt", "tree/a/up/a/up/**", "tree/b/to_c/to_b/to_c/**/*.txt",
    "/**/*.txt", "/**", "**/*.txt", "tree/" + "**/" * 40 + "*.txt", "tree/deep/**/x.txt",
    "tree/[z-a].txt", "tree/**/[!]", "tree/**/*[", "tree/[[:alpha:]]*", "tree/big/d1*/f?.txt",
    "tree/" + "*/" * 150 + "x.txt", "tree/\x00.txt", "tree/" + "a" * 5000 + "/*.txt",
]  # fmt: skip
glob_parts = st.sampled_from(
    ["**", "*", "?", "[a-z]", "[z-a]", "[!]", "[", "self", "a", "up", "to_b", "to_c", "big", "deep",
     "d", "..", ".", "*.txt", "d1*", "f[0-9].txt", "\\", "{a,b}", ""]
)  # fmt: skip
generated_globs = st.tuples(
    st.sampled_from(["tree/", "/", "", "./tree/self/"]), st.lists(glob_parts, max_size=12)
)


def expand_glob(work, monkeypatch, glob: str, commands=("validate", "plan")) -> None:
    import json
    import time

    monkeypatch.chdir(work)
    (work / "spec.yaml").write_text(GLOB_SPEC.replace("[GLOB]", json.dumps([glob])))
    started = time.monotonic()
    for command in commands:
        run_main([command, "spec.yaml"])
    assert time.monotonic() - started < len(commands) * GLOB_SECONDS, f"{glob!r} took too long"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("glob", HOSTILE_GLOBS)
def test_a_hostile_glob_ends_in_a_message_quickly(glob_tree, monkeypatch, glob):
    expand_glob(glob_tree, monkeypatch, glob)


@pytest.mark.timeout(1800)
@settings(max_examples=fuzz_examples(10, most=400), deadline=None, suppress_health_check=list(HealthCheck))
@given(generated_globs)
def test_generated_globs_end_in_a_message_quickly(glob_tree, monkeypatch, parts):
    prefix, names = parts
    expand_glob(glob_tree, monkeypatch, prefix + "/".join(names), ("validate",))


# --- data files: long lines, bad bytes, damaged compression ------------------------------------------

DATA_SPEC = """\
name: data
model: {n_layers: 1, n_heads: 2, d_model: 32, context_length: 16, vocab_size: 300}
data: {corpus: files, files: [FILE], prepared: prepared, encoding_errors: ERRORS}
train: {max_steps: 40, micro_batch_size: 2}
schedule: {warmup_steps: 2}
"""


def prepare_file(directory, name: str, payload: bytes, errors: str = "error") -> int:
    """`orchestrator prepare` of a spec whose one data file holds ``payload``: its exit code."""
    import shutil

    (directory / name).write_bytes(payload)
    (directory / "spec.yaml").write_text(DATA_SPEC.replace("FILE", name).replace("ERRORS", errors))
    shutil.rmtree(directory / "prepared", ignore_errors=True)
    return run_main(["prepare", "spec.yaml"])


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


BAD_BYTES = {
    "not-utf8.txt": b"caf\xe9 au lait\n\nsecond paragraph\n",
    "nul-bytes.txt": b"a\x00b\x00\x00c\n\nmore text\n",
    "bom-crlf.txt": b"\xef\xbb\xbfline one\r\n\r\nline two\r\n",
    "only-newlines.txt": b"\n" * 10_000,
    "empty.txt": b"",
    "surrogate.jsonl": b'{"text": "a \\ud800 b"}\n',
    "bad-json.jsonl": b'{"text": "ok"}\n{"text": \n',
    "not-an-object.jsonl": b'[1, 2]\n"text"\n',
    "text-is-a-number.jsonl": b'{"text": 5}\n',
    "nested-deep.jsonl": b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
    "fake.txt.gz": b"this is not gzip at all",
    "truncated.txt.gz": _gzip(b"some text that goes on\n" * 1000)[:200],
    "fake.txt.zst": b"this is not zstd either",
    "fake.parquet": b"PAR1 but not parquet",
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", BAD_BYTES)
@pytest.mark.parametrize("errors", ["error", "replace"])
def test_bad_bytes_in_a_data_file_are_a_message(tmp_path, monkeypatch, name, errors):
    monkeypatch.chdir(tmp_path)
    prepare_file(tmp_path, name, BAD_BYTES[name], errors)


@pytest.mark.timeout(1800)
@settings(max_examples=fuzz_examples(20, most=1000), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=3000), st.sampled_from(["d.txt", "d.jsonl", "d.txt.gz", "d.jsonl.zst"]))
def test_generated_bytes_in_a_data_file_are_a_message(tmp_path_factory, monkeypatch, payload, name):
    directory = tmp_path_factory.mktemp("bytes")
    monkeypatch.chdir(directory)
    prepare_file(directory, name, payload)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", ["line.txt", "record.jsonl"])
def test_a_20_mb_line_is_prepared_in_bounded_time_and_memory(tmp_path, name):
    """One line of 20 MB (a text file without a newline, one JSONL record): the reader streams it."""
    import subprocess
    import sys
    import time

    words = b" ".join(b"word%d" % (i % 997) for i in range(2_700_000))[: 20 << 20]
    payload = words if name.endswith(".txt") else b'{"text": "' + words + b'"}\n'
    (tmp_path / name).write_bytes(payload)
    (tmp_path / "spec.yaml").write_text(DATA_SPEC.replace("FILE", name).replace("ERRORS", "error"))
    started = time.monotonic()
    command = [sys.executable, "-c", PEAK_OF_PREPARE]
    child = subprocess.run(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = child.stdout.decode(errors="replace")
    assert child.returncode in (0, 2) and "Traceback" not in out, out[-3000:]
    assert time.monotonic() - started < 300, "20 MB in one line took too long"
    peak = int((tmp_path / "peak-kib").read_text())
    assert peak < 1_500_000, f"{peak} KiB for one line of 20 MB"


# `orchestrator prepare spec.yaml`, then the process's own peak resident memory (VmHWM: that of its
# program alone; the rusage of a child counts the RSS of the forked parent before exec too)
PEAK_OF_PREPARE = """\
import runpy, sys
sys.argv = ["orchestrator", "prepare", "spec.yaml"]
try:
    runpy.run_module("orchestrator", run_name="__main__")
finally:
    peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    open("peak-kib", "w").write(peak.split()[1])
"""


# --- edited run files of a run that has them all (spec.yaml, dataset manifest, lease, ...) ------------


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """A run started as `submit` starts it, on a dataset prepared into the work directory (its own
    manifest): (work, run name, run directory, stored spec.yaml, dataset manifest)."""
    from orchestrator.lifecycle import plan_run, prepare_data, start_run
    from orchestrator.spec import parse_spec
    from orchestrator.track.mlflow_run import client

    work = tmp_path_factory.mktemp("full-run")
    (work / "corpus.txt").write_text("a few words of text\n\n" * 400)
    spec = parse_spec(DATA_SPEC.replace("FILE", "corpus.txt").replace("ERRORS", "error"))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        data = prepare_data(spec, work, say=lambda _: None)
        plan = start_run(plan_run(spec, work, data), work)
    artifacts = client(plan.tracking_uri).get_run(plan.run_id).info.artifact_uri.removeprefix("file://")
    from pathlib import Path

    manifest = Path(data.dataset_uri) / "manifest.json"
    return work, plan.run_name, Path(plan.checkpoint_dir), Path(artifacts) / "spec.yaml", manifest


EDITED = [
    "step-5/COMPLETE.json", "tracking-status.json", ".orchestrator-run.json", "metrics.journal.jsonl",
    "lease.json", "status.json", "SPEC", "MANIFEST",
]  # fmt: skip
EDIT_COMMANDS = [
    *FILE_COMMANDS, ["cancel", "RUN"], ["logs", "RUN"], ["validate", "spec.yaml"], ["prepare", "spec.yaml"],
]  # fmt: skip
run_file_damage = damage | st.sampled_from(
    [b'{"run_id": "x", "holder": "h", "host": "elsewhere", "pid": 1, "renewed": 1e300}',
     b"name: edited\nmodel: {d_model: 64}\n", b'{"format": 1, "shards": "many"}',
     b"!!python/object:os.system ls"]
)  # fmt: skip


@pytest.mark.timeout(1800)
@settings(max_examples=fuzz_examples(30, most=1000), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(EDITED), run_file_damage, min_size=1), st.sampled_from(EDIT_COMMANDS))
def test_edited_files_of_a_whole_run_never_crash_a_command(full_run, monkeypatch, files, command):
    import time

    work, run_name, run_dir, spec_file, manifest = full_run
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (work / "spec.yaml").write_text(DATA_SPEC.replace("FILE", "corpus.txt").replace("ERRORS", "error"))
    for name, payload in files.items():
        target = {"SPEC": spec_file, "MANIFEST": manifest}.get(name, run_dir / name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(payload)
    started = time.monotonic()
    run_main([run_name if part == "RUN" else part for part in command])
    assert time.monotonic() - started < 60, (command, files)
