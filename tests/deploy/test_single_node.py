"""README "Running it for real": its commands, run as written (ports and folders made local)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import durablefuture as df
from durablefuture.natsserver import free_port
from tests.conftest import ROOT, wait_namespace

CONF = ROOT / "deploy" / "nats" / "single-node.conf"
BIN = Path(sys.executable).parent


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Running it for real") :]
    block = section[section.index("```bash") + len("```bash") : section.index("```\n", 8)]
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = [line.split("#", 1)[0].strip() for line in joined.splitlines()]
    return [shlex.split(line) for line in lines if line]


def test_the_single_node_config_fsyncs_and_is_valid(tmp_path: Path) -> None:
    text = CONF.read_text()
    assert re.search(r"^\s*sync_interval:\s*always", text, re.M)
    assert re.search(r"^host:\s*127\.0\.0\.1", text, re.M)
    nats_server = BIN / "nats-server"
    out = subprocess.run(
        [str(nats_server), "-t", "-c", str(CONF)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_readme_production_commands_run_the_order_example(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    commands = readme_commands()
    assert [c[0] for c in commands] == ["nats-server", "df-server", "df-worker"]
    app = tmp_path / "my_app"  # the user's package, in the folder the worker starts in
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "flows.py").write_text("from workflows_examples.order import order_workflow\n")
    (app / "activities.py").write_text(
        "from workflows_examples.order import charge_credit_card, ship_package\n"
    )
    port, http, metrics = free_port(), free_port(), free_port()
    url = f"nats://127.0.0.1:{port}"
    store = tmp_path / "store"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DF_")}
    env["PYTHONPATH"] = str(ROOT)  # workflows_examples, which my_app re-exports
    logs = []
    conf_text = CONF.read_text()
    assert conf_text.count("store_dir: /var/lib/durablefuture/nats") == 1
    conf = tmp_path / "single-node.conf"  # the user's copy, with their store folder
    conf.write_text(conf_text.replace("/var/lib/durablefuture/nats", str(store)))
    for argv in commands:
        argv = [str(BIN / argv[0]), *argv[1:]]
        argv = [
            str(conf)
            if a == "deploy/nats/single-node.conf"
            else a.replace("nats://127.0.0.1:4222", url).replace("9464", str(metrics))
            for a in argv
        ]
        if argv[0].endswith("nats-server"):
            argv += ["-p", str(port), "-m", str(http)]
        log = tmp_path / f"{Path(argv[0]).name}.log"
        logs.append(log)
        with open(log, "wb") as out:
            procs.append(
                subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
            )

    def all_logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in logs)

    try:
        await wait_namespace(url, "default", timeout=30)
        client = await df.Client.connect(url, "default")
        try:
            result = await client.execute_workflow(
                "order_workflow", "prod-1", 9.5, id="prod-1", task_queue="orders", timeout=60
            )
        finally:
            await client.close()
    except Exception as exc:
        pytest.fail(f"{exc!r}\n{all_logs()}")
    assert result["tracking"] == "TRACK-PROD-1"
    assert any(store.rglob("*.blk")), "JetStream wrote to the store directory given with -sd"
