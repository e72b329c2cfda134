"""How a job reaches compute. A launcher knows nothing of training; the worker nothing of launchers."""

from launchers.base import JobHandle, JobState, Launcher, get_launcher

__all__ = ["JobHandle", "JobState", "Launcher", "get_launcher"]
