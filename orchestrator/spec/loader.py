"""Strict, safe YAML loading with line numbers, overrides, environment references, and errors
that point at the fix.

>>> spec = load_spec("configs/quickstart.yaml", overrides=["train.epochs=1"])  # doctest: +SKIP
>>> spec.train.epochs  # doctest: +SKIP
1

Every problem found is reported at once: YAML-level ones (duplicate keys, tags, aliases) and then
the model's (unknown keys, wrong types, bounds, cross-field checks), each with where it is
(``file:line`` or the ``--set`` that caused it), the dotted path, what is wrong and a hint.
"""

from __future__ import annotations

import codecs
import difflib
import os
import re
import stat
import typing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from orchestrator.errors import UsageError
from orchestrator.masking import has_literal_password, mask_values
from orchestrator.spec.checks import Finding, run_checks
from orchestrator.spec.models import DEFER_CHECKS, RunSpec
from orchestrator.spec.section import MayHoldReferences
from orchestrator.text import first_line

MAX_SPEC_BYTES = 256 * 1024
# Fields that hold a credential: only `${env:NAME}` references are accepted there.
CREDENTIAL_FIELDS = ("storage.access_key_id", "storage.secret_access_key")
# Deeper nesting has no use in a run spec; bounding it before parsing keeps PyYAML (quadratic in
# flow nesting, recursive when composing) fast and out of RecursionError.
MAX_NESTING = 64
# A secret shorter than this would be masked inside ordinary words of the output.
MIN_SECRET_LENGTH = 8
_STANDARD_TAGS = {
    "tag:yaml.org,2002:" + name for name in ("map", "seq", "str", "int", "float", "bool", "null", "timestamp")
}
_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where, what, and what to do."""

    path: str
    message: str
    line: int | None = None
    hint: str | None = None
    override: str | None = None  # the `--set` text, when the value came from the command line

    def render(self, source: str) -> str:
        if self.override:
            where = f"--set {self.override}"
        else:
            where = f"{source}:{self.line}" if self.line else source
        text = f"{where} {self.path or '<root>'}: {self.message}"
        return f"{text}\n    hint: {self.hint}" if self.hint else text


class SpecError(UsageError):
    """Raised with every problem of a spec at once; the CLI prints it and exits with code 2."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        count = len(self.problems)
        head = f"{self.source}: {count} problem{'s' if count != 1 else ''} in the run spec"
        return "\n".join([head, *(p.render(self.source) for p in self.problems)])


def load_spec(path: str | Path, overrides: list[str] = ()) -> RunSpec:
    """Read, parse and validate a spec file; raise SpecError naming every problem."""
    return parse_spec(read_spec_file(path), str(path), overrides)


def read_spec_file(path: str | Path) -> bytes:
    """The bytes of a spec file, read once: a regular file, at most MAX_SPEC_BYTES (+1, so that a
    larger one is named as such). A FIFO, a device (/dev/zero) or a directory is refused at once."""
    hint = "check the path; shipped specs live in configs/"
    try:
        # O_NONBLOCK: opening a FIFO would otherwise wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = getattr(exc, "strerror", None) or str(exc)
        raise SpecError(str(path), [Problem("", f"cannot read the file ({reason})", hint=hint)]) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        what = "is not a regular file (a directory, a pipe or a device)"
        raise SpecError(str(path), [Problem("", what, hint=hint)])
    with os.fdopen(fd, "rb") as handle:
        return handle.read(MAX_SPEC_BYTES + 1)


def parse_spec(raw: bytes | str, source: str = "<spec>", overrides: list[str] = ()) -> RunSpec:
    """Validate YAML text (plus `a.b=value` overrides) into a RunSpec."""
    reader = _Reader(source)
    data = reader.document(raw)
    for text in overrides:
        reader.apply_override(data, text)
    reader.secret_refs = reader.resolve_env(data)
    reader.require_references(data, CREDENTIAL_FIELDS)
    reader.raise_if_any()
    spec, sections = _validate(data, reader)
    reader.problems.extend(reader.problem_from_finding(f) for f in run_checks(sections))
    reader.raise_if_any()
    spec._secret_refs.update(reader.secret_refs)
    spec._secret_env.update(reader.secret_env)
    return spec


