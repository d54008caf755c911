"""``df lint``: a static determinism checker for workflow code.

A workflow is replayed from its history after any crash, so its code must take the same path
every time: no clock, randomness, environment, I/O, threads or asyncio of its own. This checker
reads Python files with :mod:`ast` (it never imports them), finds workflow functions and reports
what would make a replay diverge, each with the deterministic alternative:

====== ===================================================================================
DF101  reads the clock (``time.time()``, ``datetime.now()``, ...): ``df.workflow.now()``
DF102  randomness (``random``, ``secrets``, ``os.urandom``): ``df.workflow.random()``
DF103  a random UUID (``uuid.uuid4()``, ``uuid1``): ``df.workflow.uuid4()``
DF104  reads the environment (``os.environ``, ``os.getenv``): pass it as an argument
DF105  file, network or process I/O (``open``, ``socket``, ``requests``, ...): an activity
DF106  threads, processes or asyncio: ``df.all_of`` / ``df.any_of`` over activities
DF107  ``await`` / ``async def`` workflow: a workflow is a plain generator function
DF108  a command created but not yielded (``df.activity(...)`` alone): ``yield`` it
DF109  iterates over a set (order changes between processes): ``sorted(...)``
DF110  changes module globals (``global``): keep state in local variables
DF111  imports a non-deterministic module inside the workflow: use the ``df.workflow`` helpers
DF112  ``time.sleep``: ``yield df.sleep(...)`` (a durable timer)
DF113  ``hash()`` of a str or bytes (salted per process): ``hashlib``
====== ===================================================================================

A workflow function is a generator function (it contains ``yield``) that creates durablefuture
commands (``df.activity(...)``, ``df.sleep(...)``, ...); functions nested in it (and lambdas, as
in ``df.side_effect(lambda: ...)``) are not checked. Silence one finding with
``# df: noqa DF101`` (or ``# df: noqa`` for all) on its line. Exit status: 0 clean, 1 findings,
2 usage or syntax errors.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from attrs import frozen

__all__ = ["RULES", "Finding", "lint_paths", "lint_source", "main"]

RULES: dict[str, tuple[str, str]] = {
    "DF101": ("reads the clock", "use df.workflow.now() (the time of the event being replayed)"),
    "DF102": ("uses randomness", "use df.workflow.random() (seeded from the run id)"),
    "DF103": ("makes a random UUID", "use df.workflow.uuid4()"),
    "DF104": (
        "reads the environment",
        "pass the value as a workflow argument, or read it with df.side_effect(...)",
    ),
    "DF105": ("does I/O", "do it in an activity: yield df.activity(fn, ...)"),
    "DF106": (
        "uses threads, processes or asyncio",
        "run work in activities and wait with df.all_of / df.any_of",
    ),
    "DF107": (
        "awaits (or is async)",
        "write the workflow as a plain generator function that yields commands",
    ),
    "DF108": (
        "creates a command without yielding it (it does nothing)",
        "yield it: `result = yield df.activity(...)`, `yield df.continue_as_new(...)`",
    ),
    "DF109": (
        "iterates over a set, whose order can change between processes",
        "iterate over sorted(...)",
    ),
    "DF110": (
        "changes module globals, which a replay in another process does not see",
        "keep state in local variables or workflow arguments",
    ),
    "DF111": (
        "imports a non-deterministic module inside the workflow",
        "use the df.workflow helpers (now, random, uuid4) or an activity",
    ),
    "DF112": ("blocks with time.sleep", "use `yield df.sleep(seconds)` (a durable timer)"),
    "DF113": (
        "hashes a str or bytes with hash() (salted per process)",
        "use hashlib (e.g. hashlib.sha256(data).hexdigest())",
    ),
}

_CLOCK = {
    "time.time",
    "time.time_ns",
    "time.monotonic",
    "time.monotonic_ns",
    "time.perf_counter",
    "time.perf_counter_ns",
    "time.process_time",
    "time.localtime",
    "time.gmtime",
    "time.ctime",
    "time.strftime",
    "datetime.datetime.now",
    "datetime.datetime.utcnow",
    "datetime.datetime.today",
    "datetime.date.today",
}
_PREFIXES: list[tuple[str, str]] = [  # qualified-name prefix -> rule (longest first)
    ("os.environ", "DF104"),
    ("os.getenv", "DF104"),
    ("os.putenv", "DF104"),
    ("os.urandom", "DF102"),
    ("os.system", "DF105"),
    ("os.popen", "DF105"),
    ("os.listdir", "DF105"),
    ("os.scandir", "DF105"),
    ("os.remove", "DF105"),
    ("os.getpid", "DF104"),
    ("uuid.uuid1", "DF103"),
    ("uuid.uuid4", "DF103"),
    ("random", "DF102"),
    ("secrets", "DF102"),
    ("socket", "DF105"),
    ("subprocess", "DF105"),
    ("requests", "DF105"),
    ("httpx", "DF105"),
    ("urllib", "DF105"),
    ("http.client", "DF105"),
    ("sqlite3", "DF105"),
    ("shutil", "DF105"),
    ("builtins.open", "DF105"),
    ("builtins.input", "DF105"),
    ("pathlib.Path.read_text", "DF105"),
    ("threading", "DF106"),
    ("multiprocessing", "DF106"),
    ("concurrent.futures", "DF106"),
    ("asyncio", "DF106"),
]
_IMPURE_MODULES = {
    "time": "DF101",
    "random": "DF102",
    "secrets": "DF102",
    "uuid": "DF103",
    "socket": "DF105",
    "subprocess": "DF105",
    "requests": "DF105",
    "httpx": "DF105",
    "threading": "DF106",
    "asyncio": "DF106",
    "multiprocessing": "DF106",
}
_COMMANDS = {
    "activity",
    "sleep",
    "wait_signal",
    "side_effect",
    "child_workflow",
    "continue_as_new",
    "all_of",
    "any_of",
    "start",
    "cancel",
    "local_activity",
    "signal_workflow",
    "cancel_workflow",
    "wait_condition",
}
_NOQA = re.compile(r"#\s*df:\s*noqa\b(?::?\s*(?P<codes>DF\d{3}(?:[\s,]+DF\d{3})*))?", re.I)


@frozen
class Finding:
    path: str
    line: int
    col: int
    code: str
    function: str
    detail: str

    @property
    def message(self) -> str:
        what, fix = RULES[self.code]
        return f"workflow {self.function!r} {what}: {self.detail}; {fix}"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.code} {self.message}"


class _Names:
    """What each local name refers to, from the module's imports (``dt`` -> ``datetime``)."""

    def __init__(self, tree: ast.Module) -> None:
        self.alias: dict[str, str] = {"open": "builtins.open", "input": "builtins.input"}
        self.df_modules: set[str] = set()  # names bound to the durablefuture package
        self.df_commands: dict[str, str] = {}  # local name -> command, from `from df import`
        self.imports_df = False
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    local = a.asname or a.name.split(".")[0]
                    target = a.name if a.asname else a.name.split(".")[0]
                    self.alias[local] = target
                    if a.name.split(".")[0] == "durablefuture":
                        self.imports_df = True
                        if a.asname or a.name == "durablefuture":
                            self.df_modules.add(local)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                root = node.module.split(".")[0]
                for a in node.names:
                    local = a.asname or a.name
                    self.alias[local] = f"{node.module}.{a.name}"
                    if root == "durablefuture":
                        self.imports_df = True
                        if a.name in _COMMANDS:
                            self.df_commands[local] = a.name

    def qualified(self, node: ast.expr) -> str | None:
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        base = self.alias.get(node.id)
        if base is None:
            return None
        return ".".join([base, *reversed(parts)])

    def command(self, call: ast.Call) -> str | None:
        """The df command a call creates (``df.activity(...)`` -> ``activity``), else None."""
        fn = call.func
        if (
            isinstance(fn, ast.Attribute)
            and isinstance(fn.value, ast.Name)
            and fn.value.id in self.df_modules
            and fn.attr in _COMMANDS
        ):
            return fn.attr
        if isinstance(fn, ast.Name):
            return self.df_commands.get(fn.id)
        return None


