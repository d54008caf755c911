"""`df lint`: finds every planted mistake in the corpus, nothing in the examples."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from durablefuture.lint import RULES, lint_paths, lint_source
from tests.conftest import ROOT

CORPUS = ROOT / "tests" / "lint_corpus" / "planted.py"


def expected(path: Path) -> set[tuple[int, str]]:
    out = set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        m = re.search(r"# expect: ((?:DF\d{3}\s*)+)", line)
        if m:
            out |= {(n, code) for code in m.group(1).split()}
    return out


def test_every_planted_mistake_is_found_and_nothing_else() -> None:
    findings, errors = lint_paths([str(CORPUS)])
    assert errors == []
    found = {(f.line, f.code) for f in findings}
    want = expected(CORPUS)
    assert len(want) >= 25
    assert found - want == set(), "false positives"
    assert want - found == set(), "missed"
    assert {code for _, code in want} == set(RULES), "every rule is planted at least once"


def test_each_finding_says_where_what_and_the_alternative() -> None:
    (finding,) = [f for f in lint_paths([str(CORPUS)])[0] if f.code == "DF103"]
    text = str(finding)
    assert re.match(r".*planted\.py:\d+:\d+: DF103 ", text)
    assert "random_flow" in text and "df.workflow.uuid4()" in text


def test_the_examples_are_clean() -> None:
    findings, errors = lint_paths([str(ROOT / "workflows_examples")])
    assert errors == [] and findings == []


def test_only_generators_that_create_commands_are_workflows() -> None:
    plain = "import time\n\ndef gen():\n    yield time.time()\n"
    assert lint_source(plain) == []
    activity = "import time\nimport durablefuture as df\n\ndef act():\n    return time.time()\n"
    assert lint_source(activity) == []
    fixture = "import time\nimport durablefuture as df\n\ndef env():\n    yield time.time()\n"
    assert lint_source(fixture) == []  # a pytest fixture, not a workflow
    workflow = fixture.replace("yield time.time()", "yield df.sleep(time.time())")
    assert [f.code for f in lint_source(workflow)] == ["DF101"]


def test_cli_exit_status_and_module_entry(tmp_path: Path) -> None:
    clean = tmp_path / "clean.py"
    clean.write_text("import durablefuture as df\n\ndef wf():\n    yield df.sleep(1)\n")
    broken = tmp_path / "broken.py"
    broken.write_text("def oops(:\n")
    runs = {
        "clean": [sys.executable, "-m", "durablefuture.lint", str(clean)],
        "findings": [sys.executable, "-m", "durablefuture.lint", str(CORPUS)],
        "syntax": [sys.executable, "-m", "durablefuture.lint", str(broken)],
        "cli": [sys.executable, "-m", "daemons.df_cli", "lint", str(CORPUS)],
    }
    codes = {
        k: subprocess.run(v, capture_output=True, text=True, cwd=ROOT) for k, v in runs.items()
    }
    assert codes["clean"].returncode == 0, codes["clean"].stderr
    assert codes["findings"].returncode == 1 and "DF108" in codes["findings"].stdout
    assert codes["syntax"].returncode == 2 and "syntax error" in codes["syntax"].stderr
    assert codes["cli"].returncode == 1 and "DF101" in codes["cli"].stdout


def test_our_own_tests_lint_without_errors() -> None:
    # the only findings outside the planted corpus are the deliberate forgotten-yield workflows
    findings, errors = lint_paths([str(ROOT / "tests")])
    assert not errors
    outside = [f for f in findings if "lint_corpus" not in f.path]
    assert {(Path(f.path).name, f.code) for f in outside} <= {("test_replay.py", "DF108")}
