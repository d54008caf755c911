"""Creating a namespace's stream, KV buckets and consumers, idempotently.

Only ``df-server`` creates or widens the stream and buckets; workers and clients never change
them. A worker creates the durable consumer of its task queue if it does not exist yet and
otherwise uses it as it is.

The stream has limits retention and no age or size limit: what leaves it is removed on purpose.
Handled inputs and tasks are purged by ``transport/compaction.py``; closed runs are removed when
the namespace's retention (stored in the stream's metadata, ``transport/namespace_settings.py``)
is over, by ``server/removals.py``.
"""

from __future__ import annotations

import logging

import nats.errors
import nats.js.errors
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from durablefuture.core.errors import NamespaceNotFoundError, TransportError
from durablefuture.transport.payload_store import ensure_payload_bucket
from durablefuture.transport.subjects import Layout

__all__ = [
    "ConsumerSettings",
    "KeyValue",
    "consumer_backlog",
    "ensure_consumer",
    "ensure_namespace",
    "open_bucket",
    "queue_depths",
]

log = logging.getLogger(__name__)


class ConsumerSettings:
    """Redelivery settings of a durable consumer."""

    def __init__(
        self,
        ack_wait: float,
        max_deliver: int,
        max_ack_pending: int = 20_000,
        inactive_threshold: float | None = None,
    ) -> None:
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.max_ack_pending = max_ack_pending
        self.inactive_threshold = inactive_threshold
        """Seconds without pull requests after which NATS deletes the consumer (None: never)."""

    def backoff(self) -> list[float]:
        """Redelivery delays: ack_wait first, then growing, never a hot loop."""
        steps = [self.ack_wait * f for f in (1, 1, 2, 4, 8, 16)]
        n = min(len(steps), max(1, self.max_deliver - 1)) if self.max_deliver > 0 else len(steps)
        return steps[:n]


