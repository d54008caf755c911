"""Import contracts: imports point downwards only (daemons, services, transport, codec, core).

Read from the source (AST), so a lazy import inside a function counts as much as one at the top.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.architecture.imports import ROOT, imports_of, top

PKG = ROOT / "durablefuture"

# layer -> the durablefuture packages it may import
LAYERS = {
    "durablefuture.core": ("durablefuture.core",),
    "durablefuture.codec": ("durablefuture.core", "durablefuture.codec"),
    "durablefuture.transport": (
        "durablefuture.core",
        "durablefuture.codec",
        "durablefuture.transport",
    ),
}

# Modules above the transport that still import nats, or above the codec that still use orjson.
# New ones are refused; the list only shrinks as those modules move onto the transport and codec.
NATS_OUTSIDE_TRANSPORT: set[str] = set()
ORJSON_OUTSIDE_CODEC = {
    "durablefuture/logs.py",  # the JSON log formatter keeps its own
}


def _module_name(file: Path) -> str:
    return ".".join(file.relative_to(ROOT).with_suffix("").parts)


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_lower_layers_import_nothing_above_them(layer: str) -> None:
    allowed = LAYERS[layer]
    path = ROOT.joinpath(*layer.split("."))
    bad = [
        f"{imp.where()}: {layer} imports {imp.module}"
        for imp in imports_of(path)
        if top(imp.module) == "durablefuture"
        and imp.module != "durablefuture"
        and not imp.module.startswith(allowed)
    ]
    assert bad == []


def test_the_library_never_imports_the_daemons() -> None:
    bad = [imp.where() for imp in imports_of(PKG) if top(imp.module) == "daemons"]
    assert bad == []


def _users_of(module: str) -> set[str]:
    users = set()
    for base in (PKG, ROOT / "daemons"):
        for imp in imports_of(base):
            if top(imp.module) == module:
                users.add(str(imp.file.relative_to(ROOT)))
    return users


def test_nats_stays_in_the_transport() -> None:
    outside = {u for u in _users_of("nats") if not u.startswith("durablefuture/transport/")}
    assert outside <= NATS_OUTSIDE_TRANSPORT, sorted(outside - NATS_OUTSIDE_TRANSPORT)


def test_orjson_stays_in_the_codec() -> None:
    outside = {u for u in _users_of("orjson") if not u.startswith("durablefuture/codec/")}
    assert outside <= ORJSON_OUTSIDE_CODEC, sorted(outside - ORJSON_OUTSIDE_CODEC)
