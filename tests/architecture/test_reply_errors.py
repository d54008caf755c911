"""The errors a df-server names in its refusals are the ones the client knows.

The server names an error by its class (``WorkflowNotFoundError.__name__``), never by a string
typed by hand, and each class it names is in ``core.reply_errors.REPLY_ERRORS``, from which the
client raises the error. (A refusal once named ``WorkflowNotRunningError`` before the class
existed, and the client raised the bare root.)
"""

from __future__ import annotations

import ast

import pytest

import durablefuture as df
from durablefuture.core.reply_errors import REPLY_ERRORS, error_for_reply
from tests.architecture.imports import ROOT

SERVER = ROOT / "durablefuture" / "server"


def _trees() -> list[tuple[str, ast.AST]]:
    return [
        (f.relative_to(ROOT).as_posix(), ast.parse(f.read_text()))
        for f in sorted(SERVER.rglob("*.py"))
    ]


def test_the_server_never_types_an_error_name_by_hand() -> None:
    typed = [
        f"{where}:{kw.value.lineno}"
        for where, tree in _trees()
        for kw in ast.walk(tree)
        if isinstance(kw, ast.keyword)
        and kw.arg == "error_type"
        and any(isinstance(n, ast.Constant) for n in ast.walk(kw.value))
    ]
    assert typed == []


def test_every_error_the_server_names_is_one_the_client_knows() -> None:
    named = {
        node.value.id
        for _, tree in _trees()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "__name__"
        and isinstance(node.value, ast.Name)
        and node.value.id.endswith("Error")
    }
    assert len(named) >= 5, "the scan found the replies"
    assert named - set(REPLY_ERRORS) == set()


@pytest.mark.parametrize("name", sorted(REPLY_ERRORS))
def test_the_client_raises_the_class_each_name_stands_for(name: str) -> None:
    exc = error_for_reply(name, "why", workflow_id="w", run_id="r")
    assert type(exc) is REPLY_ERRORS[name] is getattr(df, name)
    assert str(exc) == "why"


def test_an_older_servers_rejected_and_an_unknown_name_still_are_project_errors() -> None:
    assert type(error_for_reply("Rejected", "no", workflow_id="w")) is df.RequestRejectedError
    unknown = error_for_reply("SomethingNewError", "later")
    assert type(unknown) is df.DurableFutureError and "SomethingNewError" in str(unknown)


def test_a_corrupt_history_refusal_carries_its_stream_sequence() -> None:
    exc = error_for_reply("CorruptHistoryError", "run r corrupt at stream sequence 42: bad")
    assert isinstance(exc, df.CorruptHistoryError) and exc.stream_seq == 42
