"""The account boundary of `df auth init`, attacked through reply subjects and the JetStream API.

Publish permissions check the subject of a message, never its reply subject. Inside one account
every JetStream answer (a PubAck, an API answer, a direct get's copy of a stored message, a
pull's deliveries, an ack's confirmation) goes to whatever reply subject the asker names, and
the stream stores it when the stream's subjects match. These tests name the subjects that
matter (a run's history, its closed notice, its status entry, the server consumer's acks, the
JetStream API) as reply subjects of every request each role may make, and check that nothing
of it was stored or done: the worker, client and admin users live in an account apart from
the stream, where those answers land with no stream to store them (a closed notice there is
only a hint: the client believes it once the run's history ends the same way).
"""

from __future__ import annotations

import json
import logging

import pytest

from durablefuture.auth import DEAD_LETTER_CONSUMER, read_credentials
from durablefuture.core import events as ev
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.connection import connect
from durablefuture.transport.subjects import Layout, sticky_token
from tests.conftest import wait_for
from tests.integration.test_auth import Probe, _probe, checked, guarded


def _replies_targets(layout: Layout, workflow_id: str, run_id: str) -> list[str]:
    """Subjects an answer must never reach: what the stream stores and what JetStream obeys."""
    s = layout.stream
    return [
        layout.history(workflow_id, run_id),
        layout.closed_notice(workflow_id, run_id),
        f"$KV.{layout.runs_bucket}.{layout.status_key(workflow_id, run_id)}",
        layout.input("timer"),
        layout.workflow_tasks("default"),
        f"$JS.API.STREAM.PURGE.{s}",
        f"$JS.API.STREAM.DELETE.{s}",
        f"$JS.API.CONSUMER.DELETE.{s}.{layout.server_consumer}",
    ]


