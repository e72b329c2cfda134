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

from pydantic import Field

from orchestrator.spec.section import Section as _Section

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
