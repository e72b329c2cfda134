"""Train GPT-style language models from one YAML spec.

Ray schedules the job, DeepSpeed ZeRO trains it, MLflow tracks it and the reporter rebuilds the
documented artifacts from MLflow alone. Start with ``orchestrator submit configs/quickstart.yaml``.
"""

__version__ = "0.1.0"
