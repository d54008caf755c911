"""`df auth init`: nats-server itself enforces what each role may do, tested against the
configuration it generates (a real nats-server started from it, real daemons and clients)."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from nats.aio.client import Client as NATS

import durablefuture as df
from daemons.df_cli import main as df_main
from durablefuture.auth import DEAD_LETTER_CONSUMER, read_credentials, write
from durablefuture.codec.wire import InputEnvelope, default_codec
from durablefuture.core import events as ev
from durablefuture.core import inputs as inp
from durablefuture.core.errors import InvalidArgumentError
from durablefuture.natsserver import NatsServer
from durablefuture.server import Server, ServerOptions
from durablefuture.testing import LocalEnvironment
from durablefuture.transport.connection import connect
from durablefuture.transport.headers import REPLY_HEADER
from durablefuture.transport.subjects import Layout, sticky_token
from tests.conftest import wait_for


def checked(order_id: str) -> str:
    return f"checked {order_id}"


def guarded(order_id: str):  # type: ignore[no-untyped-def]
    df.workflow.set_query_handler("order", lambda: order_id)
    df.workflow.set_update_handler("note", lambda text: f"{order_id}: {text}")
    opts = df.ActivityOptions(start_to_close_timeout=5)
    checked_ = yield df.activity(checked, order_id, options=opts)
    go = yield df.wait_signal("go")
    return f"{checked_} {go}"


def test_auth_init_writes_an_include_file_and_private_credentials(tmp_path: Path) -> None:
    out = tmp_path / "auth"
    result = CliRunner().invoke(
        df_main, ["auth", "init", "--out", str(out), "--namespace", "a", "--namespace", "b"]
    )
    assert result.exit_code == 0, result.output
    conf = (out / "df-auth.conf").read_text()
    assert "DF_a: {" in conf and "DF_b: {" in conf and conf.count("jetstream: enabled") == 2
    # clients may ask df-server to start a run (a core request, exported to their account)
    for ns in ("a", "b"):
        assert conf.count(f'"dfev.{ns}.start"') >= 3  # client, admin, the export
    for ns in ("a", "b"):
        for role in ("server", "worker", "client", "admin"):
            path = out / ns / f"{role}.creds"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert read_credentials(path).public_key in conf
    # never silently replaced: running it again needs --force
    again = CliRunner().invoke(df_main, ["auth", "init", "--out", str(out), "--namespace", "a"])
    assert again.exit_code != 0 and "--force" in again.output
    with pytest.raises(InvalidArgumentError, match="namespace"):
        write(tmp_path / "x", ["bad namespace"])
    with pytest.raises(InvalidArgumentError, match="not a NATS credentials file"):
        (tmp_path / "junk").write_text("hello\n")
        read_credentials(tmp_path / "junk")


class Probe:
    """A raw connection with one role's credentials, attempting what that role must not do."""

    def __init__(self, nc: NATS, caplog: pytest.LogCaptureFixture) -> None:
        self.nc = nc
        self.caplog = caplog

    async def refused(self, subject: str, attempt: Callable[[], Awaitable[object]]) -> None:
        """``attempt`` is refused by nats-server, and our side logs a clear line naming it."""
        seen = len(self.caplog.records)
        await attempt()
        await self.nc.flush()

        def logged() -> bool:
            return any(
                "NATS refused" in r.getMessage()
                and "permissions violation" in r.getMessage().lower()
                and subject.lower() in r.getMessage().lower()
                for r in self.caplog.records[seen:]
            )

        await wait_for(logged, 10)

    async def publish_refused(self, subject: str, data: bytes = b"{}", **kw: object) -> None:
        await self.refused(subject, lambda: self.nc.publish(subject, data, **kw))  # type: ignore[arg-type]

    async def subscribe_refused(self, subject: str) -> None:
        await self.refused(subject, lambda: self.nc.subscribe(subject))


async def _probe(env: LocalEnvironment, role: str, caplog: pytest.LogCaptureFixture) -> Probe:
    return Probe(await connect(env.nats_url, creds=env.creds(role), timeout=10), caplog)