async def test_no_role_gets_an_answer_stored_or_obeyed_through_its_reply_subject(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with LocalEnvironment(auth=True) as env:
        async with env.worker(workflows=[guarded], activities=[checked]):
            client = env.client
            layout = client.layout
            s = layout.stream
            handle = await client.start_workflow(guarded, "o-1", id="victim")
            run_id = handle.run_id or ""

            async def waiting() -> bool:
                return any(
                    isinstance(e, ev.SignalWaitStarted) for e in await handle.fetch_history()
                )

            await wait_for(waiting, 15)
            before = await handle.fetch_history()
            history = layout.history("victim", run_id)
            js = client.pub.js
            stored = (await js.stream_info(s, subjects_filter=f"{layout.prefix}.>")).state
            server_consumer = await js.consumer_info(s, layout.server_consumer)
            # listed as running once it has been open ServerOptions.status_delay
            summary = await wait_for(lambda: client.summary("victim", run_id), 15)
            targets = _replies_targets(layout, "victim", run_id)
            server = env.server
            assert server is not None
            for role in ("worker", "client", "admin"):
                nc = await connect(env.nats_url, creds=env.creds(role), timeout=10)
                try:
                    if role == "worker":
                        # an idle queue's consumer of its own: a pull answers with a status
                        idle = layout.activity_tasks("idle")
                        config = {
                            "name": "at_idle",
                            "filter_subject": idle,
                            "ack_policy": "explicit",
                        }
                        body = json.dumps({"stream_name": s, "config": config}).encode()
                        created = await nc.request(
                            f"$JS.API.CONSUMER.CREATE.{s}.at_idle.{idle}", body, timeout=10
                        )
                        assert b'"error"' not in created.data, created.data
                    requests: list[tuple[str, bytes]] = [
                        (f"$JS.API.STREAM.INFO.{s}", b""),
                        (f"$JS.API.DIRECT.GET.{s}.{history}", b""),  # a copy of a real event
                        (f"$JS.API.DIRECT.GET.{s}", json.dumps({"last_by_subj": history}).encode()),
                        (f"$JS.API.CONSUMER.INFO.{s}.{layout.server_consumer}", b""),
                    ]
                    if role == "worker":
                        requests += [
                            (layout.input("report"), b"junk"),  # a PubAck
                            (f"$KV.{layout.activity_bucket}.junk", b"junk"),
                            (
                                f"$JS.API.CONSUMER.MSG.NEXT.{s}.at_idle",
                                json.dumps({"batch": 1, "no_wait": True}).encode(),
                            ),
                        ]
                    else:
                        requests += [
                            (layout.input("run"), b"junk"),  # a PubAck
                            (layout.input("start"), b"junk"),
                            (layout.visibility, b"junk"),  # df-server's visibility answers
                            (layout.query("default"), b"junk"),  # a worker's query answer
                        ]
                    for target in targets:
                        for subject, data in requests:
                            await nc.publish(subject, data, reply=target)
                    await nc.flush()
                finally:
                    await nc.close()
            # junk on in.run is dead-lettered once df-server read it: every answer to what came
            # before it has been stored, if anywhere, by then
            dead = server.stats["dead_letters"]
            await client.nc.publish(layout.input("run"), b"last")
            await wait_for(lambda: server.stats["dead_letters"] > dead, 15)
            await client.nc.flush()

            after = (await js.stream_info(s, subjects_filter=f"{layout.prefix}.>")).state
            assert after.subjects is not None and stored.subjects is not None
            for subject, count in after.subjects.items():
                # only inputs (the junk above, dead-lettered) and dead letters were added
                if count > stored.subjects.get(subject, 0):
                    assert subject.startswith((f"{layout.prefix}.in.", f"{layout.prefix}.dlq.")), (
                        subject,
                        count,
                        stored.subjects.get(subject),
                    )
            assert await handle.fetch_history() == before
            assert await client.summary("victim", run_id) == summary
            assert (await handle.describe()).status == "running"
            # the server consumer was not deleted through a reply subject
            now = await js.consumer_info(s, layout.server_consumer)
            assert now.config.name == server_consumer.config.name
            # and the run goes on
            await handle.signal("go", "now")
            assert await handle.result(timeout=15) == "checked o-1 now"


async def test_each_role_is_refused_the_stream_api_other_consumers_and_other_inboxes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with LocalEnvironment(auth=True) as env:
        async with env.worker(workflows=[guarded], activities=[checked]) as worker:
            client = env.client
            layout = client.layout
            s = layout.stream
            token = sticky_token(worker.identity)
            keys = {
                role: read_credentials(env.creds(role)).public_key
                for role in ("server", "worker", "client", "admin")
            }
            handle = await client.start_workflow(guarded, "o-1", id="victim")
            run_id = handle.run_id or ""
            assert env.server is not None
            # where df-server's requests (PubAcks, API answers) are answered: "_INBOX.<nuid>."
            server_inbox = bytes(env.server.nc._resp_sub_prefix or b"").decode().rstrip(".")
            status_key = f"$KV.{layout.runs_bucket}.{layout.status_key('victim', run_id)}"
            for role in ("worker", "client", "admin"):
                probe: Probe = await _probe(env, role, caplog)
                try:
                    for verb in ("DELETE", "UPDATE", "PURGE", "SNAPSHOT"):
                        await probe.publish_refused(f"$JS.API.STREAM.{verb}.{s}")
                    await probe.publish_refused(f"$JS.API.STREAM.CREATE.{s}")
                    await probe.publish_refused(f"$JS.API.STREAM.MSG.DELETE.{s}")
                    # nobody deletes consumers but their own kind
                    for consumer in (
                        layout.server_consumer,
                        layout.schedule_consumer,
                        layout.removal_consumer,
                    ):
                        await probe.publish_refused(f"$JS.API.CONSUMER.DELETE.{s}.{consumer}")
                    # a consumer whose filter reads histories, inputs or everything
                    for name, filter_ in (
                        ("x", f"{layout.prefix}.h.>"),
                        ("x", f"{layout.prefix}.in.>"),
                        ("x", f"{layout.prefix}.>"),
                    ):
                        await probe.publish_refused(f"$JS.API.CONSUMER.CREATE.{s}.{name}.{filter_}")
                    # the old create subjects carry no filter: a consumer on the whole stream
                    await probe.publish_refused(f"$JS.API.CONSUMER.CREATE.{s}")
                    await probe.publish_refused(f"$JS.API.CONSUMER.CREATE.{s}.x")
                    await probe.publish_refused(f"$JS.API.CONSUMER.DURABLE.CREATE.{s}.x")
                    # status entries are df-server's
                    await probe.publish_refused(status_key)
                    await probe.publish_refused(f"$KV.{layout.runs_bucket}.x")
                    # the replies of every other user, and the server's
                    for other, key in keys.items():
                        if other != role:
                            await probe.subscribe_refused(f"_INBOX.{key}.>")
                    # answers only to requests it got: no publishing into others' inboxes
                    await probe.publish_refused(f"_INBOX.{keys['server']}.x")
                    # df-server's replies come to nats-py's usual inbox prefix (its user may
                    # read its whole account, whose own inboxes are never exported): no user
                    # reads or writes there either
                    assert server_inbox.startswith("_INBOX.") and len(server_inbox) == 29
                    assert keys["server"] not in server_inbox
                    await probe.subscribe_refused(f"{server_inbox}.>")
                    await probe.subscribe_refused(f"{server_inbox}.*")
                    await probe.publish_refused(f"{server_inbox}.x")
                    if role == "worker":
                        # dead letters are the admin's to read, through a consumer no worker
                        # may take or make first
                        await probe.publish_refused(
                            f"$JS.API.CONSUMER.MSG.NEXT.{s}.{DEAD_LETTER_CONSUMER}"
                        )
                        await probe.publish_refused(
                            f"$JS.API.CONSUMER.CREATE.{s}.{DEAD_LETTER_CONSUMER}."
                            f"{layout.workflow_tasks('default')}"
                        )
                    else:
                        for consumer in (
                            layout.activity_consumer("default"),
                            layout.workflow_consumer("default"),
                            layout.sticky_consumer("default", token),
                        ):
                            await probe.publish_refused(f"$JS.API.CONSUMER.DELETE.{s}.{consumer}")
                            await probe.publish_refused(f"$JS.ACK.{s}.{consumer}.1.1.1.1.0")
                        await probe.publish_refused(f"$KV.{layout.activity_bucket}.x")
                    # nats-server keeps ack subjects out of reply subjects (and drops the
                    # connection that tried)
                    ack = f"$JS.ACK.{s}.{layout.server_consumer}.1.1.1.1.0"
                    await probe.refused(
                        ack,
                        lambda p=probe, a=ack: p.nc.publish(f"$JS.API.STREAM.INFO.{s}", reply=a),
                    )
                finally:
                    await probe.nc.close()
            # nothing of it reached the run
            await handle.signal("go", "ok")
            assert await handle.result(timeout=15) == "checked o-1 ok"


async def test_df_server_answers_a_visibility_request_only_on_an_inbox(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # inside one account (no logins here) a reply subject naming the JetStream API would have
    # df-server, with all its permissions, delete the stream; it answers inboxes only
    caplog.set_level(logging.INFO)
    async with LocalEnvironment() as env:
        client = env.client
        layout = client.layout
        s = layout.stream
        handle = await client.start_workflow(guarded, "o-1", id="victim")
        run_id = handle.run_id or ""

        async def counted() -> bool:  # the index answers an inbox (once it has the run)
            return await client.count_workflows() >= 1

        await wait_for(counted, 15)
        request = json.dumps({"op": "count", "query": ""}).encode()
        for reply in (f"$JS.API.STREAM.DELETE.{s}", layout.history("victim", run_id)):
            caplog.clear()
            await client.nc.publish(layout.visibility, request, reply=reply)
            await wait_for(
                lambda r=reply: any(
                    "refused a visibility request" in x.getMessage() and r in x.getMessage()
                    for x in caplog.records
                ),
                10,
            )
        info = await client.pub.js.stream_info(s)
        assert info.config.name == s
        assert await handle.fetch_history()
        await handle.terminate("done")


def test_only_inbox_and_export_replies_are_answered_and_the_server_user_is_unrestricted() -> None:
    from durablefuture.auth import generate, permissions
    from durablefuture.core.errors import MessageRejectedError
    from durablefuture.transport.guard import check_reply_subject, check_service_reply

    assert check_service_reply("_INBOX.abc.1") == "_INBOX.abc.1"
    assert check_service_reply("_R_.aBc123.xYz") == "_R_.aBc123.xYz"
    for bad in ("$JS.API.STREAM.DELETE.DF_a", "df.a.h.w.r", "$KV.DF_a_runs.k", "_R_", "a b"):
        with pytest.raises(MessageRejectedError):
            check_service_reply(bad)
    with pytest.raises(MessageRejectedError):
        check_reply_subject("_R_.aBc123.xYz")  # df-server's own replies go to inboxes only

    config, seeds = generate(["a"])
    server_key = _public_key(seeds[("a", "server")])
    # the server user: no permissions block (everything in its account, nothing checked)
    (line,) = [x for x in config.splitlines() if f'nkey: "{server_key}"' in x]
    assert "permissions" not in line
    assert permissions("server", "a", server_key).unrestricted
    for role in ("worker", "client", "admin"):
        key = _public_key(seeds[("a", role)])
        (line,) = [x for x in config.splitlines() if f'nkey: "{key}"' in x]
        assert "permissions" in line and not permissions(role, "a", key).unrestricted
    worker = permissions("worker", "a", _public_key(seeds[("a", "worker")]))
    for denied in (
        f"$JS.API.CONSUMER.MSG.NEXT.DF_a.{DEAD_LETTER_CONSUMER}",
        f"$JS.API.CONSUMER.CREATE.DF_a.{DEAD_LETTER_CONSUMER}.>",
        f"$JS.API.CONSUMER.DELETE.DF_a.{DEAD_LETTER_CONSUMER}",
        f"$JS.ACK.DF_a.{DEAD_LETTER_CONSUMER}.>",
    ):
        assert denied in worker.publish_deny


def _public_key(seed: str) -> str:
    from durablefuture.transport.credentials import public_key_of

    return public_key_of(seed)
