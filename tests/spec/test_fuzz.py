"""Property-based: random mutations of a valid spec, random bytes and deep nesting are either a valid
spec or a SpecError with problems, never a crash (`make fuzz` runs 10,000 examples of each)."""

from __future__ import annotations

import copy

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.spec import RunSpec, SpecError, parse_spec
from tests.conftest import REPO, fuzz_examples

VALID = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["2", "fp16", "bf16", "ray-local", "python-docs", "${env:NOPE_NOT_SET}", ""]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(tree, prefix=()):
    for key, value in tree.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from _paths(value, (*prefix, key))


PATHS = list(_paths(VALID))


@st.composite
def mutated_specs(draw):
    spec = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(PATHS))
        parent = spec
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            parent.pop(path[-1], None)
        else:
            parent[draw(st.text(min_size=1, max_size=12))] = draw(values)
    return yaml.safe_dump(spec, allow_unicode=True)


def _parse_or_spec_error(text: str) -> None:
    try:
        assert isinstance(parse_spec(text, "fuzz.yaml"), RunSpec)
    except SpecError as exc:
        assert exc.problems, "a SpecError must carry at least one problem"
        for problem in exc.problems:
            assert problem.message


@settings(max_examples=fuzz_examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_specs())
def test_structural_mutations_never_crash(text):
    _parse_or_spec_error(text)


@settings(max_examples=fuzz_examples(300), deadline=None)
@given(st.data())
def test_text_mutations_never_crash(data):
    text = (REPO / "configs" / "quickstart.yaml").read_text()
    for _ in range(data.draw(st.integers(min_value=1, max_value=5))):
        pos = data.draw(st.integers(min_value=0, max_value=len(text)))
        junk = data.draw(st.text(alphabet=":-[]{}&*!|>'\"#%@` \n\t0123456789abc.", max_size=6))
        cut = data.draw(st.integers(min_value=0, max_value=4))
        text = text[:pos] + junk + text[pos + cut :]
    _parse_or_spec_error(text)


@settings(max_examples=fuzz_examples(100), deadline=None)
@given(st.binary(max_size=2000) | st.text(max_size=500).map(lambda t: t.encode("utf-16")))
def test_any_bytes_are_a_spec_or_problems(raw):
    _parse_or_spec_error(raw)


@settings(max_examples=fuzz_examples(50), deadline=None)
@given(st.integers(min_value=1, max_value=3000), st.sampled_from(["[", "{a: ", "- ", "  a:\n"]))
def test_nesting_of_any_depth_is_a_spec_or_problems(depth, opener):
    _parse_or_spec_error("name: x\nmodel:\n  " + opener * depth + "1\n")


# --- a seeded hostile corpus: long strings and bad bytes in every shape a spec can take -------------

LONG = ["c" * 100_000, "a://b:" * 16_000, "a://" * 25_000, "http://u:" + "p" * 100_000 + "@h", "[" * 60]
BAD_TEXT = ['"\\ud800"', '"\\udfff x"', '"a\\x00b"', "'\x7f'", '"\\U0010ffff"']
hostile_scalars = st.sampled_from(LONG).map(lambda s: f"'{s}'") | st.sampled_from(BAD_TEXT)


@pytest.mark.timeout(600)
@settings(max_examples=fuzz_examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), hostile_scalars, st.booleans())
def test_long_strings_and_bad_text_in_any_field_are_a_spec_or_problems(path, scalar, as_key):
    """Every field (or a key beside it) given a 100,000-character string, a URI-shaped long string or
    an escaped lone surrogate: a spec or problems, within the test's timeout, never a crash. A
    string that is not text (a lone surrogate) is never accepted."""
    *parents, leaf = path
    text = "name: x\n" if path != ("name",) else ""
    indent = ""
    for part in parents:
        text += f"{indent}{part}:\n"
        indent += "  "
    text += f"{indent}{scalar if as_key else leaf}: {'1' if as_key else scalar}\n"
    try:
        spec = parse_spec(text, "fuzz.yaml")
    except SpecError as exc:
        assert exc.problems and all(p.message for p in exc.problems)
        return
    assert all(text.encode("utf-8") for text in _strings(spec.model_dump())), "a string that is not text"


def _strings(tree):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _strings(item)
    elif isinstance(tree, str):
        yield tree
