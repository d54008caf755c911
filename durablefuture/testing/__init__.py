"""Testing helpers: an in-memory simulation of the core, a replayer, and a local environment.

* :class:`Simulation` runs workflows in memory against the real core (no NATS, simulated time).
* :class:`Replayer` replays a fetched history against your current code (determinism check).
* :class:`LocalEnvironment` starts a real nats-server, an in-process df-server and workers
  (``time_skipping=True``, or :class:`WorkflowEnvironment`, skips idle time).
* :func:`certify` runs a workflow under hypothesis-chosen crashes, redeliveries and orderings
  and checks it always ends the same way.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from durablefuture.testing.certification import Certificate, CertificationError, certify
    from durablefuture.testing.local import LocalEnvironment, WorkflowEnvironment
    from durablefuture.testing.replayer import Replayer
    from durablefuture.testing.sim import Simulation, SimulationUnsupportedError

__all__ = [
    "Certificate",
    "CertificationError",
    "LocalEnvironment",
    "Replayer",
    "Simulation",
    "SimulationUnsupportedError",
    "WorkflowEnvironment",
    "certify",
]

_LAZY = {
    "certify": "durablefuture.testing.certification",
    "Certificate": "durablefuture.testing.certification",
    "CertificationError": "durablefuture.testing.certification",
    "Simulation": "durablefuture.testing.sim",
    "SimulationUnsupportedError": "durablefuture.testing.sim",
    "Replayer": "durablefuture.testing.replayer",
    "LocalEnvironment": "durablefuture.testing.local",
    "WorkflowEnvironment": "durablefuture.testing.local",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'durablefuture.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