def _validate(data: dict, reader: _Reader) -> tuple[RunSpec | None, dict[str, Any]]:
    """The spec (None if a field is wrong) and every section that is valid on its own, so that the
    cross-field checks of the valid sections still run when others have field errors."""
    try:
        spec = RunSpec.model_validate(data, context={DEFER_CHECKS: True})
        return spec, {name: getattr(spec, name) for name in RunSpec.model_fields}
    except ValidationError as exc:
        errors = exc.errors()
    reader.problems.extend(reader.problem_from(err) for err in errors)
    failed = {err["loc"][0] for err in errors if err["loc"]}
    sections: dict[str, Any] = {}
    for name, field in RunSpec.model_fields.items():
        model = field.annotation
        if name in failed or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        sections[name] = model.model_validate(data.get(name, {}))
    return None, sections


class _Reader:
    """Builds plain Python data from YAML nodes, remembering each path's origin."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[Problem] = []
        self.lines: dict[tuple, int] = {}
        self.overrides: dict[tuple, str] = {}
        self.secret_env: dict[str, str] = {}  # NAME -> value of each `${env:NAME}` resolved
        self.secret_refs: dict[str, str] = {}  # dotted path -> the text with references it was read from

    def raise_if_any(self) -> None:
        if self.problems:  # in the order of the file; `--set` problems after the file's
            ordered = sorted(self.problems, key=lambda p: (p.override is not None, p.line or 0))
            raise SpecError(self.source, [self._masked(p) for p in ordered])

    def fail(self, problem: Problem) -> None:
        self.problems.append(problem)
        raise SpecError(self.source, [self._masked(p) for p in self.problems])

    def _masked(self, problem: Problem) -> Problem:
        """A problem that cannot show a resolved secret (a check may quote the value it read)."""
        secrets = self.secret_env.values()
        hint = mask_values(problem.hint, secrets) if problem.hint else problem.hint
        return replace(problem, message=mask_values(problem.message, secrets), hint=hint)

    def document(self, raw: bytes | str) -> dict:
        if len(raw) > MAX_SPEC_BYTES:
            self.fail(Problem("", f"the file is over {MAX_SPEC_BYTES} bytes; a run spec is at most that"))
        node = self._compose(self._text(raw))
        data = self._value(node, ()) if node is not None else None
        if not isinstance(data, dict):
            self.fail(
                Problem(
                    "",
                    "the spec must be a YAML mapping (key: value lines)",
                    1,
                    "start from configs/quickstart.yaml",
                )
            )
        return data

    def _text(self, raw: bytes | str) -> str:
        """UTF-8 (or UTF-16/32 with a byte-order mark), as YAML allows; else a problem with its line."""
        if isinstance(raw, str):
            return raw
        boms = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))  # fmt: skip
        encoding = next((name for bom, name in boms if raw.startswith(bom)), "utf-8-sig")
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1 if encoding == "utf-8-sig" else None
            self.fail(
                Problem(
                    "",
                    f"is not {encoding.removesuffix('-sig').upper()} text ({exc.reason})",
                    line,
                    "save the file as UTF-8",
                )
            )
        return ""

    def _compose(self, text: str, origin: str | None = None) -> yaml.Node | None:
        line = _flow_nesting_over_limit(text)
        if line:
            self.fail(_too_deep(line, origin))
        try:
            depth = 0
            # Aliases are refused before composing: expanding them is how "billion laughs" bombs work.
            for event in yaml.parse(text, Loader=yaml.SafeLoader):
                if isinstance(event, yaml.AliasEvent):
                    self.fail(
                        Problem(
                            "",
                            "YAML aliases (*name) are not allowed",
                            event.start_mark.line + 1,
                            "write the value out instead of referring to an anchor",
                            origin,
                        )
                    )
                if isinstance(event, yaml.CollectionStartEvent):
                    depth += 1
                elif isinstance(event, yaml.CollectionEndEvent):
                    depth -= 1
                if depth > MAX_NESTING:
                    self.fail(_too_deep(event.start_mark.line + 1, origin))
            return yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            self.fail(
                Problem(
                    "",
                    f"not valid YAML: {_yaml_reason(exc)}",
                    _yaml_line(exc, text),
                    "check indentation and quoting around this line",
                    origin,
                )
            )
        return None

    def _value(self, node: yaml.Node, path: tuple) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if node.tag not in _STANDARD_TAGS:
            self.problems.append(
                Problem(
                    _dotted(path),
                    f"YAML tag {node.tag!r} is not allowed",
                    node.start_mark.line + 1,
                    "remove the tag; specs hold plain values only",
                )
            )
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self._value(item, (*path, i)) for i, item in enumerate(node.value)]
        try:
            value = yaml.SafeLoader("").construct_object(node)
            if isinstance(value, str):
                value.encode("utf-8")  # an escaped lone surrogate ("\ud800") is no text
            return value
        except UnicodeEncodeError:
            self.problems.append(
                Problem(
                    _dotted(path),
                    "holds an escaped lone surrogate (\\ud800-\\udfff), which is not text",
                    node.start_mark.line + 1,
                    "write the character itself, or a pair of surrogates for one character",
                )
            )
            return None
        except (ValueError, OverflowError, yaml.YAMLError) as exc:  # 5000 digits, month 13, ...
            shown = node.value if len(node.value) <= 40 else node.value[:40] + "..."
            self.problems.append(
                Problem(
                    _dotted(path),
                    f"cannot read {shown!r} as a {node.tag.rsplit(':', 1)[-1]} ({first_line(exc, 120)})",
                    node.start_mark.line + 1,
                    "quote it to make it a string, or write a smaller number or a real date",
                )
            )
            return None

    def _mapping(self, node: yaml.MappingNode, path: tuple) -> dict:
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = self._value(key_node, (*path, "<key>"))
            if not isinstance(key, str):
                self.problems.append(
                    Problem(
                        _dotted(path),
                        f"key {key!r} is not a string",
                        line,
                        "quote the key or fix its spelling",
                    )
                )
                continue
            if key in result:
                first = self.lines[(*path, key)]
                self.problems.append(
                    Problem(
                        _dotted((*path, key)),
                        "this key appears twice",
                        line,
                        f"keep one `{key}` (the other is on line {first})",
                    )
                )
                continue
            self.lines[(*path, key)] = line
            result[key] = self._value(value_node, (*path, key))
        return result

    def apply_override(self, data: dict, text: str) -> None:
        """`a.b=value`: value is read as YAML (so `3` is a number and `"3"` a string)."""
        dotted, sep, raw = text.partition("=")
        path = tuple(dotted.strip().split("."))
        if not sep or not all(path):
            self.problems.append(
                Problem(
                    dotted,
                    "an override must look like `section.key=value`",
                    hint="for example --set train.epochs=3",
                    override=text,
                )
            )
            return
        node = self._compose(raw, origin=text) if raw.strip() else None
        value = self._value(node, path) if node is not None else None
        target = data
        for i, part in enumerate(path[:-1]):
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                self.problems.append(
                    Problem(_dotted(path[: i + 1]), "is not a section, cannot set a key in it", override=text)
                )
                return
        target[path[-1]] = value
        for key in [k for k in self.lines if k[: len(path)] == path]:
            del self.lines[key]
        self.overrides[path] = text

    def require_references(self, data: dict, paths: tuple[str, ...]) -> None:
        """Credentials are written as `${env:NAME}` only: a literal one would be stored with the run's
        spec and shown wherever the spec is."""
        for dotted in paths:
            node: Any = data
            for part in dotted.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None and dotted not in self.secret_refs:
                path = tuple(dotted.split("."))
                self.problems.append(
                    Problem(
                        dotted,
                        "a credential must be an environment reference, not the value itself",
                        self.lines.get(path),
                        f'write {path[-1]}: "${{env:NAME}}" and export NAME, or leave it out to use '
                        f"the standard AWS_{path[-1].upper()} variable",
                        self.overrides.get(path),
                    )
                )

    def resolve_env(self, data: Any, path: tuple = ()) -> dict[str, str]:
        """Replace `${env:NAME}` in strings by the variable's value; return {dotted path: reference}.

        The references (never the values) are what the spec shows when printed or logged.
        """
        secrets: dict[str, str] = {}
        items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
        for key, value in list(items):
            if isinstance(value, (dict, list)):
                secrets.update(self.resolve_env(value, (*path, key)))
                continue
            if isinstance(value, str) and has_literal_password(value):
                self.problems.append(
                    self._at(
                        (*path, key),
                        "holds a password in plain text, which the run would store with its spec",
                        "write it as a reference, e.g. http://me:${env:MLFLOW_PASSWORD}@host, and "
                        "export MLFLOW_PASSWORD=...",
                    )
                )
            if isinstance(value, str) and _ENV_REF.search(value):
                if not may_hold_references((*path, key)):
                    self.problems.append(self._at((*path, key), *_REFERENCE_REFUSED))
                    continue
                data[key] = self._substitute(value, (*path, key))
                secrets[_dotted((*path, key))] = value
        return secrets

    def _substitute(self, value: str, path: tuple) -> str:
        def lookup(match: re.Match) -> str:
            name = match.group(1)
            secret = os.environ.get(name)
            if secret is None:
                self.problems.append(
                    self._at(
                        path,
                        f"environment variable {name} is not set",
                        f"export {name}=... before running, or write the value",
                    )
                )
            elif 0 < len(secret) < MIN_SECRET_LENGTH:
                self.problems.append(
                    self._at(
                        path,
                        f"environment variable {name} holds {len(secret)} characters: a `${{env:...}}` "
                        "reference is for secrets, which output masks, and one this short cannot be "
                        "masked without masking ordinary text",
                        f"use a secret of at least {MIN_SECRET_LENGTH} characters, or write a value "
                        "that is not secret in the spec (or with --set)",
                    )
                )
            elif secret:
                self.secret_env[name] = secret
            return secret or ""

        return _ENV_REF.sub(lookup, value)

    def _at(self, loc: tuple, message: str, hint: str | None = None) -> Problem:
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.overrides:
                return Problem(_dotted(loc), message, None, hint, self.overrides[loc[:end]])
            if loc[:end] in self.lines:
                return Problem(_dotted(loc), message, self.lines[loc[:end]], hint)
        return Problem(_dotted(loc), message, None, hint)

    def problem_from(self, err: dict) -> Problem:
        loc = tuple(part for part in err["loc"] if not str(part).startswith("function-after"))
        if err["type"] == "extra_forbidden":
            return self._at(loc, "unknown key", _did_you_mean(loc))
        if err["type"] == "missing":
            return self._at(loc, "is required", f"add `{loc[-1]}:` to the spec")
        message = err["msg"].removeprefix("Value error, ")
        hint = None
        shows_input = err["type"].endswith(("_type", "_parsing")) or err["type"] == "string_pattern_mismatch"
        if shows_input and "input" in err:
            shown = self.secret_refs.get(_dotted(loc), err["input"])  # a secret: as written
            message = f"{message} (got {_describe(shown)})"
            hint = _type_hint(err)
        return self._at(loc, message, hint)

    def problem_from_finding(self, finding: Finding) -> Problem:
        loc = tuple(int(p) if p.isdigit() else p for p in finding.path.split("."))
        return self._at(loc, finding.message, finding.hint)


def resolve_references(text: str) -> str:
    """A stored string with `${env:NAME}` references (a tag, a ticket) resolved from this environment."""
    missing = [name for name in _ENV_REF.findall(text) if name not in os.environ]
    if missing:
        raise UsageError(
            f"environment variable {missing[0]} is not set; hint: export {missing[0]}=... (the run "
            "stores the reference, never the value)"
        )
    return _ENV_REF.sub(lambda match: os.environ[match.group(1)], text)


def may_hold_references(loc: tuple) -> bool:
    """Whether a `${env:...}` reference may stand at ``loc``: its field, or a field above it, is
    marked MAY_REFER (a credential, or a URI or path that may carry one). A path the spec does not
    know is left to the model, which names it as an unknown key."""
    model, parts = RunSpec, [str(p) for p in loc]
    while parts:
        field = model.model_fields.get(parts.pop(0))
        if field is None:
            return True
        if any(isinstance(meta, MayHoldReferences) for meta in field.metadata):
            return True
        inner = [a for a in typing.get_args(field.annotation) if _is_section(a)]
        if _is_section(field.annotation):
            model = field.annotation
        elif inner and typing.get_origin(field.annotation) in (list, dict) and parts:
            parts.pop(0)  # the item's index or key
            model = inner[0]
        else:
            return False
    return False


def referable_fields(model: type[BaseModel] = RunSpec, prefix: str = "") -> list[str]:
    """The dotted paths of the fields marked MAY_REFER."""
    found = []
    for name, field in model.model_fields.items():
        if any(isinstance(meta, MayHoldReferences) for meta in field.metadata):
            found.append(prefix + name)
        elif _is_section(field.annotation):
            found += referable_fields(field.annotation, f"{prefix}{name}.")
    return found


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


_REFERENCE_REFUSED = (
    "holds a `${env:...}` reference, but references are only for credentials and the URIs and paths "
    f"that carry them ({', '.join(referable_fields())}): what this field holds is stored or shown as "
    "it is (a name, a directory, a tag, a label), so the secret would be too",
    "write the value itself here (or with --set), not a reference",
)


def _flow_nesting_over_limit(text: str) -> int | None:
    """The line where `[` and `{` nest deeper than MAX_NESTING, counted without parsing (quotes and
    comments included, so it can only over-count: a real spec is nowhere near the limit)."""
    depth = 0
    for match in re.finditer(r"[\[\]{}]", text):
        depth = depth + 1 if match.group() in "[{" else max(0, depth - 1)
        if depth > MAX_NESTING:
            return text.count("\n", 0, match.start()) + 1
    return None


def _too_deep(line: int, origin: str | None) -> Problem:
    return Problem(
        "",
        f"nests deeper than {MAX_NESTING} levels",
        line,
        "a run spec needs a few levels of nesting: look for unclosed [ or { and runaway indentation",
        origin,
    )


def _yaml_reason(exc: yaml.YAMLError) -> str:
    return getattr(exc, "problem", None) or getattr(exc, "reason", None) or first_line(exc)


def _yaml_line(exc: yaml.YAMLError, text: str) -> int | None:
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        return mark.line + 1
    position = getattr(exc, "position", None)  # a ReaderError: a character YAML does not allow
    return text.count("\n", 0, position) + 1 if isinstance(position, int) else None


def _describe(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return type(value).__name__
    return f"{type(value).__name__} {value!r}"


def _type_hint(err: dict) -> str | None:
    value = err.get("input")
    if not isinstance(value, str) or err["type"] not in ("int_type", "float_type", "bool_type"):
        return None
    if value.lower() in ("true", "false") or _is_number(value):
        return "remove the quotes: a quoted value is a string"
    return f"write a {err['type'].removesuffix('_type').replace('int', 'whole number')}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _did_you_mean(loc: tuple) -> str:
    section = _model_at(loc[:-1])
    known = sorted(section.model_fields) if section else []
    guess = _closest_key(str(loc[-1]), known)
    if guess:
        return f"did you mean `{guess}`?"
    return f"allowed keys here: {', '.join(known)}" if known else "remove this key"


def _closest_key(typo: str, known: list[str]) -> str | None:
    """A spelling slip (`warmup_step`), a shortened or longer name (`zero`, `micro_batch`), or the
    long form of an abbreviation (`learning_rate` for `lr`)."""
    close = difflib.get_close_matches(typo, known, n=1, cutoff=0.6)
    if close:
        return close[0]
    words = set(typo.lower().split("_"))
    initials = "".join(w[0] for w in typo.lower().split("_") if w)
    for key in known:
        if key == initials or words & set(key.split("_")) or key.startswith(typo) or typo.startswith(key):
            return key
    return None


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = RunSpec
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)
