"""Strict, safe YAML loading with line numbers, and errors that point at the fix.

>>> spec = load_spec("configs/quickstart.yaml")  # doctest: +SKIP
>>> spec.deepspeed.zero_stage  # doctest: +SKIP
2
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from orchestrator.spec.models import RunSpec

MAX_SPEC_BYTES = 256 * 1024
_STANDARD_TAGS = {
    "tag:yaml.org,2002:" + name for name in ("map", "seq", "str", "int", "float", "bool", "null", "timestamp")
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where, what, and what to do."""

    path: str
    message: str
    line: int | None = None
    hint: str | None = None

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line else source
        text = f"{where} {self.path or '<root>'}: {self.message}"
        return f"{text}\n    hint: {self.hint}" if self.hint else text


class SpecError(Exception):
    """Raised with every problem of a spec at once; the CLI prints it and exits with code 2."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        count = len(self.problems)
        head = f"{self.source}: {count} problem{'s' if count != 1 else ''} in the run spec"
        return "\n".join([head, *(p.render(self.source) for p in self.problems)])


def load_spec(path: str | Path) -> RunSpec:
    """Read, parse and validate a spec file; raise SpecError naming every problem."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SpecError(source, [Problem("", f"cannot read the file ({exc.strerror})")]) from None
    return parse_spec(raw, source)


def parse_spec(raw: bytes | str, source: str = "<spec>") -> RunSpec:
    """Validate YAML text into a RunSpec."""
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(
            source,
            [Problem("", f"the file is {len(raw)} bytes; a run spec is at most {MAX_SPEC_BYTES}")],
        )
    node = _compose(raw, source)
    lines: dict[tuple[Any, ...], int] = {}
    data = _to_python(node, (), lines, source) if node is not None else None
    if not isinstance(data, dict):
        raise SpecError(source, [Problem("", "the spec must be a YAML mapping (key: value lines)")])
    try:
        return RunSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, [_problem_from(err, lines) for err in exc.errors()]) from None


def _compose(raw: bytes | str, source: str) -> yaml.Node | None:
    try:
        # Aliases are refused before composing: expanding them is how "billion laughs" bombs work.
        for event in yaml.parse(raw, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                line = event.start_mark.line + 1
                hint = "write the value out instead of referring to an anchor"
                raise SpecError(source, [Problem("", "YAML aliases (*name) are not allowed", line, hint)])
        return yaml.compose(raw, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise SpecError(source, [Problem("", f"not valid YAML: {reason}", line)]) from None


def _to_python(node: yaml.Node, path: tuple, lines: dict, source: str) -> Any:
    """Build plain Python values from the node tree, recording each path's line.

    Working on nodes (not on yaml.safe_load's output) is what lets us reject duplicate keys and
    custom tags, and report line numbers for every error.
    """
    lines[path] = node.start_mark.line + 1
    if node.tag not in _STANDARD_TAGS:
        raise SpecError(
            source,
            [
                Problem(
                    _dotted(path),
                    f"YAML tag {node.tag!r} is not allowed",
                    lines[path],
                    "remove the tag; specs hold plain values only",
                )
            ],
        )
    if isinstance(node, yaml.MappingNode):
        return _mapping(node, path, lines, source)
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*path, i), lines, source) for i, item in enumerate(node.value)]
    return yaml.SafeLoader(b"").construct_object(node)


def _mapping(node: yaml.MappingNode, path: tuple, lines: dict, source: str) -> dict:
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            raise SpecError(
                source,
                [
                    Problem(
                        _dotted(path),
                        "YAML merge keys (<<) are not allowed",
                        key_node.start_mark.line + 1,
                        "write the keys out",
                    )
                ],
            )
        key = _to_python(key_node, (*path, "<key>"), lines, source)
        if key in result:
            raise SpecError(
                source,
                [
                    Problem(
                        _dotted((*path, key)),
                        "this key appears twice",
                        key_node.start_mark.line + 1,
                        f"keep one `{key}` (the first is on line {lines[(*path, key)]})",
                    )
                ],
            )
        result[key] = _to_python(value_node, (*path, key), lines, source)
        lines[(*path, key)] = key_node.start_mark.line + 1
    return result


def _problem_from(err: dict, lines: dict) -> Problem:
    loc = tuple(part for part in err["loc"] if not str(part).startswith("function-after"))
    line = _nearest_line(loc, lines)
    path = _dotted(loc)
    if err["type"] == "extra_forbidden":
        return Problem(path, "unknown key", line, _did_you_mean(loc))
    message = err["msg"].removeprefix("Value error, ")
    hint = None
    if "; hint: " in message:
        message, hint = message.split("; hint: ", 1)
    if err["type"].endswith("_type") and "input" in err:
        message = f"{message} (got {type(err['input']).__name__} {err['input']!r})"
    return Problem(path, message, line, hint)


def _did_you_mean(loc: tuple) -> str:
    section = _model_at(loc[:-1])
    known = sorted(section.model_fields) if section else []
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    if close:
        return f"did you mean `{close[0]}`?"
    return f"allowed keys here: {', '.join(known)}" if known else "remove this key"


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = RunSpec
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _nearest_line(loc: tuple, lines: dict) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)
