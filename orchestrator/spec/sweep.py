"""The ``sweep`` section: a search space over spec fields, for ``orchestrator sweep``.

Each key of ``parameters`` is a dotted path to a spec field, and its value one search space:
``choice`` (sampled values), ``grid`` (every value, once per sample), ``uniform``/``loguniform``
(a float between two bounds) or ``randint`` (a whole number between two bounds, both included).
A trial is the spec with the sampled values applied, exactly as ``--set path=value`` would.

Paths and values are checked against the spec before anything runs (``orchestrator.spec.checks``):
an unknown path gets a did-you-mean, and the values a trial may get are applied to the spec and
validated with its own field bounds and cross-field checks: every choice and grid value, every whole
number of a ``randint`` range of up to 4,096 values (of a larger one the 2,048 nearest each bound),
both bounds of a ``uniform``/``loguniform`` range and the value midway between them (``coverage``
says which values were checked and which were not; a trial checks its own values as it starts).

>>> from orchestrator.spec import parse_spec
>>> spec = parse_spec("name: x\\nsweep: {parameters: {optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}}}")
>>> spec.sweep.parameters["optimizer.lr"].kind, spec.sweep.trial_count
('loguniform', 1)
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Literal, get_origin

from pydantic import ConfigDict, Field, JsonValue, model_serializer, model_validator

from orchestrator.spec.section import Section as _Section

DOMAIN_KINDS = ("choice", "grid", "uniform", "loguniform", "randint")
# Spec fields the sweep sets for each trial itself (its run name and directory, where it is tracked
# and where it runs): a search over them would break the sweep, not tune the model.
SWEEP_OWNED_PATHS = {
    "name": "the sweep's name names its runs",
    "sweep": "a sweep cannot search its own settings",
    "tracking.run_name": "each trial's run is named after the sweep and the trial",
    "tracking.uri": "every trial is tracked where the sweep is",
    "tracking.experiment": "every trial is tracked in the sweep's experiment",
    "checkpoint.dir": "each trial writes into the sweep's directory",
    "cluster.backend": "every trial runs where the sweep runs",
    "cluster.address": "every trial runs where the sweep runs",
    "cluster.host": "every trial runs where the sweep runs",
}


class SearchSpace(_Section):
    """One parameter's search space: exactly one of the keys."""

    # merged with Section's config; tells editors that exactly one key belongs here
    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})

    choice: list[JsonValue] | None = Field(
        None, min_length=1, description="Values sampled with equal probability, e.g. [16, 32, 64]."
    )
    grid: list[JsonValue] | None = Field(
        None, min_length=1, description="Values each tried once per sample (all combinations of grids)."
    )
    uniform: list[float] | None = Field(
        None, min_length=2, max_length=2, description="[low, high]: a float sampled uniformly."
    )
    loguniform: list[float] | None = Field(
        None, min_length=2, max_length=2, description="[low, high], low > 0: a float, uniform in log space."
    )
    randint: list[int] | None = Field(
        None, min_length=2, max_length=2, description="[low, high]: a whole number, both bounds included."
    )

    @model_validator(mode="before")
    @classmethod
    def _one_known_kind(cls, data: Any) -> Any:
        """Catch a misspelled or missing kind here, with a did-you-mean, before pydantic's own errors."""
        if not isinstance(data, dict):
            return data
        unknown = [key for key in data if key not in DOMAIN_KINDS]
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), DOMAIN_KINDS, n=1, cutoff=0.5)
            guess = f"did you mean `{close[0]}`? " if close else ""
            raise ValueError(
                f"`{unknown[0]}` is not a search space; {guess}use one of {', '.join(DOMAIN_KINDS)}"
            )
        if len(data) != 1:
            given = ", ".join(data) or "none"
            raise ValueError(f"give exactly one of {', '.join(DOMAIN_KINDS)} (given: {given})")
        return data

    @model_validator(mode="after")
    def _bounds_in_order(self) -> SearchSpace:
        if self.kind in ("uniform", "loguniform", "randint"):
            low, high = self.bounds
            if not low < high:
                raise ValueError(f"{self.kind}: low ({low}) must be below high ({high})")
            if self.kind == "loguniform" and low <= 0:
                raise ValueError(f"loguniform: low ({low}) must be above 0")
        return self

    @model_serializer
    def _only_the_kind(self) -> dict[str, Any]:
        return {self.kind: getattr(self, self.kind)}

    @property
    def kind(self) -> str:
        return next(kind for kind in DOMAIN_KINDS if getattr(self, kind) is not None)

    @property
    def values(self) -> list:
        """The values a choice or grid may take, or the two bounds of a range."""
        return list(getattr(self, self.kind))

    @property
    def bounds(self) -> tuple:
        low, high = getattr(self, self.kind)
        return low, high

    def describe(self) -> str:
        if self.kind in ("choice", "grid"):
            return f"{self.kind} {self.values}"
        low, high = self.bounds
        return f"{self.kind} [{low:g}, {high:g}]"


