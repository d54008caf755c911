"""A payload stored by reference is named by its content: other bytes under its name are refused."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from durablefuture.codec.claims import Claims, is_claim
from durablefuture.core.errors import PayloadError


class _Store:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def put(self, name: str, data: bytes) -> None:
        self.objects[name] = data

    async def get(self, name: str) -> bytes:
        return self.objects[name]


def _tree(value: Any) -> dict[str, Any]:
    return {"result": value}


def test_a_replaced_object_is_refused_and_an_intact_one_read() -> None:
    async def go() -> None:
        store = _Store()
        big = "x" * 400_000
        tree = _tree(big)
        await Claims(store, threshold=1_000).pack(tree, 400_100)
        assert is_claim(tree["result"])
        (name,) = store.objects
        assert name == hashlib.sha256(store.objects[name]).hexdigest()
        intact = dict(tree)
        await Claims(store).resolve(intact, None)  # a fresh process: nothing remembered
        assert intact["result"] == big
        store.objects[name] = b'"forged"'
        with pytest.raises(PayloadError, match="replaced"):
            await Claims(store).resolve(dict(tree), None)

    asyncio.run(go())
