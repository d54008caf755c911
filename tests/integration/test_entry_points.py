"""The installed command lines as a user runs them: from their app's folder, under each name."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from durablefuture.testing import LocalEnvironment

BIN = Path(sys.executable).parent


def script(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed next to {sys.executable} (pip install -e .)")
    return str(path)


def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=60
    )


async def test_user_modules_import_from_the_current_directory(tmp_path: Path) -> None:
    app = tmp_path / "my_app"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "flows.py").write_text(
        "import durablefuture as df\n\n"
        "def order_workflow(order_id: str):\n"
        "    yield df.sleep(1)\n"
        "    return order_id\n"
    )
    async with LocalEnvironment() as env:
        out = await asyncio.to_thread(
            run,
            [
                script("durablefuture"),
                "--nats",
                env.nats_url,
                "workflow",
                "replay-check",
                "--workflows",
                "my_app.flows:order_workflow",
            ],
            tmp_path,
        )
    assert out.returncode == 0, out.stderr
    assert "0 of 0 histories replay" in out.stdout


def test_a_missing_module_names_the_directories_searched(tmp_path: Path) -> None:
    out = run(
        [script("df-worker"), "--workflows", "no_such_app.flows:order_workflow"], cwd=tmp_path
    )
    assert out.returncode == 2
    line = out.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert "no module named 'no_such_app'" in line
    assert f"searched {tmp_path}" in line
    assert "PYTHONPATH" in line


def test_the_cli_answers_under_every_name(tmp_path: Path) -> None:
    for args in (
        [script("df")],
        [script("durablefuture")],
        [sys.executable, "-m", "durablefuture"],
    ):
        out = run([*args, "--help"], cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert "workflow" in out.stdout
    out = run([sys.executable, "-m", "durablefuture", "--help"], cwd=tmp_path)
    assert "python -m durablefuture" in out.stdout
