"""Hostile spec files: every one ends in a problem with a line (exit code 2), quickly, never a
traceback, a hang or a memory blow-up. The timeouts only stop a hang; nothing here measures speed."""

from __future__ import annotations

import os

import pytest

from orchestrator.cli import main
from orchestrator.spec import SpecError, load_spec, parse_spec

DEEP_CASES = {
    "flow-10k": "name: x\nmodel: " + "[" * 10_000 + "\n",
    "flow-mappings": "name: x\nmodel: " + "{a: " * 5_000 + "\n",
    "block-dashes": "name: x\nmodel:\n  " + "- " * 100_000 + "a\n",
    "block-indent": "name: x\nmodel:\n" + "".join(" " * i + "a:\n" for i in range(1, 700)),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("text", DEEP_CASES.values(), ids=DEEP_CASES.keys())
def test_deep_nesting_is_a_problem_with_a_line(text):
    with pytest.raises(SpecError) as info:
        parse_spec(text, "deep.yaml")
    (problem,) = info.value.problems
    assert "deeper than 64 levels" in problem.message
    assert problem.line and problem.line >= 2


@pytest.mark.timeout(30)
def test_deep_nesting_in_an_override_names_the_override():
    with pytest.raises(SpecError) as info:
        parse_spec("name: x\n", "s.yaml", ["model.n_layers=" + "[" * 5000])
    (problem,) = info.value.problems
    assert problem.override and "deeper than 64" in problem.message


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("9" * 5000, "4300 digits"), ("2001-13-45", "month must be in 1..12")],
    ids=["5000-digit-int", "month-13"],
)
def test_values_python_cannot_build_are_problems_with_their_line(value, fragment):
    with pytest.raises(SpecError) as info:
        parse_spec(f"name: x\ntrain:\n  seed: {value}\n", "s.yaml")
    (problem,) = info.value.problems
    assert (problem.path, problem.line) == ("train.seed", 3)
    assert fragment in problem.message and "quote it" in problem.hint


def test_characters_yaml_refuses_are_a_problem_with_their_line():
    with pytest.raises(SpecError) as info:
        parse_spec("name: x\ntrain:\n  seed: 1\x07\n", "s.yaml")
    (problem,) = info.value.problems
    assert problem.line == 3 and "not valid YAML" in problem.message


def test_bytes_that_are_not_utf8_are_a_problem_with_their_line():
    with pytest.raises(SpecError) as info:
        parse_spec(b"name: x\n\ntrain: {seed: \xff}\n", "s.yaml")
    (problem,) = info.value.problems
    assert problem.line == 3 and "UTF-8" in problem.message


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "directory"])
def test_only_regular_files_are_read(tmp_path, capsys, kind):
    """/dev/zero used to be read until MemoryError, and a FIFO waited for a writer forever."""
    if kind == "dev-zero":
        path = "/dev/zero"
    elif kind == "fifo":
        path = str(tmp_path / "spec.fifo")
        os.mkfifo(path)
    else:
        path = str(tmp_path)
    assert main(["validate", path]) == 2
    err = capsys.readouterr().err
    assert "is not a regular file" in err and "Traceback" not in err


def test_a_utf16_spec_is_read_once_and_planned(tmp_path, capsys, monkeypatch):
    text = "name: wide\ntrain: {epochs: 1, seed: 7}\ntracking: {experiment: expérience}\n"
    path = tmp_path / "spec.yaml"
    path.write_bytes(text.encode("utf-16"))
    spec = load_spec(path)
    assert spec == parse_spec(text)
    assert spec.tracking.experiment == "expérience"
    monkeypatch.chdir(tmp_path)
    assert main(["plan", str(path)]) == 0
    assert "expérience" in capsys.readouterr().out


def test_a_missing_file_is_a_problem(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read the file (No such file or directory)" in capsys.readouterr().err


# Long strings shaped to make a backtracking URI pattern retry at every position: a scheme-like run
# with no `://`, `://` repeated, `user:` repeated, and a password with no `@`.
LONG_SHAPES = {
    "letters": "c" * 200_000,
    "schemes": "a://" * 50_000,
    "users": "a://b:" * 33_000,
    "password-without-at": "a://b:" + "c" * 200_000,
    "at-signs": "a://b:c@" * 25_000,
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("text", LONG_SHAPES.values(), ids=LONG_SHAPES.keys())
def test_a_maximal_document_of_one_long_string_is_checked_in_linear_time(text):
    """A spec at the loader's size limit whose one string is long: every check (the literal-password
    check among them) runs once over it, in linear time. The timeout only stops a hang."""
    from orchestrator.spec.loader import MAX_SPEC_BYTES

    head = "name: x\ntracking: {experiment: '"
    document = head + text[: MAX_SPEC_BYTES - len(head) - 3] + "'}\n"
    assert len(document.encode()) <= MAX_SPEC_BYTES
    try:
        parse_spec(document, "long.yaml")
    except SpecError as exc:  # a literal password is a problem with its line, not a hang
        assert all(p.line == 2 for p in exc.problems), exc.render()


@pytest.mark.timeout(10)
@pytest.mark.parametrize("text", LONG_SHAPES.values(), ids=LONG_SHAPES.keys())
def test_a_long_set_value_is_validated_and_masked_in_linear_time(text, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\n")
    code = main(["validate", str(spec), "--set", f"tracking.experiment='{text}'"])
    captured = capsys.readouterr()
    assert code in (0, 2) and "Traceback" not in captured.err


@pytest.mark.timeout(10)
@pytest.mark.parametrize("text", LONG_SHAPES.values(), ids=LONG_SHAPES.keys())
def test_masking_a_long_text_takes_linear_time(text):
    from orchestrator.masking import mask_uri_passwords

    masked = mask_uri_passwords(text + " http://me:pw-secret@host")
    assert masked.endswith("http://me:***@host")
