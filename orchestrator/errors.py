"""The project's errors: one root, one subclass per stage, each knowing its exit code.

The command line prints an ``OrchestratorError`` as its message (no traceback) and exits with
``exit_code``: 2 when the input is wrong (a spec, an argument, a resume that cannot continue as
asked), 1 when something the input named failed or was not found (a job, a run, a server).

>>> raise PlanError("the training split has 3 sequences; hint: lower train.micro_batch_size")
Traceback (most recent call last):
...
orchestrator.errors.PlanError: the training split has 3 sequences; hint: lower train.micro_batch_size
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # the shell's convention for a command ended by Ctrl-C or SIGTERM


class OrchestratorError(Exception):
    """Something a person must act on; ``str(error)`` says what, where and what to do."""

    exit_code = EXIT_FAILED

    def render(self) -> str:
        return f"error: {self}"


class UsageError(OrchestratorError):
    """The input (an argument, a file path, a requested change) is wrong."""

    exit_code = EXIT_USAGE


class PlanError(UsageError):
    """The spec is valid on its own but cannot run as asked (with a hint)."""


class NotRunnableHere(PlanError):
    """The spec is fine, but this machine lacks what it needs (GPUs, the data files).

    `validate` reports it as a note, since a spec is often written on one machine for another;
    `plan` and `submit` refuse to go on."""


class ResumeError(UsageError):
    """A run exists but cannot be continued as asked (with what to do instead)."""


class UntrustedInput(UsageError):
    """A file this tool refuses to read: a checkpoint holding more than data (loading it would run
    code), or one outside the directory where its run keeps its files."""


class NotFoundError(OrchestratorError):
    """A run, a job, a checkpoint or a store that was named does not exist (or not there)."""


class LaunchError(OrchestratorError):
    """The backend could not be reached or refused the request (with what to do about it)."""


class TrackingError(OrchestratorError):
    """The tracking store could not be read or written."""
