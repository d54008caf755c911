"""Message headers DurableFuture adds to its own messages (beside the Nats-* ones)."""

REPLY_HEADER = "Df-Reply"
"""On a request to the server: where to send the answer (a core-NATS subject)."""
RECEIPT_HEADER = "Df-Receipt"
"""On a worker's report: where the server sends the events it recorded for it."""
STICKY_HEADER = "Df-Sticky"
"""On a worker's report sent with a receipt: the token of the worker's sticky subject (it
holds the run's generator; the run's next workflow tasks go there)."""
ANSWER_RECEIPT_HEADER = "Df-Answer-Receipt"
"""On a worker's report request sent with a receipt (value ``1``): carry the receipt in the
``recorded`` answer instead of on the receipt subject (``transport/report_requests.py``). A
server that does not know it sends the receipt apart, and a request without it (a worker
that does not know it) gets it apart: either side may be upgraded first."""
EAGER_HEADER = "Df-Eager"
"""On a worker's report request sent with ``Df-Answer-Receipt``: how many activity attempts
of the run's task queue the worker would run itself (1 to 3 digits, capped by df-server):
the first attempts the report's decisions schedule are granted to it instead of stored as
tasks (eager activity dispatch, ``server/grants.py``)."""
EAGER_ASK_HEADER = "Df-Eager-Ask"
"""Beside ``Df-Eager``: a random id of this request (1 to 16 lowercase hex digits), recorded
on the activities it is granted (``ActivityScheduled.eager``). A report the worker stores
instead (no usable answer) keeps the header: that worker ran none of those grants, so
df-server, deriving the report's effects again, may store their tasks as usual."""
RUN_HEADER = "Df-Run"
"""On a receipt: the run the events belong to."""
SEQ_HEADER = "Df-Seq"
"""On a receipt: the stream sequence of the recorded batch."""
GRANTED_HEADER = "Df-Granted"
"""On an eager start's receipt: the activity seqs (comma separated) whose first attempts the
worker that answered the offer runs itself (their tasks are not stored)."""
EAGER_WAIT_HEADER = "Df-Eager-Wait"
"""On an eager start offer: the seconds df-server waits for the answer (a later one is not
sent)."""
FIRST_BATCH_HEADER = "Df-First-Batch"
"""On an activity task of an eager start's first batch, stored just before that batch (value
``1``): run it only once the run's history holds the batch (``worker/first_batch.py``)."""
REASON_HEADER = "Df-Reason"
"""On a dead letter: why it was dead-lettered."""
CLOSING_HEADER = "Df-Closing"
"""On a closed notice sent with the run's closing history append, before its PubAck: no
summary, only "look at the history now" (the usual notice, with the run's status entry,
follows the PubAck)."""

__all__ = [
    "ANSWER_RECEIPT_HEADER",
    "CLOSING_HEADER",
    "EAGER_ASK_HEADER",
    "EAGER_HEADER",
    "EAGER_WAIT_HEADER",
    "FIRST_BATCH_HEADER",
    "GRANTED_HEADER",
    "REASON_HEADER",
    "RECEIPT_HEADER",
    "REPLY_HEADER",
    "RUN_HEADER",
    "SEQ_HEADER",
    "STICKY_HEADER",
]
