"""A df-worker whose writers touch the payload objects they find stored once their last put is
older than half a second, not a quarter hour (``TOUCH_AFTER``), with df-worker's arguments
(``python -m tests.integration.touching_worker --nats URL ...``): for a df-server whose payload
grace is a few seconds, as the default grace is to the default ``TOUCH_AFTER``."""

from __future__ import annotations

import durablefuture.transport.payload_store as payload_store
import durablefuture.worker.attempt as attempt
from daemons.df_worker import main

TOUCH_AFTER = 0.5

if __name__ == "__main__":
    for module in (payload_store, attempt):
        setattr(module, "TOUCH_AFTER", TOUCH_AFTER)  # noqa: B010 - not exported
    main()