async def test_roles_run_workflows_and_nats_refuses_every_forgery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    codec = default_codec()
    # eager start off: this test counts the worker's reports asked of df-server across the
    # accounts, and an eager start's first report is an offer's answer instead (offers across
    # the accounts: test_auth_eager.py)
    options = ServerOptions(namespace="default", status_delay=0, eager_start_wait=0)
    async with LocalEnvironment(auth=True, server_options=options) as env:
        async with env.worker(workflows=[guarded], activities=[checked]) as worker:
            client = env.client
            layout = client.layout
            # the worker (worker credentials) bound a sticky consumer of its own
            token = sticky_token(worker.identity)
            sticky = layout.sticky_consumer("default", token)
            info = await client.pub.js.consumer_info(layout.stream, sticky)
            assert info.config.filter_subject == layout.sticky_tasks("default", token)
            handle = await client.start_workflow(guarded, "o-1", id="victim")
            run_id = handle.run_id or ""

            async def waiting() -> bool:
                return any(
                    isinstance(e, ev.SignalWaitStarted) for e in await handle.fetch_history()
                )

            await wait_for(waiting, 15)
            before = await handle.fetch_history()
            completed = next(e for e in before if isinstance(e, ev.ActivityCompleted))
            forged_report = InputEnvelope(
                "victim", input=inp.CompleteActivityTask(run_id, completed.seq, 1, "forged")
            )
            summary = b'{"status": "completed", "result": "forged"}'
            status_key = f"$KV.{layout.runs_bucket}.{layout.status_key('victim', run_id)}"
            history = layout.history("victim", run_id)
            stored = (
                await client.pub.js.stream_info(layout.stream, subjects_filter=history)
            ).state.subjects
            assert stored
            server = env.server
            assert server is not None
            # the worker's reports reached df-server as requests (worker credentials may send
            # them across the accounts), not only through the stored fallback
            assert server.stats["report_requests"] >= 2
            # and its answer granted the worker the activity its decision scheduled (eager)
            assert server.stats["eager_granted"] >= 1
            # and the client's start reached it as a request (client credentials may send it
            # across the accounts), not through the stored fallback
            assert server.stats["start_requests"] >= 1
            for role in ("client", "worker", "admin"):
                probe = await _probe(env, role, caplog)
                try:
                    # a WorkflowCompleted appended to the run's history
                    await probe.publish_refused(history, b'{"events": [{"t": "completed"}]}')
                    # a closed notice that would make a waiting result() return a forged value
                    await probe.publish_refused(layout.closed_notice("victim", run_id), summary)
                    # the status entry rewritten
                    await probe.publish_refused(status_key, summary)
                    # a timer fired early, a child's result forged
                    await probe.publish_refused(layout.input("timer"))
                    await probe.publish_refused(layout.input("server"))
                    # the server's inputs taken or acknowledged from under it
                    await probe.publish_refused(
                        f"$JS.API.CONSUMER.MSG.NEXT.{layout.stream}.{layout.server_consumer}"
                    )
                    # a run removed before its retention is over, or messages purged, or the
                    # removals taken from under df-server
                    await probe.publish_refused(layout.removal("expire"))
                    # an eager attempt's check list forged, or fired early
                    await probe.publish_refused(layout.check_list("forged"))
                    await probe.publish_refused(layout.removal("check-list"))
                    await probe.publish_refused(
                        f"$JS.API.CONSUMER.MSG.NEXT.{layout.stream}.{layout.removal_consumer}"
                    )
                    await probe.publish_refused(f"$JS.API.STREAM.PURGE.{layout.stream}")
                    if role != "admin":  # deleting a closed run is the admin's
                        await probe.publish_refused(layout.removal("delete"))
                    # the replies of other users sniffed
                    await probe.subscribe_refused("_INBOX.>")
                    await probe.subscribe_refused(f"{layout.prefix}.>")
                    if role != "worker":
                        # a forged activity completion / activity task
                        await probe.publish_refused(
                            layout.input("report"), codec.encode_input(forged_report)
                        )
                        # nor asked of df-server as a request
                        await probe.publish_refused(
                            layout.report_requests, codec.encode_input(forged_report)
                        )
                        await probe.publish_refused(
                            layout.activity_tasks("default"), b'{"v": 1, "task": {}}'
                        )
                        await probe.publish_refused(layout.workflow_tasks("default"))
                        await probe.publish_refused(layout.sticky_tasks("default", token))
                        # nor take a worker's sticky tasks
                        await probe.publish_refused(
                            f"$JS.API.CONSUMER.CREATE.{layout.stream}.{sticky}."
                            f"{layout.sticky_tasks('default', token)}"
                        )
                        await probe.publish_refused(
                            f"$JS.API.CONSUMER.MSG.NEXT.{layout.stream}."
                            f"{layout.activity_consumer('default')}"
                        )
                    else:
                        # a worker neither signals, starts, cancels nor terminates
                        term = inp.TerminateWorkflow(run_id, "t1", "evil")
                        await probe.publish_refused(
                            layout.input("run"),
                            codec.encode_input(InputEnvelope("victim", input=term)),
                        )
                        await probe.publish_refused(layout.input("start"))
                        await probe.publish_refused(layout.start_requests)
                        await probe.subscribe_refused(f"{layout.events_prefix}.closed.>")
                finally:
                    await probe.nc.close()

            # a report on a subject the client may write: stored, refused by df-server
            caplog.clear()
            dead = server.stats["dead_letters"]
            await client.pub.publish(layout.input("run"), codec.encode_input(forged_report))
            await wait_for(lambda: server.stats["dead_letters"] > dead, 10)
            assert any(
                "refused an input" in r.getMessage() and "CompleteActivityTask" in r.getMessage()
                for r in caplog.records
            )

            # a Df-Reply naming the victim's history: df-server never answers there
            request = inp.StartWorkflowRequest(
                "deputy", "guarded", "default", request_id="r-deputy", args=("o-2",)
            )
            await client.pub.publish(
                layout.input("start"),
                codec.encode_input(InputEnvelope("deputy", start=request)),
                {REPLY_HEADER: history},
            )
            deputy = client.get_workflow_handle("deputy")

            async def deputy_started() -> bool:
                try:
                    return bool(await deputy.fetch_history())
                except df.DurableFutureError:
                    return False

            await wait_for(deputy_started, 10)

            # replies that other services would send where the asker names: a worker's query
            # answer, JetStream's PubAck and API answers (those reach the users' account only,
            # where no stream stores anything)
            caplog.clear()
            query = orjson.dumps({"wid": "victim", "run": run_id, "name": "state", "args": []})
            await client.nc.publish(layout.query("default"), query, reply=history)
            await wait_for(lambda: any("refused a query" in r.getMessage() for r in caplog.records))
            for subject in (
                layout.input("run"),
                f"$JS.API.STREAM.INFO.{layout.stream}",
                f"$JS.API.DIRECT.GET.{layout.stream}.{history}",
                f"$JS.API.CONSUMER.INFO.{layout.stream}.{layout.server_consumer}",
            ):
                await client.nc.publish(subject, b"junk", reply=history)
            await client.nc.publish(layout.input("run"), b"junk", reply=layout.input("start"))
            # a start request whose reply names the victim's history: refused, and its answer
            # reaches the users' account only
            await client.nc.publish(layout.start_requests, b"junk", reply=history)
            await client.nc.flush()
            # the junk on in.run is dead-lettered once df-server read it: what came before it
            # (each answer) has been stored, if anywhere, by then
            dead = server.stats["dead_letters"]
            await client.nc.publish(layout.input("run"), b"last")
            await wait_for(lambda: server.stats["dead_letters"] >= dead + 1, 10)
            info = await client.pub.js.stream_info(layout.stream, subjects_filter=history)
            assert info.state.subjects == stored
            assert await handle.fetch_history() == before
            assert (await handle.describe()).status == "running"

            # the legitimate roles still work end to end
            assert await handle.query("order") == "o-1"
            assert await handle.update("note", "gift wrap") == "o-1: gift wrap"
            await handle.signal("go", "now")
            assert await handle.result(timeout=15) == "checked o-1 now"
            await deputy.terminate("done")

            # the admin deletes a closed run; an open one is refused
            admin = await df.Client.connect(env.nats_url, creds=env.creds("admin"))
            try:
                await admin.get_workflow_handle("victim").delete()
                with pytest.raises(df.WorkflowNotFoundError):
                    await handle.fetch_history()
                assert await client.summary("victim", run_id) is None
                await client.start_workflow(guarded, "o-3", id="open")
                with pytest.raises(df.WorkflowStillOpenError, match="still open"):
                    await admin.get_workflow_handle("open").delete()
                assert await client.get_workflow_handle("open").fetch_history()
            finally:
                await admin.close()


