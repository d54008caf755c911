"""Every third-party module that durablefuture/ or daemons/ imports is declared in pyproject.toml.

deptry reads the package's import statements and compares them with the declared dependencies:
an import that only a hand-installed package satisfies fails here, not on a user's machine.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.architecture.imports import ROOT


def deptry(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deptry", "durablefuture", "daemons", "--no-ansi"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_import_is_declared() -> None:
    out = deptry(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No dependency issues found" in out.stdout + out.stderr


def test_an_undeclared_or_dev_only_import_fails(tmp_path: Path) -> None:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "durablefuture").mkdir()
    (tmp_path / "durablefuture" / "__init__.py").write_text("import yaml\n")
    (tmp_path / "daemons").mkdir()
    (tmp_path / "daemons" / "__init__.py").write_text("import zz_not_a_declared_package\n")
    out = deptry(tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "yaml" in text  # declared only for development
    assert "zz_not_a_declared_package" in text  # declared nowhere
