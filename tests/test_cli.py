"""The command line: help with examples everywhere, and the fast paths stay light."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import orchestrator.cli
from orchestrator.cli_parser import build_parser
from tests.conftest import REPO, run_cli


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser(orchestrator.cli)
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_command_has_help_with_an_example(name):
    text = _subcommands()[name].format_help()
    assert "example: orchestrator " + name in text


def test_top_level_help_lists_the_commands():
    result = run_cli("--help", cwd=REPO)
    assert result.returncode == 0
    for name in ("submit", "validate", "plan", "schema", "report"):
        assert name in result.stdout


HEAVY = ("torch", "ray", "deepspeed", "mlflow")


@pytest.mark.parametrize(
    "argv", [["--help"], ["validate", "configs/quickstart.yaml"], ["validate", "configs/sweep-lr.yaml"]]
)
def test_fast_commands_do_not_import_heavy_frameworks(argv):
    probe = (
        "import sys\n"
        "from orchestrator.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_unknown_command_is_a_usage_error():
    result = run_cli("trian", cwd=REPO)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_a_ctrl_c_caught_inside_exec_code_still_exits_130(tmp_path):
    """A Ctrl-C that lands in code run by ``exec`` of a string (a dataclass being built during an
    import) and is handled by the command: ``python -m`` still exits with the command's 130, not by
    SIGINT (-2), which CPython would otherwise choose."""
    (tmp_path / "interrupted_main.py").write_text(
        "from orchestrator import cli\n"
        "def _run(argv):\n"
        "    exec('raise KeyboardInterrupt')  # where the Ctrl-C landed\n"
        "cli._run = _run\n"
        "raise SystemExit(cli.main([]))\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "interrupted_main"], cwd=tmp_path, env=env)
    assert result.returncode == 130