async def test_namespaces_are_separate_accounts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    files = write(tmp_path / "auth", ["a", "b"])
    creds = {f"{ns}/{role}": str(p) for (ns, role), p in files.creds.items()}
    nats_server = NatsServer(str(tmp_path / "nats"), include=str(files.config)).start()
    servers: list[Server] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        # nobody gets in without credentials
        with pytest.raises(df.DurableFutureError):
            await connect(nats_server.url, timeout=1)
        for ns in ("a", "b"):
            server = await Server.connect(
                nats_server.url, ServerOptions(namespace=ns), creds=creds[f"{ns}/server"]
            )
            await server.start()
            servers.append(server)
            tasks.append(asyncio.create_task(server.run()))
        client_a = await df.Client.connect(nats_server.url, "a", creds=creds["a/client"])
        worker_client = await df.Client.connect(nats_server.url, "a", creds=creds["a/worker"])
        try:
            async with df.Worker(worker_client, "default", [guarded], [checked]):
                handle = await client_a.start_workflow(guarded, "o-a", id="secret")
                run_id = handle.run_id or ""

                async def waiting() -> bool:
                    history = await handle.fetch_history()
                    return any(isinstance(e, ev.SignalWaitStarted) for e in history)

                await wait_for(waiting, 15)
                before = await handle.fetch_history()
                lay_a = Layout("a")
                for role in ("client", "admin", "server"):
                    nc = await connect(nats_server.url, creds=creds[f"b/{role}"], timeout=10)
                    probe = Probe(nc, caplog)
                    try:
                        js = nc.jetstream(timeout=2)
                        # a's stream does not exist in b's account: not listable, not readable
                        names = await js.streams_info() if role != "client" else []
                        assert all(not s.config.name.startswith("DF_a") for s in names)
                        with pytest.raises(Exception, match=r"(?i)not found|no responders|timeout"):
                            await js.stream_info(lay_a.stream)
                        with pytest.raises(Exception, match=r"(?i)not found|no responders|timeout"):
                            await js.get_last_msg(lay_a.stream, lay_a.history("secret", run_id))
                        if role == "server":
                            # even b's server, which may publish anything in its own account,
                            # reaches nothing of a's: no stream of its account stores df.a.>
                            seen: list[object] = []

                            async def collect(msg: object, box: list[object] = seen) -> None:
                                box.append(msg)

                            sub = await nc.subscribe("df.a.>", cb=collect)
                            await nc.flush()
                            await handle.signal("noise", 1)  # a's traffic: invisible to b
                            await nc.flush()
                            assert seen == []
                            await sub.unsubscribe()
                            term = inp.TerminateWorkflow(run_id, "t-b", "cross-tenant")
                            ack = js.publish(
                                lay_a.input("run"),
                                default_codec().encode_input(InputEnvelope("secret", input=term)),
                            )
                            with pytest.raises(Exception, match=r"(?i)no respon|timeout"):
                                await ack  # no stream of b's account stores df.a.>
                        else:
                            # b's users may not even name a's subjects
                            await probe.publish_refused(lay_a.input("run"))
                            await probe.subscribe_refused("df.a.>")
                            # nor list or count a's runs through a's visibility index
                            await probe.publish_refused(lay_a.visibility)
                    finally:
                        await nc.close()
                after = [e for e in await handle.fetch_history() if e not in before]
                assert all(isinstance(e, ev.SignalReceived) for e in after), after
                assert (await handle.describe()).status == "running"
                await handle.signal("go", "ok")
                assert await handle.result(timeout=15) == "checked o-a ok"
        finally:
            await client_a.close()
            await worker_client.close()
    finally:
        for server in servers:
            await server.shutdown()
        for task in tasks:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        nats_server.cleanup()