class AshaSpec(_Section):
    """Asynchronous successive halving: at each rung (grace_period x reduction_factor^k steps) a
    trial goes on only if its metric is in the best 1/reduction_factor of the trials seen there."""

    grace_period: int | None = Field(
        None, ge=1, description="Steps a trial trains before it may be stopped; default: train.eval_interval"
    )
    reduction_factor: int = Field(2, ge=2, le=16, description="Keep the best 1/reduction_factor per rung.")


class SweepSpec(_Section):
    """A hyperparameter search over this spec, run by ``orchestrator sweep`` on Ray Tune."""

    parameters: dict[str, SearchSpace] = Field(
        {},
        description="Dotted spec paths to search spaces, e.g. {optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}, "
        "train.micro_batch_size: {choice: [4, 8]}}. Empty: no sweep.",
    )
    metric: Literal["val_loss", "val_perplexity", "val_accuracy"] = Field(
        "val_loss", description="The evaluation metric trials are compared (and stopped) on."
    )
    mode: Literal["min", "max"] | None = Field(
        None, description="Whether lower or higher is better; default: max for val_accuracy, else min."
    )
    num_samples: int = Field(
        1,
        ge=1,
        le=10000,
        description="Trials sampled (random, optuna); with grid values, each sample runs every grid "
        "point, so trials = num_samples x the grid's size.",
    )
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="Trials training at once; default: as many as the cluster can place."
    )
    search: Literal["random", "grid", "optuna"] = Field(
        "random",
        description="random: sample each space; grid: every combination of grid values; optuna: Optuna's "
        "TPE sampler (needs the optuna package).",
    )
    scheduler: Literal["none", "asha"] = Field(
        "none", description="asha: stop trials early whose metric trails the others' (see asha)."
    )
    asha: AshaSpec = AshaSpec()
    seed: int | None = Field(None, description="Seed of the sampler, for a repeatable search.")

    @property
    def enabled(self) -> bool:
        return bool(self.parameters)

    @property
    def direction(self) -> str:
        """``min`` or ``max``: the given mode, or the metric's natural direction."""
        return self.mode or ("max" if self.metric == "val_accuracy" else "min")

    @property
    def grid_size(self) -> int:
        return math.prod(len(s.values) for s in self.parameters.values() if s.kind == "grid")

    @property
    def trial_count(self) -> int:
        return self.num_samples * self.grid_size


def path_problem(path: str) -> tuple[str, str] | None:
    """(what is wrong, hint) when ``path`` names no spec field a sweep may set; None when it does."""
    from pydantic import BaseModel

    from orchestrator.spec.loader import _closest_key  # the loader's did-you-mean for keys
    from orchestrator.spec.models import RunSpec

    owned = next((p for p in SWEEP_OWNED_PATHS if path == p or path.startswith(p + ".")), None)
    if owned:
        hint = "search model, data, optimizer, schedule or train fields"
        return f"cannot be searched: {SWEEP_OWNED_PATHS[owned]}", hint
    parts = path.split(".")
    model: type[BaseModel] = RunSpec
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "the spec"
        known = sorted(model.model_fields)
        if part not in model.model_fields:
            guess = _closest_key(part, known)
            if not guess:
                return f"`{part}` is not a field of {where}", f"fields: {', '.join(known)}"
            corrected = ".".join([*parts[:i], guess, *parts[i + 1 :]])
            suggestion = corrected if path_problem(corrected) is None else ".".join([*parts[:i], guess])
            return f"`{part}` is not a field of {where}", f"did you mean `{suggestion}`?"
        annotation = model.model_fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        field = ".".join(parts[: i + 1])
        if i + 1 < len(parts) and get_origin(annotation) is not dict:
            return f"`{field}` is a value, not a section", f"search `{field}` itself"
        return None
    first = sorted(model.model_fields)[0]
    return f"`{path}` is a section, not a value", f"name one of its fields, e.g. {path}.{first}"