def _is_generator(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(isinstance(node, ast.Yield | ast.YieldFrom) for node in _own_nodes(fn))


def _own_nodes(fn: ast.AST) -> Iterator[ast.AST]:
    """Nodes of ``fn``'s body, not of functions or classes nested in it."""
    stack = list(ast.iter_child_nodes(fn))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        stack.extend(ast.iter_child_nodes(node))


def _workflows(tree: ast.Module, names: _Names) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Generator functions that create durablefuture commands (`df.activity(...)`, ...)."""
    if not names.imports_df:
        return
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and _is_generator(node)
            and any(
                isinstance(n, ast.Call) and names.command(n) is not None for n in _own_nodes(node)
            )
        ):
            yield node


def _rule_for(qualified: str) -> str | None:
    if qualified in _CLOCK:
        return "DF101"
    if qualified == "time.sleep":
        return "DF112"
    for prefix, code in _PREFIXES:
        if qualified == prefix or qualified.startswith(prefix + "."):
            return code
    return None


def _is_set_expr(node: ast.expr, names: _Names) -> bool:
    if isinstance(node, ast.Set | ast.SetComp):
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id in ("set", "frozenset") and node.func.id not in names.alias
    return False


def _check_function(
    fn: ast.FunctionDef | ast.AsyncFunctionDef, names: _Names, path: str
) -> Iterator[Finding]:
    name = fn.name

    def finding(node: ast.AST, code: str, detail: str) -> Finding:
        line = getattr(node, "lineno", fn.lineno)
        col = getattr(node, "col_offset", 0) + 1
        return Finding(path, line, col, code, name, detail)

    if isinstance(fn, ast.AsyncFunctionDef):
        yield finding(fn, "DF107", f"`async def {name}`")
    yielded: set[int] = set()
    for node in _own_nodes(fn):
        if isinstance(node, ast.Yield | ast.YieldFrom) and node.value is not None:
            yielded.add(id(node.value))
    nodes = sorted(
        _own_nodes(fn), key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0))
    )
    # only the outermost name of an attribute chain is looked up (`os.environ.get`, not `os`)
    inner = {id(n.value) for n in nodes if isinstance(n, ast.Attribute)}
    # a bare name counts when called (`now()`, from `from time import time as now`)
    called = {id(n.func) for n in nodes if isinstance(n, ast.Call)}
    for node in nodes:
        if isinstance(node, ast.Await):
            yield finding(node, "DF107", "`await`")
        elif isinstance(node, ast.Global):
            yield finding(node, "DF110", f"`global {', '.join(node.names)}`")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            for module in modules:
                code = _IMPURE_MODULES.get(module.split(".")[0])
                if code is not None:
                    yield finding(node, "DF111", f"`import {module}`")
        elif isinstance(node, ast.For | ast.comprehension):
            if _is_set_expr(node.iter, names):
                yield finding(node.iter, "DF109", f"`for ... in {ast.unparse(node.iter)}`")
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            command = names.command(node.value)
            if command is not None:
                yield finding(node, "DF108", f"`{ast.unparse(node.value.func)}(...)` alone")
        elif isinstance(node, ast.Return) and isinstance(node.value, ast.Call):
            command = names.command(node.value)
            if command is not None and id(node.value) not in yielded:
                yield finding(
                    node, "DF108", f"`return {ast.unparse(node.value.func)}(...)` (no yield)"
                )
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "hash"
            and "hash" not in names.alias
        ):
            yield finding(node, "DF113", "`hash(...)`")
        if (
            isinstance(node, ast.Attribute) or (isinstance(node, ast.Name) and id(node) in called)
        ) and id(node) not in inner:
            q = names.qualified(node)
            code = None if q is None else _rule_for(q)
            if code is not None:
                yield finding(node, code, f"`{ast.unparse(node)}`")


def _suppressed(finding: Finding, lines: Sequence[str]) -> bool:
    if not 0 < finding.line <= len(lines):
        return False
    m = _NOQA.search(lines[finding.line - 1])
    if m is None:
        return False
    codes = m.group("codes")
    return codes is None or finding.code in re.split(r"[\s,]+", codes.upper())


def lint_source(source: str, path: str = "<string>") -> list[Finding]:
    """The findings in one file's source (raises SyntaxError on invalid Python)."""
    tree = ast.parse(source, filename=path)
    names = _Names(tree)
    lines = source.splitlines()
    out: list[Finding] = []
    for fn in _workflows(tree, names):
        out += [f for f in _check_function(fn, names, path) if not _suppressed(f, lines)]
    return sorted(set(out), key=lambda f: (f.path, f.line, f.col, f.code))


def _files(paths: Iterable[str]) -> Iterator[Path]:
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            yield from sorted(q for q in p.rglob("*.py") if ".venv" not in q.parts)
        else:
            yield p


def lint_paths(paths: Iterable[str]) -> tuple[list[Finding], list[str]]:
    """Findings in every ``.py`` file under ``paths``, and the errors (unreadable, syntax)."""
    findings: list[Finding] = []
    errors: list[str] = []
    for file in _files(paths):
        try:
            findings += lint_source(file.read_text(encoding="utf-8"), str(file))
        except SyntaxError as exc:
            errors.append(f"{file}:{exc.lineno}: syntax error: {exc.msg}")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"{file}: cannot read: {exc}")
    return findings, errors


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m durablefuture.lint PATHS``: print findings; 1 if any, 2 on errors."""
    parser = argparse.ArgumentParser(
        prog="df lint", description="Check workflow code for non-determinism."
    )
    parser.add_argument("paths", nargs="+", help="files or folders to check")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    args = parser.parse_args(argv)
    findings, errors = lint_paths(args.paths)
    if args.json:
        rows = [
            {"path": f.path, "line": f.line, "col": f.col, "code": f.code, "message": f.message}
            for f in findings
        ]
        sys.stdout.write(json.dumps({"findings": rows, "errors": errors}, indent=2) + "\n")
    else:
        sys.stdout.writelines(f"{f}\n" for f in findings)
        sys.stderr.writelines(f"{e}\n" for e in errors)
        if findings:
            sys.stdout.write(f"{len(findings)} finding(s); silence one with `# df: noqa DFxxx`\n")
    if errors:
        return 2
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
