"""A df-server (``daemons.df_server`` with the arguments given) that takes no report
requests: a worker asking one to record a report finds nobody listening and stores the report
on ``in.report`` at once, as it does while every df-server is down or when a df-server holding
its request is killed. Run as ``python -m tests.integration.deaf_server ARGS...``."""

from __future__ import annotations

import runpy
import sys

from durablefuture.server.report_requests import ReportRequests


async def _nothing(self: ReportRequests) -> None:
    return None


if __name__ == "__main__":
    ReportRequests._start_report_requests = _nothing  # type: ignore[method-assign]
    ReportRequests._stop_report_requests = _nothing  # type: ignore[method-assign]
    sys.argv = ["df-server", *sys.argv[1:]]
    runpy.run_module("daemons.df_server", run_name="__main__")