def probe_values(space: SearchSpace) -> list[tuple[str, Any]]:
    """(label, value) for every value a trial may get that is checked before the sweep runs: each
    choice or grid value; every whole number of an integer range of up to MAX_PROBED values, else
    the MAX_PROBED // 2 nearest each bound; both bounds of a float range and the value midway
    between them (geometrically for loguniform), where a check that is not an interval would show.
    ``coverage`` says the same in words, with what is left unchecked."""
    if space.kind in ("choice", "grid"):
        return [(f"{space.kind} value", value) for value in space.values]
    low, high = space.bounds
    if space.kind == "randint":
        return [(f"{space.kind} value", value) for value in _probed_integers(int(low), int(high))]
    return [
        (f"{space.kind} low bound", low),
        (f"{space.kind} high bound", high),
        (f"{space.kind} value", _midway(space)),
    ]


# Whole-number ranges up to this size are checked value by value (each check validates the spec, in
# about 0.2 ms); of a larger range, the MAX_PROBED // 2 values nearest each bound.
MAX_PROBED = 4096


def _probed_integers(low: int, high: int) -> list[int]:
    if high - low + 1 <= MAX_PROBED:
        return list(range(low, high + 1))
    half = MAX_PROBED // 2
    return [*range(low, low + half), *range(high - half + 1, high + 1)]


def _midway(space: SearchSpace) -> float:
    low, high = space.bounds
    return math.sqrt(low * high) if space.kind == "loguniform" else (low + high) / 2


def coverage(space: SearchSpace) -> str:
    """Which of the values a trial may get were checked before the sweep ran, and which were not
    (a trial validates its own spec when it starts: a value refused then fails that trial only).

    >>> coverage(SearchSpace(randint=[1, 8]))
    'checked: all 8 values'
    >>> coverage(SearchSpace(uniform=[0.0, 0.5])).split(";")[0]
    'checked: both bounds and 0.25'
    """
    if space.kind in ("choice", "grid"):
        return f"checked: all {len(space.values):,} values"
    low, high = (int(bound) for bound in space.bounds) if space.kind == "randint" else space.bounds
    if space.kind != "randint":
        return (
            f"checked: both bounds and {_midway(space):g}; not checked: values strictly between the "
            "bounds (every float field of the spec is checked against bounds and other fields, which "
            "holds on intervals)"
        )
    size = high - low + 1
    if size <= MAX_PROBED:
        return f"checked: all {size:,} values"
    half = MAX_PROBED // 2
    first_gap, last_gap = low + half, high - half
    return (
        f"checked: every value from {low:,} to {first_gap - 1:,} and from {last_gap + 1:,} to {high:,}; "
        f"not checked: the {last_gap - first_gap + 1:,} values from {first_gap:,} to {last_gap:,} (a trial "
        "that draws a refused one fails with the reason)"
    )


def problems_with_values(sections: dict[str, Any], values: dict[str, Any]) -> list[tuple[str, str]]:
    """(what is wrong, hint) for the spec (given as its validated sections) with each dotted path of
    ``values`` set to its value: the fields' own bounds and types first, then the cross-field checks."""
    from pydantic import BaseModel, ValidationError

    from orchestrator.spec.checks import run_checks
    from orchestrator.spec.models import DEFER_CHECKS, RunSpec

    data = {
        name: section.model_dump() if isinstance(section, BaseModel) else section
        for name, section in sections.items()
        if name != "sweep"
    }
    for path, value in values.items():
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        trial = RunSpec.model_validate(data, context={DEFER_CHECKS: True})
    except ValidationError as exc:
        return [(_error_text(err), _hint_for(err, values)) for err in exc.errors()]
    found = run_checks({name: getattr(trial, name) for name in RunSpec.model_fields})
    return [(f"{f.path}: {f.message}", f.hint) for f in found]


def _error_text(err: dict) -> str:
    where = ".".join(str(part) for part in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


def _hint_for(err: dict, values: dict[str, Any]) -> str:
    if err["type"] == "int_type" and isinstance(err.get("input"), float):
        return "use randint (or choice of whole numbers) for a whole-number field"
    return "keep every value within the field's bounds (see orchestrator/spec/models.py)"
