"""Modules a library imports on a path this project never takes, whose import alone costs seconds of
every rank's start-up: kept out (the import fails, as if the module were absent) or stood in for (a
light module in its place).

    with kept_out("mlflow"):
        import deepspeed          # its autotuner's `import mlflow` raises ImportError, as if absent

    stand_in("pkg.heavy", Thing=type("Thing", (), {}))   # `from pkg.heavy import Thing` gets this one
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator


@contextlib.contextmanager
def kept_out(*modules: str) -> Iterator[None]:
    """Within the block ``import`` of each of ``modules`` raises ImportError, unless it was imported
    already (then it is left as it is); afterwards they can be imported again."""
    blocked = [name for name in modules if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def stand_in(module: str, **attributes) -> None:
    """From now on ``module`` is a light module holding only ``attributes``, unless the real one was
    imported already (then it stays). For a module a library imports only to ask whether an object is
    of a class this project never uses."""
    if module not in sys.modules:
        light = types.ModuleType(module, "a stand-in: the real module is not used by this project")
        light.__dict__.update(attributes)
        sys.modules[module] = light
