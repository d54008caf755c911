"""Read a package's own import statements from its source (AST), never by importing it.

Checking what a module's files say, rather than what ``sys.modules`` holds after an import, keeps
a dependency's internals (attrs importing ``threading`` importing ``time``) out of the verdict.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parents[2]


@attrs.frozen
class Import:
    module: str  # absolute dotted name of the imported module
    file: Path
    line: int

    def where(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"


def _package_of(file: Path) -> str:
    # the package a relative import starts from: the file's folder (for __init__.py too)
    return ".".join(file.relative_to(ROOT).parent.parts)


def imports_in_source(source: str, file: Path) -> Iterator[Import]:
    """Every module an import statement in ``source`` names (relative ones resolved)."""
    tree = ast.parse(source, filename=str(file))
    package = _package_of(file)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, file, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module == "__future__":
                continue
            yield Import(module, file, node.lineno)
            # ``from pkg import sub`` may import a submodule: report pkg.sub too
            for alias in node.names:
                if alias.name != "*":
                    yield Import(f"{module}.{alias.name}", file, node.lineno)


def imports_of(path: Path) -> Iterator[Import]:
    files = [path] if path.is_file() else sorted(path.rglob("*.py"))
    for file in files:
        yield from imports_in_source(file.read_text(), file)


def top(module: str) -> str:
    return module.split(".")[0]
