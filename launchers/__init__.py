"""How a job reaches compute: the launcher protocol and registry (``base``) and the built-in backends
(``ray_local``, ``ray_job``), registered as entry points of the group ``gpt_orchestrator.launchers``.

A launcher knows nothing of training beyond the worker entry it starts; the worker knows nothing of
launchers. May import: everything in ``orchestrator`` but the CLI.
"""

from launchers.base import (
    JobHandle,
    JobState,
    Launcher,
    launcher_class,
    launcher_for_record,
    launcher_for_spec,
)

__all__ = ["JobHandle", "JobState", "Launcher", "launcher_class", "launcher_for_record", "launcher_for_spec"]
