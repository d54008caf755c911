"""Encrypted payloads in the web UI, in a real headless Chromium.

An order runs with an AES-GCM codec. ``df ui`` without the codec shows its argument, its
activities' results and its result as ``encrypted (key k1)`` and nothing of the plaintext, in
the rendered page or anywhere in its document; ``df ui`` given the codec (``DF_CODEC``) shows
them decoded. Without a browser this skips, unless DF_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from durablefuture.codecs import from_env, generate_key
from durablefuture.testing import LocalEnvironment
from tests.ui.test_ui_browser import _chromium, _no_page_errors, _text, _until, df_ui
from workflows_examples import ACTIVITIES, TASK_QUEUE, WORKFLOWS
from workflows_examples.order import order_workflow

KEYS = {"DF_CODEC_KEYS": f"k1:{base64.b64encode(generate_key()).decode()}"}
SECRET = "card-4111-plain-7731"
WID = "encrypted-order"


def _run_page(driver: Any, url: str) -> dict[str, Any]:
    driver.get(f"{url}/workflows/{quote(WID, safe='')}")
    facts = _until(
        driver,
        WID,
        lambda f: f["title"] == WID and f["status"] == "completed" and f["result"],
        "the finished run's page",
    )
    _no_page_errors(driver)
    seen = {**facts, "text": _text(driver), "source": driver.page_source}
    driver.get("about:blank")  # leave before this df ui stops (its live stream would break)
    driver.get_log("browser")
    return seen


async def test_the_ui_shows_encrypted_payloads_and_decodes_them_given_the_codec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _chromium(tmp_path) as browser:
        async with LocalEnvironment(codec=from_env(KEYS)) as env:
            async with env.worker(
                task_queue=TASK_QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES
            ):
                result = await env.client.execute_workflow(
                    order_workflow, SECRET, 42.0, id=WID, task_queue=TASK_QUEUE, timeout=30
                )
            assert result["tracking"] == f"TRACK-{SECRET.upper()}"

            monkeypatch.delenv("DF_CODEC", raising=False)
            async with df_ui(env.nats_url, tmp_path / "plain.log") as url:
                hidden = await asyncio.to_thread(_run_page, browser, url)
            assert "encrypted (key k1)" in hidden["input"], hidden["input"]
            assert "encrypted (key k1)" in hidden["result"], hidden["result"]
            assert "encrypted (key k1)" in hidden["text"]
            for where in ("text", "source"):
                assert SECRET not in hidden[where].lower(), where

            monkeypatch.setenv("DF_CODEC", "durablefuture.codecs:from_env")
            monkeypatch.setenv("DF_CODEC_KEYS", KEYS["DF_CODEC_KEYS"])
            async with df_ui(env.nats_url, tmp_path / "codec.log") as url:
                shown = await asyncio.to_thread(_run_page, browser, url)
            assert SECRET in shown["input"], shown["input"]
            assert f"TRACK-{SECRET.upper()}" in shown["result"], shown["result"]
            assert "encrypted (key" not in shown["text"]
