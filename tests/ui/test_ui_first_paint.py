"""A run page is complete when it has loaded: plain ``chromium --headless --screenshot`` and
``--dump-dom`` (no driver, no waiting on anything in the page) show the run, not "Loading run…".

The CLI captures right after the load event, so this is what a screenshot tool, a crawler or a
slow connection sees first. The page is served by ``df ui`` against a LocalEnvironment.
Without Chromium these tests skip, unless DF_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import struct
import tempfile
import zlib
from array import array
from pathlib import Path

from durablefuture.testing import LocalEnvironment
from tests.ui.test_ui_browser import df_ui, find_chromium
from workflows_examples import ACTIVITIES, TASK_QUEUE, WORKFLOWS
from workflows_examples.approval import approval_workflow
from workflows_examples.order import order_workflow

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


async def _chromium(binary: str, tmp_path: Path, *args: str, timeout: float = 60) -> str:
    """Run the Chromium CLI once (own profile, own process group); its stdout."""
    profile = tempfile.mkdtemp(prefix="df-chromium-cli-", dir=tmp_path)
    proc = await asyncio.create_subprocess_exec(
        binary,
        *FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its helpers share the group: all stopped by our one id
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        raise AssertionError(f"chromium {' '.join(args)} did not finish in {timeout}s") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


def _add_bytes(a: bytes, b: bytes) -> bytes:
    """Bytewise (a + b) mod 256, on whole rows at once (no carries between bytes)."""
    n = len(a)
    low, high = int.from_bytes(b"\x7f" * n, "big"), int.from_bytes(b"\x80" * n, "big")
    x, y = int.from_bytes(a, "big"), int.from_bytes(b, "big")
    return (((x & low) + (y & low)) ^ ((x ^ y) & high)).to_bytes(n, "big")


def _unfilter(kind: int, line: bytes, prev: bytes, bpp: int) -> bytes:
    if kind == 0:
        return line
    if kind == 2:  # Up: most rows of a screenshot
        return _add_bytes(line, prev)
    out = bytearray(line)
    for i in range(len(out)):
        left = out[i - bpp] if i >= bpp else 0
        if kind == 1:
            out[i] = (out[i] + left) & 0xFF
        elif kind == 3:
            out[i] = (out[i] + ((left + prev[i]) >> 1)) & 0xFF
        else:  # Paeth
            up = prev[i]
            corner = prev[i - bpp] if i >= bpp else 0
            pa, pb, pc = abs(up - corner), abs(left - corner), abs(left + up - 2 * corner)
            pred = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
            out[i] = (out[i] + pred) & 0xFF
    return bytes(out)


def _pixels(png: bytes) -> tuple[int, int, list[array[int]]]:
    """(width, height, rows of 0xRRGGBB ints) of an 8-bit RGB(A) non-interlaced PNG."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = data
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 4 if colour == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[array[int]] = []
    prev = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        prev = _unfilter(raw[start], raw[start + 1 : start + 1 + stride], prev, bpp)
        rgba = bytearray(b"\xff" * (width * 4))
        for c in range(3):
            rgba[c::4] = prev[c::bpp]
        rows.append(array("I", bytes(rgba)))
    return width, height, rows


def _count(rows: list[array[int]], rgb: tuple[int, int, int], below: int = 0) -> int:
    """Pixels of exactly ``rgb`` in the rows from ``below`` down."""
    (value,) = array("I", bytes((*rgb, 255)))
    return sum(row.count(value) for row in rows[below:])


async def _shoot(
    chromium: str, tmp_path: Path, url: str, name: str
) -> tuple[str, list[array[int]]]:
    dom = await _chromium(chromium, tmp_path, "--dump-dom", url)
    png = tmp_path / f"{name}.png"
    await _chromium(chromium, tmp_path, f"--screenshot={png}", "--window-size=1200,900", url)
    width, height, rows = _pixels(png.read_bytes())
    assert (width, height) == (1200, 900)
    return dom, rows


WHITE = (255, 255, 255)  # the cards; the loading state has none below the top bar
GREEN = (0x16, 0xA3, 0x4A)  # var(--completed): badge, outcome border, bars
BLUE = (0x25, 0x63, 0xEB)  # var(--running): badge, "why" card border


async def test_plain_screenshot_and_dom_of_a_run_page_show_the_run(tmp_path: Path) -> None:
    chromium = find_chromium()
    async with LocalEnvironment() as env:
        async with env.worker(task_queue=TASK_QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES):
            await env.client.execute_workflow(
                order_workflow, "order-shot", 42.0, id="order-shot", task_queue=TASK_QUEUE
            )
            await env.client.start_workflow(
                approval_workflow, "req-shot", 600.0, id="approval-shot", task_queue=TASK_QUEUE
            )
            async with df_ui(env.nats_url, tmp_path / "df-ui.log") as url:
                done = await _shoot(chromium, tmp_path, f"{url}/workflows/order-shot", "done")
                running = await _shoot(
                    chromium, tmp_path, f"{url}/workflows/approval-shot", "running"
                )
                runs = await _chromium(chromium, tmp_path, "--dump-dom", f"{url}/")
                missing = await _chromium(
                    chromium, tmp_path, "--dump-dom", f"{url}/workflows/nobody"
                )

    dom, rows = done
    assert '<h1 id="run-title">order-shot</h1>' in dom
    assert 'data-status="completed"' in dom
    assert 'data-activity="charge_credit_card"' in dom and 'data-activity="ship_package"' in dom
    assert "TRACK-ORDER-SHOT" in dom
    assert "Loading" not in dom
    assert _count(rows, WHITE, below=60) > 200_000, "no cards: the page was not rendered"
    assert _count(rows, GREEN, below=60) > 100, "no completed badge or outcome"

    dom, rows = running
    assert '<h1 id="run-title">approval-shot</h1>' in dom
    assert 'data-status="running"' in dom and "Loading" not in dom
    assert _count(rows, WHITE, below=60) > 200_000
    assert _count(rows, BLUE, below=60) > 100, "no running badge"

    # the runs list, and a run that does not exist, are whole at load too
    assert 'data-workflow-id="order-shot"' in runs and 'data-workflow-id="approval-shot"' in runs
    assert "Loading" not in runs
    assert "Cannot show this run" in missing and "nobody" in missing
    assert "Loading" not in missing