def test_seed_files_are_read_with_or_without_the_decoration(tmp_path: Path) -> None:
    files = write(tmp_path / "auth", ["a"])
    seed = read_credentials(files.creds[("a", "worker")]).seed
    bare = tmp_path / "bare.nk"
    bare.write_text(seed + "\n")
    assert read_credentials(bare).seed == seed
    assert os.stat(files.config).st_mode & 0o077 == 0


async def test_daemons_and_the_cli_log_in_with_their_role_credentials(tmp_path: Path) -> None:
    from tests.conftest import Daemons

    files = write(tmp_path / "auth", ["default"])
    creds = {role: str(p) for (_, role), p in files.creds.items()}
    nats_server = NatsServer(str(tmp_path / "nats"), include=str(files.config)).start()
    daemons = Daemons(tmp_path, nats_server.url)
    try:
        daemons.server("--creds", creds["server"])
        daemons.worker(
            "--creds",
            creds["worker"],
            "--workflows",
            "workflows_examples:WORKFLOWS",
            "--activities",
            "workflows_examples:ACTIVITIES",
            task_queue="examples",
        )
        args = ["--nats", nats_server.url, "--creds", creds["client"], "--json", "workflow"]
        start = [*args, "start", "order_workflow", "--id", "o-1", "--task-queue", "examples"]
        start += ["--input", '["o-1", 42.0]', "--wait"]

        def run_cli() -> object:
            result = CliRunner().invoke(df_main, start)
            return result if result.exit_code == 0 else None

        # the namespace exists once df-server is up: until then the start is refused
        result = await wait_for(lambda: asyncio.to_thread(run_cli), 60)
        assert "TRACK-O-1" in result.output, daemons.logs()  # type: ignore[attr-defined]
        assert "violation" not in daemons.logs().lower(), daemons.logs()
    finally:
        daemons.stop_all()
        nats_server.cleanup()


