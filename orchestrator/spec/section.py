"""The base of every spec section (strict, frozen, no unknown keys), and the marker of the fields
where a `${env:NAME}` reference may stand."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class MayHoldReferences:
    """Field metadata (``Annotated[str | None, MAY_REFER]``): a `${env:NAME}` reference may stand in
    this field, because its value is a credential or a URI or path that may carry one. Such a value
    is stored and shown with the reference in place of the secret, and never becomes a name. Every
    other field refuses references (the loader checks), since what it holds is stored or shown as
    it is: an experiment name, a run's directory, a tag, a label."""

    def __repr__(self) -> str:
        return "MAY_REFER"


MAY_REFER = MayHoldReferences()


class Section(BaseModel):
    # strict: "3" is not 3, a typo is an error rather than an ignored key, and NaN/inf are refused.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
