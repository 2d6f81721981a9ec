"""The checkers the project holds itself to, run as tests so that the one
test command enforces them: ``mypy --strict`` over wsserver and the adapters
(configured in pyproject.toml), and ``ruff check`` over the whole tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "command",
    [[sys.executable, "-m", "mypy"], [sys.executable, "-m", "ruff", "check", "."]],
    ids=["mypy-strict", "ruff"],
)
def test_the_tree_passes(command: list[str]) -> None:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
