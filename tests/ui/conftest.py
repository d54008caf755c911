"""Fixtures for the web UI tests: a real engine with the example worker, and the UI served."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from durablefuture.testing import LocalEnvironment
from durablefuture.ui import serve
from workflows_examples import ACTIVITIES, TASK_QUEUE, WORKFLOWS


class UiEnv:
    def __init__(self, env: LocalEnvironment, url: str) -> None:
        self.env = env
        self.url = url

    @property
    def client(self):  # type: ignore[no-untyped-def]
        return self.env.client


@contextlib.asynccontextmanager
async def served(
    env: LocalEnvironment,
    auth_token: str | None = None,
    workflows: Sequence[Callable[..., object]] = (),
    archive: str | None = None,
) -> AsyncIterator[str]:
    """Serve the UI for ``env`` on a free loopback port (in this event loop)."""
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(
            env.client,
            "127.0.0.1",
            0,
            auth_token=auth_token,
            on_ready=ready.set_result,
            workflows=workflows,
            archive=archive,
        )
    )
    try:
        # a serve that refuses to start (a wrong --archive, say) ends before it is ready: its
        # error is raised here at once, not after the wait for readiness
        await asyncio.wait((ready, task), timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if task.done() and not ready.done():
            task.result()
            raise AssertionError("the UI stopped before it served")
        yield await asyncio.wait_for(ready, 0.1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def ui_env() -> AsyncIterator[UiEnv]:
    async with LocalEnvironment() as env:
        async with env.worker(task_queue=TASK_QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES):
            async with served(env) as url:
                yield UiEnv(env, url)
