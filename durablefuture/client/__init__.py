"""The client: start workflows, wait for results, inspect, signal, cancel, terminate.

Requests to the server (start, signal, cancel, terminate) are stored in the namespace's stream
first (so they survive a crash of anything) and answered by whichever df-server processes them.
Results are read from the status index (a KV bucket) and waited for with a core-NATS notice, so
waiting costs no polling and no consumer per call.

* ``client``      ``Client``: connect, start workflows, handles, schedules
* ``handle``      ``WorkflowHandle``: result, describe, history, query, signal, cancel, terminate
* ``visibility``  listing runs, status entries, run state, workers, queue depths
* ``requests``    requests to the df-server and the errors its refusals stand for
* ``views``       ``WorkflowDescription`` and what it is built from
"""

from durablefuture.client.client import Client
from durablefuture.client.handle import WorkflowHandle
from durablefuture.client.views import (
    PendingActivity,
    SignalWait,
    WorkflowDescription,
    describe_corrupt,
    describe_state,
)
from durablefuture.client.visibility import WorkflowPage

__all__ = [
    "Client",
    "PendingActivity",
    "SignalWait",
    "WorkflowDescription",
    "WorkflowHandle",
    "WorkflowPage",
    "describe_corrupt",
    "describe_state",
]
