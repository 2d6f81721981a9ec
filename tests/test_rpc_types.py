"""The TypeScript declarations of the JavaScript client: a page written
against them (tests/node/rpc_page.ts) compiles under ``tsc --strict``, and
its ``@ts-expect-error`` lines prove that mistakes do not."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).parent / "node"
TSC = NODE_DIR / "node_modules" / ".bin" / "tsc"


def test_a_typescript_page_compiles_against_the_declarations() -> None:
    if not TSC.exists():
        pytest.skip("typescript is not installed (bash .ci/run runs npm install in tests/node)")
    result = subprocess.run(
        [str(TSC), "--noEmit", "--strict", "--target", "es2020", "--lib", "es2020,dom", "rpc_page.ts"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
