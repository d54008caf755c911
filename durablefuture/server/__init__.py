"""df-server as a library: ``await Server.connect(url, ServerOptions())``, then ``run()``."""

from durablefuture.server.service import Server, ServerOptions

__all__ = ["Server", "ServerOptions"]
