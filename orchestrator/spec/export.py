"""The ``export:`` section of a run spec: what a finished run hands over, and in which formats.

```yaml
export:
  formats: [hf, mlflow]          # hf | mlflow | safetensors; empty (the default): no export
  register_name: quickstart-gpt  # mlflow: a new version of this registered model
  checkpoint: best               # best | latest
  dtype: fp32                    # fp32 | bf16 (hf, safetensors)
```
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from orchestrator.spec.models import CrossFieldError, _Section

EXPORT_FORMATS = ("hf", "mlflow", "safetensors")


class ExportSpec(_Section):
    formats: list[Literal["hf", "mlflow", "safetensors"]] = Field(
        [],
        description="hf: a Hugging Face GPT-2 directory; mlflow: that model logged to the run (and "
        "registered with register_name); safetensors: the weights and the model spec. Empty: none.",
    )
    register_name: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="With format mlflow: register the model as a new version of this MLflow model.",
    )
    checkpoint: Literal["best", "latest"] = Field(
        "best", description="Which complete checkpoint to export: best evaluation, or the newest."
    )
    dtype: Literal["fp32", "bf16"] = Field("fp32", description="Weight precision of hf and safetensors.")

    @model_validator(mode="after")
    def _formats_once_and_register_with_mlflow(self) -> ExportSpec:
        repeated = sorted({f for f in self.formats if self.formats.count(f) > 1})
        if repeated:
            raise CrossFieldError("formats", f"{', '.join(repeated)} listed twice", "list each format once")
        if self.register_name is not None and "mlflow" not in self.formats:
            raise CrossFieldError(
                "register_name",
                "registering needs the model logged to MLflow",
                "add mlflow to formats, or drop register_name",
            )
        return self