def stream_config(layout: Layout, replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=layout.stream,
        subjects=list(layout.stream_subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=120.0,
        allow_direct=True,
        allow_msg_ttl=True,
        allow_msg_schedules=True,
        allow_rollup_hdrs=True,
        description=f"DurableFuture namespace {layout.namespace}: histories, tasks, timers",
    )


async def ensure_namespace(js: JetStreamContext, layout: Layout, replicas: int = 1) -> None:
    """Create (or widen, never narrow) the namespace's stream and KV buckets."""
    wanted = stream_config(layout, replicas)
    try:
        info = await js.stream_info(layout.stream)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(wanted)
            log.info("created stream %s", layout.stream)
        except nats.js.errors.APIError as exc:
            raise TransportError(
                f"cannot create stream {layout.stream}: {exc.description}; is JetStream "
                "enabled on the server (nats-server -js)?"
            ) from exc
    except nats.js.errors.ServiceUnavailableError as exc:
        raise TransportError(
            "JetStream is not available on this NATS server; start nats-server with -js"
        ) from exc
    else:
        have = info.config
        missing = [s for s in wanted.subjects or [] if s not in (have.subjects or [])]
        flags = ("allow_direct", "allow_msg_ttl", "allow_msg_schedules", "allow_rollup_hdrs")
        off = [f for f in flags if not getattr(have, f, False)]
        changes = missing + off
        if (have.num_replicas or 1) < replicas:
            changes.append(f"replicas {have.num_replicas or 1} -> {replicas}")
            have.num_replicas = replicas
        if changes:
            have.subjects = list(have.subjects or []) + missing
            for f in off:
                setattr(have, f, True)
            await _update_stream(js, have)
            log.info("updated stream %s (%s)", layout.stream, ", ".join(changes))
    for bucket in (layout.runs_bucket, layout.activity_bucket):
        await _ensure_bucket(js, bucket, replicas)
    # liveness records: one per worker, each expiring by its own TTL; read with direct gets
    await _ensure_bucket(js, layout.workers_bucket, replicas, direct=True)
    await ensure_payload_bucket(js, layout, replicas)


async def _update_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.update_stream(config)
    except nats.js.errors.APIError as exc:
        raise TransportError(
            f"cannot update stream {config.name}: {exc.description} (replicas need that many "
            "NATS servers with JetStream in the cluster)"
        ) from exc


async def _ensure_bucket(
    js: JetStreamContext, bucket: str, replicas: int, *, direct: bool | None = None
) -> None:
    try:
        await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        pass
    else:
        # a bucket made by an older client may lack allow_msg_ttl (entries with their own TTL:
        # attempt leases, liveness records need it); one made by a server started with fewer
        # replicas is raised, never lowered
        info = await js.stream_info(f"KV_{bucket}")
        changes = []
        if not getattr(info.config, "allow_msg_ttl", False):
            info.config.allow_msg_ttl = True
            changes.append("allow_msg_ttl")
        if (info.config.num_replicas or 1) < replicas:
            changes.append(f"replicas {info.config.num_replicas or 1} -> {replicas}")
            info.config.num_replicas = replicas
        if changes:
            await _update_stream(js, info.config)
            log.info("updated KV bucket %s (%s)", bucket, ", ".join(changes))
        return
    try:
        await js.create_key_value(
            KeyValueConfig(
                bucket=bucket,
                history=1,
                storage=StorageType.FILE,
                replicas=replicas,
                direct=direct,
            )
        )
        log.info("created KV bucket %s", bucket)
    except nats.js.errors.APIError as exc:
        # a concurrent server may have created it
        try:
            await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            raise TransportError(f"cannot create KV bucket {bucket}: {exc}") from exc


async def open_bucket(js: JetStreamContext, bucket: str) -> KeyValue:
    try:
        return await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError as exc:
        raise NamespaceNotFoundError(
            f"KV bucket {bucket} does not exist; start df-server for this namespace first "
            "(it creates the namespace), or use `df dev`"
        ) from exc
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransportError(f"opening KV bucket {bucket} failed: {exc}") from exc


async def ensure_consumer(
    js: JetStreamContext,
    layout: Layout,
    name: str,
    filter_subject: str | list[str],
    settings: ConsumerSettings,
    *,
    update: bool = False,
) -> int:
    """Create durable consumer ``name`` if missing (``update`` also refreshes its settings).

    ``filter_subject``: one subject, or several (``filter_subjects``); an update may change
    one into the other. Returns the consumer's ``max_deliver`` (the existing consumer's, when
    it was created before with other settings; 0 or less: unlimited)."""
    many = [filter_subject] if isinstance(filter_subject, str) else list(filter_subject)
    config = ConsumerConfig(
        durable_name=name,
        name=name,
        filter_subject=many[0] if len(many) == 1 else None,
        filter_subjects=many if len(many) > 1 else None,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=settings.ack_wait,
        max_deliver=settings.max_deliver,
        max_ack_pending=settings.max_ack_pending,
        backoff=settings.backoff(),
        inactive_threshold=settings.inactive_threshold,
    )
    try:
        info = await js.consumer_info(layout.stream, name)
        if not update:
            existing = info.config.max_deliver if info.config is not None else None
            return settings.max_deliver if existing is None else int(existing)
    except nats.js.errors.NotFoundError:
        pass
    except nats.js.errors.APIError as exc:
        if exc.err_code == 10059:  # stream not found
            raise NamespaceNotFoundError(
                f"stream {layout.stream} does not exist; start df-server for namespace "
                f"{layout.namespace!r} first (or `df dev`)"
            ) from exc
        raise TransportError(f"reading consumer {name}: {exc.description or exc}") from exc
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransportError(f"reading consumer {name} failed: {exc}") from exc
    try:
        await js.add_consumer(layout.stream, config)
    except nats.js.errors.APIError as exc:
        if exc.err_code == 10059:
            raise NamespaceNotFoundError(
                f"stream {layout.stream} does not exist; start df-server for namespace "
                f"{layout.namespace!r} first (or `df dev`)"
            ) from exc
        raise TransportError(f"cannot create consumer {name}: {exc.description}") from exc
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransportError(f"creating consumer {name} failed: {exc}") from exc
    return settings.max_deliver


async def queue_depths(js: JetStreamContext, layout: Layout, task_queue: str) -> dict[str, int]:
    """Tasks waiting (not yet delivered) and in flight, per kind, for ``task_queue``."""
    out: dict[str, int] = {}
    for kind, name, subject in (
        ("workflow", layout.workflow_consumer(task_queue), layout.workflow_tasks(task_queue)),
        ("activity", layout.activity_consumer(task_queue), layout.activity_tasks(task_queue)),
    ):
        try:
            try:
                info = await js.consumer_info(layout.stream, name)
            except nats.js.errors.NotFoundError:
                # no worker has ever served this queue: every task stored for it is waiting
                stream = await js.stream_info(layout.stream, subjects_filter=subject)
                out[f"{kind}_pending"] = int((stream.state.subjects or {}).get(subject, 0))
                out[f"{kind}_in_flight"] = 0
                continue
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransportError(
                f"reading the depth of task queue {task_queue!r} failed: {exc}"
            ) from exc
        out[f"{kind}_pending"] = int(info.num_pending or 0)
        out[f"{kind}_in_flight"] = int(info.num_ack_pending or 0)
    return out


async def consumer_backlog(js: JetStreamContext, layout: Layout, name: str) -> int:
    """Messages consumer ``name`` has not delivered yet or not seen acknowledged (0: absent)."""
    try:
        info = await js.consumer_info(layout.stream, name)
    except nats.js.errors.NotFoundError:
        return 0
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransportError(f"reading the backlog of consumer {name!r} failed: {exc}") from exc
    return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