async def test_schedules_and_dead_letters_with_role_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from nats.js.api import AckPolicy, ConsumerConfig

    from tests.integration.test_schedules import every_second, quick

    caplog.set_level(logging.INFO)
    async with LocalEnvironment(auth=True) as env:
        async with env.worker(task_queue="sq", workflows=[quick]):
            client = env.client
            handle = await client.create_schedule("s1", every_second(quick, df.Overlap.SKIP))

            async def ran() -> bool:
                d = await handle.describe()
                return any(a.status == "completed" for a in d.recent_actions)

            await wait_for(ran, 20)
            assert [s.schedule_id for s in await client.list_schedules()] == ["s1"]
            await handle.pause("enough")
            await handle.delete()

        # junk on a client's input subject ends as a dead letter; admin reads it with a
        # consumer of its own, a client may not create one
        layout = client.layout
        server = env.server
        assert server is not None
        dead = server.stats["dead_letters"]
        await client.pub.publish(layout.input("run"), b"junk")
        await wait_for(lambda: server.stats["dead_letters"] > dead, 10)
        config = ConsumerConfig(
            name=DEAD_LETTER_CONSUMER,
            filter_subject=layout.dead_letters(),
            ack_policy=AckPolicy.NONE,
        )
        probe = await _probe(env, "client", caplog)
        try:
            subject = (
                f"$JS.API.CONSUMER.CREATE.{layout.stream}.{DEAD_LETTER_CONSUMER}."
                f"{layout.dead_letters()}"
            )
            await probe.publish_refused(subject)
        finally:
            await probe.nc.close()
        admin = await connect(env.nats_url, creds=env.creds("admin"), timeout=10)
        try:
            js = admin.jetstream(timeout=5)
            await js.add_consumer(layout.stream, config)
            sub = await js.pull_subscribe_bind(DEAD_LETTER_CONSUMER, stream=layout.stream)
            msgs = await sub.fetch(1, timeout=5)
            assert msgs[0].subject.startswith(f"{layout.prefix}.dlq.")
        finally:
            await admin.close()


def test_each_input_subject_carries_only_its_senders_inputs() -> None:
    from durablefuture.server.sources import refusal

    start = InputEnvelope(
        "w", start=inp.StartWorkflowRequest("w", "t", "q", request_id="r", args=())
    )
    signal = InputEnvelope("w", input=inp.SignalWorkflow("run", "s", "r1"))
    update = InputEnvelope("w", input=inp.AcceptUpdate("run", "u1", "add"))
    report = InputEnvelope("w", input=inp.CompleteActivityTask("run", 1, 1, "x"))
    child = InputEnvelope("w", input=inp.RecordChildStarted("run", 1, "child"))
    allowed = {
        "start": {"start"},
        "run": {"signal", "update"},
        "report": {"report"},
        "server": {"start", "signal", "update", "report", "child"},
        "timer": {"start", "signal", "update", "report", "child"},
        "other": set(),
    }
    envs = {"start": start, "signal": signal, "update": update, "report": report, "child": child}
    for kind, ok in allowed.items():
        for name, env in envs.items():
            reason = refusal(kind, env)
            assert (reason is None) == (name in ok), (kind, name, reason)


def test_df_dev_runs_an_example_with_auth(tmp_path: Path) -> None:
    import subprocess
    import sys

    data = tmp_path / "dev"
    command = ["daemons.df_cli", "dev", "--auth", "--run", "order", "--data-dir", str(data)]
    done = subprocess.run(
        [sys.executable, "-m", *command],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "TRACK-" in done.stdout, done.stdout
    log = (data / "nats" / "nats-server.log").read_text()
    assert "Violation" not in log, log
    conf = (data / "nats" / "auth" / "df-auth.conf").read_text()
    assert "DF_default_users" in conf
