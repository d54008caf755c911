"""df-server as a library: ``await Server.connect(url, ServerOptions())``, then ``run()``.

One concern per module:

* ``service``    ``Server``: lifecycle, the input loop, dead letters and corrupt histories
* ``many``       ``Servers``: one process serving several namespaces
* ``starts``     start requests (new runs, existing ids, signal with start)
* ``inputs``     inputs for a run: decide, append with a sequence check, perform the effects
* ``effects``    sending what a decision implies (tasks, timers, notices, the status index)
* ``runs``       the run cache
* ``base``       the state every part shares
* ``options``    ``ServerOptions``
* ``schedules``  the schedule component
"""

from durablefuture.server.many import Servers
from durablefuture.server.options import ServerOptions
from durablefuture.server.service import Server

__all__ = ["Server", "ServerOptions", "Servers"]
