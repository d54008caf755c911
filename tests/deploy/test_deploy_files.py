"""Checks of deploy/ that run with no Docker engine and no network.

What is checked, and how:
- every YAML file under deploy/ parses (PyYAML);
- docker-compose.yml: a 3-node NATS cluster whose nodes route to each other, JetStream on (from
  the mounted config file), a data volume per node, two df-servers with 3 replicas, a workflow
  worker and an activity worker for workflows_examples, restart policies and health checks;
  every DF_* variable and command-line flag is parsed by the real click commands of the daemons;
- the Kubernetes manifests: apiVersion/kind/metadata, selectors that match their pod labels,
  images, env from existing ConfigMaps, probes on /metrics, HPAs/PDBs/Services that point at
  existing workloads, the kustomization; `kubectl kustomize` renders them when kubectl is
  installed;
- the NATS Helm values and deploy/nats/nats.conf (sync_interval always, batch limits);
  `nats-server -t` validates the config file with the real server binary;
- the Dockerfile: python:3.11-slim, `pip install .`, a non-root USER, sources not hidden by
  .dockerignore;
- the compose layout requires TLS with client certificates and the `df auth init` logins:
  nats.conf has the `tls` block (verify) and includes the accounts, every df service has its
  role's credentials and the TLS files; the files `df auth init --tls-host nats-1 ...` writes
  stand in for deploy/secrets;
- the compose layout run for real on loopback: the three NATS nodes (deploy/nats/nats.conf, the
  nodes' names and routes from docker-compose.yml, ports moved to free loopback ports) and the
  four df services (their command and environment from docker-compose.yml, run from this
  checkout instead of the image, restarted if they exit as `restart: unless-stopped` would, with a
  warning); an order workflow completes on an R3 stream, every node's /jsz shows sync_always and
  the batch limits, the compose health checks pass, the df-servers' metrics count the start, and
  every daemon exits 0 on SIGTERM.

`docker compose config` runs too when the compose plugin is installed, and is skipped otherwise.
The image itself is not built here (that needs a Docker engine).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
NATS_CONF = DEPLOY / "nats" / "nats.conf"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
README = DEPLOY / "README.md"
K8S = DEPLOY / "k8s"
K8S_APP = K8S / "durablefuture"
NATS_VALUES = K8S / "nats-values.yaml"

K8S_NAMESPACE = "durablefuture"
MIN_NATS = (2, 12)  # atomic batches and message schedules
METRICS_PORTS = {"df-server": "9464", "df-worker": "9465"}
# What each daemon logs once it serves (the loopback run waits for it).
READY_LOG_LINES = {"df-server": "df-server serving namespace", "df-worker": "polling task queue"}

YAML_FILES = sorted({*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")})


# ------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def yaml() -> Any:
    return pytest.importorskip(
        "yaml", reason="PyYAML is not installed (pip install pyyaml; proposed for [dev])"
    )


def load_docs(yaml: Any, path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def interpolate(value: object) -> str:
    """Compose-style ``${VAR:-default}`` with the variables unset: the default."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", r"\1", str(value))


def version_of(image_or_tag: str) -> tuple[int, ...]:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", image_or_tag.rsplit(":", 1)[-1])
    assert match, f"no version in {image_or_tag!r}: pin the NATS image"
    return tuple(int(g) for g in match.groups() if g is not None)


def command_list(command: object) -> list[str]:
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list), command
    return [str(c) for c in command]


def flag_value(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def daemon_command(program: str) -> click.Command:
    from daemons import df_server, df_worker

    commands: dict[str, click.Command] = {"df-server": df_server.main, "df-worker": df_worker.main}
    assert program in commands, f"unknown program {program!r}: expected df-server or df-worker"
    return commands[program]


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `df auth init --out deploy/secrets --namespace default --tls-host nats-1 ...` writes
    (the compose file mounts deploy/secrets at /secrets and /etc/nats/secrets)."""
    from durablefuture.auth import write
    from durablefuture.pki import write_tls

    out = tmp_path_factory.mktemp("deploy") / "secrets"
    write(out, ["default"])
    write_tls(out / "tls", ["nats-1", "nats-2", "nats-3"])
    return out


def on_host(value: str, secrets: Path | None) -> str:
    """A value naming a file under /secrets/ or /etc/nats/secrets/, pointed at ``secrets``."""
    if secrets is None:
        return value
    return re.sub(r"(?:/etc/nats)?/secrets/", f"{secrets}/", value)


def check_invocation(
    program: str,
    args: list[str],
    env: dict[str, str],
    where: str,
    secrets: Path | None = None,
) -> None:
    """``program args`` with ``env`` parses with the daemon's real click command.

    Every DF_* variable must be one a daemon reads (a shared ConfigMap may hold variables of the
    other daemon: the program ignores those); the values this program reads and the flags are
    validated by click's own types (IntRange, Choice, ...). Metrics are served on the port of the
    convention, on all interfaces.
    """
    command = daemon_command(program)
    by_env = {p.envvar: p for p in command.params if isinstance(p.envvar, str)}
    known = {
        p.envvar
        for other in ("df-server", "df-worker")
        for p in daemon_command(other).params
        if isinstance(p.envvar, str)
    }
    assert env.get("DF_METRICS_PORT") == METRICS_PORTS[program], f"{where}: DF_METRICS_PORT"
    assert env.get("DF_METRICS_HOST") == "0.0.0.0", f"{where}: /metrics unreachable from outside"
    argv = list(args)
    for key, value in env.items():
        if not key.startswith("DF_"):
            continue
        assert key in known, f"{where}: no daemon reads {key} (they read {sorted(known)})"
        if key not in by_env:
            continue
        option = by_env[key]
        argv += [option.opts[0], on_host(interpolate(value), secrets)]
    try:
        command.make_context(program, argv)
    except click.ClickException as exc:
        pytest.fail(f"{where}: `{program} {shlex.join(argv)}` is rejected: {exc.format_message()}")


def check_function_spec(spec: str) -> None:
    """``MODULE:ATTR[,MODULE:ATTR]`` names importable functions (as df-worker loads them)."""
    from daemons.common import load_functions

    assert load_functions(spec, "spec"), spec


def conf_text_without_comments(text: str) -> str:
    return "\n".join(re.sub(r"\s#.*$|^#.*$", "", line) for line in text.splitlines())


def conf_block(text: str, name: str) -> str:
    """The body of ``name { ... }`` in a NATS config text (first match, braces balanced)."""
    match = re.search(rf"(?m)^\s*{name}\s*[:=]?\s*\{{", text)
    assert match, f"no `{name} {{ ... }}` block"
    depth, i = 1, match.end()
    while depth:
        assert i < len(text), f"unbalanced braces in `{name}` block"
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[match.end() : i - 1]


def conf_value(block: str, key: str) -> str | None:
    match = re.search(rf"(?m)^\s*{key}\s*[:=]\s*\"?([^\s\",}}]+)\"?", block)
    return match.group(1) if match else None


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    buffer = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not buffer):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        instruction, _, rest = buffer.partition(" ")
        out.append((instruction.upper(), rest.strip()))
        buffer = ""
    return out


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw[1:] if negated else raw
        pattern = pattern.strip().strip("/")
        variants = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(p, v) for p in prefixes for v in variants):
            excluded = not negated
    return excluded


# ------------------------------------------------------------------------------ YAML


@pytest.mark.parametrize("path", YAML_FILES, ids=[str(p.relative_to(DEPLOY)) for p in YAML_FILES])
def test_every_yaml_file_parses(yaml: Any, path: Path) -> None:
    docs = load_docs(yaml, path)
    assert docs, f"{path} holds no YAML document"
    assert all(isinstance(d, dict) for d in docs), f"{path}: every document must be a mapping"


def test_the_expected_files_exist() -> None:
    assert len(YAML_FILES) >= 9, YAML_FILES
    for path in (COMPOSE, NATS_CONF, DOCKERFILE, DOCKERIGNORE, README, NATS_VALUES):
        assert path.is_file(), path
    assert not list(DEPLOY.rglob("Chart.yaml")), "the NATS chart is referenced, not vendored"


# ------------------------------------------------------------------------------ compose


@pytest.fixture(scope="module")
def compose(yaml: Any) -> dict[str, Any]:
    (doc,) = load_docs(yaml, COMPOSE)
    assert isinstance(doc.get("services"), dict)
    return doc


def nats_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if interpolate(svc.get("image", "")).startswith("nats:")
    }


def df_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if command_list(svc.get("command", []))[:1] in (["df-server"], ["df-worker"])
    }


def service_env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_compose_has_a_three_node_nats_cluster_routed_to_each_other(
    compose: dict[str, Any],
) -> None:
    nodes = nats_services(compose)
    assert len(nodes) == 3, f"expected 3 NATS services, found {sorted(nodes)}"
    for name, svc in nodes.items():
        assert version_of(interpolate(svc["image"])) >= MIN_NATS, svc["image"]
        args = command_list(svc["command"])
        assert flag_value(args, "--name") == name, f"{name}: server name must be unique"
        assert svc.get("hostname", name) == name
        routes = flag_value(args, "--routes")
        assert routes, f"{name}: no --routes"
        targets = {re.fullmatch(r"nats://([\w.-]+):6222", r.strip()) for r in routes.split(",")}
        assert None not in targets, f"{name}: routes {routes!r} are not nats://HOST:6222"
        hosts = {m.group(1) for m in targets if m}
        assert hosts == set(nodes) - {name}, f"{name} routes to {hosts}"


def test_compose_nats_nodes_use_the_jetstream_config_and_own_volumes(
    compose: dict[str, Any],
) -> None:
    conf = conf_text_without_comments(NATS_CONF.read_text())
    store_dir = conf_value(conf_block(conf, "jetstream"), "store_dir")
    assert store_dir, "jetstream.store_dir must be set (the volume is mounted there)"
    named_volumes = compose.get("volumes") or {}
    data_volumes: list[str] = []
    for name, svc in nats_services(compose).items():
        args = command_list(svc["command"])
        config_path = flag_value(args, "--config") or flag_value(args, "-c")
        mounts = {}
        for volume in svc.get("volumes", []):
            source, target = str(volume).split(":")[:2]
            mounts[target] = source
        assert config_path in mounts, f"{name}: --config {config_path} is not mounted"
        assert (COMPOSE.parent / mounts[config_path]).resolve() == NATS_CONF.resolve()
        assert store_dir in mounts, f"{name}: nothing mounted at store_dir {store_dir}"
        assert mounts[store_dir] in named_volumes, f"{name}: {mounts[store_dir]} not declared"
        data_volumes.append(mounts[store_dir])
        assert svc.get("restart") in {"always", "unless-stopped", "on-failure"}, name
        assert svc.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
    assert len(set(data_volumes)) == 3, f"each node needs its own data volume: {data_volumes}"


def test_compose_runs_two_servers_with_three_replicas_and_both_workers(
    compose: dict[str, Any], secrets: Path
) -> None:
    nodes = set(nats_services(compose))
    services = df_services(compose)
    servers = {n: s for n, s in services.items() if command_list(s["command"])[0] == "df-server"}
    workers = {n: s for n, s in services.items() if command_list(s["command"])[0] == "df-worker"}
    assert len(servers) == 2, sorted(servers)
    for name, svc in servers.items():
        args, env = command_list(svc["command"]), service_env(svc)
        assert flag_value(args, "--replicas") == "3" or env.get("DF_REPLICAS") == "3", name

    from workflows_examples import TASK_QUEUE

    specs: Counter[str] = Counter()
    for name, svc in workers.items():
        env = service_env(svc)
        assert env.get("DF_TASK_QUEUE") == TASK_QUEUE, name
        for key in ("DF_WORKFLOWS", "DF_ACTIVITIES"):
            if key in env:
                specs[f"{key}={env[key]}"] += 1
    assert specs == Counter(
        {
            "DF_WORKFLOWS=workflows_examples:WORKFLOWS": 1,
            "DF_ACTIVITIES=workflows_examples:ACTIVITIES": 1,
        }
    ), specs

    for name, svc in services.items():
        args, env = command_list(svc["command"]), service_env(svc)
        check_invocation(args[0], args[1:], env, f"docker-compose.yml service {name}", secrets)
        # TLS with a client certificate, and the login of the service's role
        assert {"DF_NATS_TLS_CA", "DF_NATS_TLS_CERT", "DF_NATS_TLS_KEY"} <= set(env), name
        role = "server" if args[0] == "df-server" else "worker"
        assert interpolate(env.get("DF_NATS_CREDS", "")).endswith(f"/{role}.creds"), name
        assert "./secrets:/secrets:ro" in svc.get("volumes", []), name
        for key in ("DF_WORKFLOWS", "DF_ACTIVITIES"):
            if key in env:
                check_function_spec(env[key])
        url = re.fullmatch(r"tls://([\w.-]+):4222", interpolate(env.get("DF_NATS_URL", "")))
        assert url and url.group(1) in nodes, f"{name}: DF_NATS_URL must name a NATS service"
        depends = svc.get("depends_on", {})
        for node in nodes:
            assert depends.get(node, {}).get("condition") == "service_healthy", (name, node)
        assert svc.get("restart") in {"always", "unless-stopped", "on-failure"}, name
        build = svc.get("build", {})
        context = (COMPOSE.parent / build.get("context", ".")).resolve()
        assert context == ROOT, f"{name}: build context must be the repository root"
        assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
        health = " ".join(svc.get("healthcheck", {}).get("test", []))
        assert "/metrics" in health and "DF_METRICS_PORT" in health, f"{name}: healthcheck"
        grace = str(svc.get("stop_grace_period", "10s"))
        assert int(grace.rstrip("s")) >= 30, f"{name}: leave time for the SIGTERM drain"


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("`docker compose config` not run: no docker CLI on this machine")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=60, check=False
    )
    if probe.returncode != 0:
        reason = (probe.stderr or probe.stdout).strip().splitlines()[:1]
        pytest.skip(f"`docker compose config` not run: no compose plugin ({reason})")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------ NATS config


def test_nats_conf_fsyncs_every_write_and_raises_batch_limits() -> None:
    conf = conf_text_without_comments(NATS_CONF.read_text())
    jetstream = conf_block(conf, "jetstream")
    assert conf_value(jetstream, "sync_interval") == "always"
    batch = conf_block(conf_block(jetstream, "limits"), "batch")
    assert conf_value(batch, "max_inflight_per_stream") == "500"
    assert conf_value(batch, "max_inflight_total") == "5000"
    cluster = conf_block(conf, "cluster")
    assert (conf_value(cluster, "listen") or "").endswith(":6222")
    assert conf_value(cluster, "name")


def test_nats_conf_requires_tls_with_client_certificates_and_the_generated_logins() -> None:
    conf = conf_text_without_comments(NATS_CONF.read_text())
    tls = conf_block(conf, "tls")
    assert conf_value(tls, "verify") == "true"
    for key, file in (("cert_file", "server.pem"), ("key_file", "server-key.pem")):
        assert conf_value(tls, key) == f"/etc/nats/secrets/tls/{file}"
    assert conf_value(tls, "ca_file") == "/etc/nats/secrets/tls/ca.pem"
    assert re.search(r'(?m)^include "secrets/df-auth.conf"$', conf)


def host_conf(directory: Path, secrets: Path) -> Path:
    """deploy/nats/nats.conf with its secrets on this host (beside it, as on the nodes)."""
    shutil.copytree(secrets, directory / "secrets", dirs_exist_ok=True)
    path = directory / "nats.conf"
    path.write_text(on_host(NATS_CONF.read_text(), directory / "secrets"))
    return path


def test_nats_server_accepts_the_config_file(tmp_path: Path, secrets: Path) -> None:
    from durablefuture.core.errors import DurableFutureError
    from durablefuture.natsserver import find_binary

    try:
        binary = find_binary()
    except DurableFutureError as exc:
        pytest.skip(f"no nats-server binary: {exc}")
    result = subprocess.run(
        [binary, "-t", "-c", str(host_conf(tmp_path, secrets))],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------ Dockerfile


def test_dockerfile_installs_the_package_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    froms = [i for i, (name, _) in enumerate(instructions) if name == "FROM"]
    assert froms, "no FROM"
    for i in froms:
        assert instructions[i][1].split()[0] == "python:3.11-slim", instructions[i]
    final = instructions[froms[-1] :]
    assert any(n == "RUN" and re.search(r"\bpip install \.(\s|$)", a) for n, a in instructions)

    users = [arg for name, arg in final if name == "USER"]
    assert users, "the final stage must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"USER {users[-1]} is root"
    assert user.isdigit(), "a numeric UID lets Kubernetes verify runAsNonRoot"

    (cmd,) = [json.loads(arg) for name, arg in final if name == "CMD"][-1:]
    assert cmd[0] in {"df-server", "df-worker"}, cmd
    assert not [arg for name, arg in final if name == "ENTRYPOINT"], "select programs by command"

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert {"df-server", "df-worker"} <= set(project["project"]["scripts"])
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied: set[str] = set()
    for name, arg in instructions:
        if name != "COPY" or "--from=" in arg:
            continue
        *sources, _dest = [t for t in shlex.split(arg) if not t.startswith("--")]
        for source in sources:
            source = source.rstrip("/")
            assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
            assert not dockerignored(source, patterns), f"COPY {source} is in .dockerignore"
            copied.add(source)
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in packages:
        assert pattern.rstrip("*") in copied, f"package {pattern} is not copied into the image"
    assert project["project"]["readme"] in copied
    for path in ("durablefuture/__init__.py", "daemons/df_worker.py", "pyproject.toml"):
        assert not dockerignored(path, patterns), path
    for path in ("tests/conftest.py", ".git/HEAD", "durablefuture/__pycache__/x.pyc"):
        assert dockerignored(path, patterns), path


# ------------------------------------------------------------------------------ Kubernetes


@pytest.fixture(scope="module")
def manifests(yaml: Any) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S_APP.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += load_docs(yaml, path)
    return docs


def of_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def test_manifests_have_api_version_kind_and_metadata(manifests: list[dict[str, Any]]) -> None:
    assert manifests
    for m in manifests:
        assert m.get("apiVersion") and m.get("kind") and m.get("metadata", {}).get("name"), m
        if m["kind"] != "Namespace":
            assert m["metadata"].get("namespace") == K8S_NAMESPACE, m["metadata"]
    assert set(of_kind(manifests, "Namespace")) == {K8S_NAMESPACE}
    names = Counter((m["kind"], m["metadata"]["name"]) for m in manifests)
    assert all(n == 1 for n in names.values()), f"duplicate objects: {names}"


def test_deployments_select_their_pods_and_take_env_from_configmaps(
    manifests: list[dict[str, Any]], secrets: Path
) -> None:
    configmaps = {name: m.get("data", {}) for name, m in of_kind(manifests, "ConfigMap").items()}
    deployments = of_kind(manifests, "Deployment")
    assert {"df-server", "df-worker-workflows", "df-worker-activities"} <= set(deployments)
    assert deployments["df-server"]["spec"]["replicas"] == 2
    specs: Counter[str] = Counter()
    for name, d in deployments.items():
        assert d["apiVersion"] == "apps/v1"
        assert selects(d["spec"]["selector"]["matchLabels"], pod_labels(d)), name
        pod = d["spec"]["template"]["spec"]
        assert pod.get("securityContext", {}).get("runAsNonRoot") is True, name
        for c in pod["containers"]:
            where = f"Deployment {name} container {c['name']}"
            assert c.get("image"), where
            requests = c.get("resources", {}).get("requests", {})
            assert requests.get("cpu") and requests.get("memory"), f"{where}: no requests"
            env: dict[str, str] = {}
            refs = [e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e]
            assert refs, f"{where}: no envFrom configMapRef"
            for ref in refs:
                assert ref in configmaps, f"{where}: ConfigMap {ref} does not exist"
                env.update(configmaps[ref])
            for item in c.get("env", []):
                key_ref = item.get("valueFrom", {}).get("configMapKeyRef")
                if key_ref:
                    assert key_ref["key"] in configmaps.get(key_ref["name"], {}), (where, key_ref)
                    env[item["name"]] = configmaps[key_ref["name"]][key_ref["key"]]
                else:
                    env[item["name"]] = str(item["value"])
            port_names = {p.get("name") for p in c.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe"):
                get = c.get(probe, {}).get("httpGet", {})
                assert get.get("path") == "/metrics", f"{where}: {probe}"
                assert get.get("port") in port_names, f"{where}: {probe} port {get.get('port')}"
            program, *args = [*c.get("command", []), *c.get("args", [])]
            check_invocation(program, args, env, where, secrets)
            # TLS with the client certificate and the login of its role, from Secrets
            role = "server" if program == "df-server" else "worker"
            assert env.get("DF_NATS_URL", "").startswith("tls://"), where
            assert env.get("DF_NATS_CREDS") == f"/secrets/default/{role}.creds", where
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for path, secret in (
                ("/secrets/tls", "df-tls"),
                ("/secrets/default", f"df-default-{role}"),
            ):
                assert volumes[mounts[path]]["secret"]["secretName"] == secret, (where, path)
            assert pod["securityContext"].get("fsGroup") == 10001, f"{where}: Secrets unreadable"
            for key in ("DF_WORKFLOWS", "DF_ACTIVITIES"):
                if key in env:
                    check_function_spec(env[key])
                    specs[key] += 1
            if program == "df-server":
                assert env.get("DF_REPLICAS") == "3", f"{where}: DF_REPLICAS must be 3"
    assert specs == Counter({"DF_WORKFLOWS": 1, "DF_ACTIVITIES": 1}), specs


def test_hpas_pdbs_and_services_point_at_existing_workloads(
    manifests: list[dict[str, Any]],
) -> None:
    deployments = of_kind(manifests, "Deployment")
    hpas = of_kind(manifests, "HorizontalPodAutoscaler")
    assert hpas, "no HorizontalPodAutoscaler"
    for name, hpa in hpas.items():
        assert hpa["apiVersion"] == "autoscaling/v2", name
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments, (name, target)
        spec = hpa["spec"]
        assert 1 <= spec.get("minReplicas", 1) <= spec["maxReplicas"], name
        metrics = [m["resource"]["name"] for m in spec["metrics"] if m["type"] == "Resource"]
        assert "cpu" in metrics, f"{name}: no CPU metric"
        scaled = deployments[target["name"]]
        assert "replicas" not in scaled["spec"], f"{target['name']}: the HPA owns replicas"
        for c in scaled["spec"]["template"]["spec"]["containers"]:
            assert c["resources"]["requests"]["cpu"], "CPU utilization needs CPU requests"

    pdbs = of_kind(manifests, "PodDisruptionBudget")
    assert pdbs, "no PodDisruptionBudget"
    covered = set()
    for name, pdb in pdbs.items():
        assert pdb["apiVersion"] == "policy/v1", name
        selector = pdb["spec"]["selector"]["matchLabels"]
        matched = [d for d, m in deployments.items() if selects(selector, pod_labels(m))]
        assert matched, f"PodDisruptionBudget {name} selects no pods"
        covered.update(matched)
    assert covered == set(deployments), f"Deployments with no PDB: {set(deployments) - covered}"

    services = of_kind(manifests, "Service")
    ports_seen = set()
    for name, svc in services.items():
        matched = [
            m for m in deployments.values() if selects(svc["spec"]["selector"], pod_labels(m))
        ]
        assert matched, f"Service {name} selects no pods"
        for port in svc["spec"]["ports"]:
            ports_seen.add(port["port"])
            for d in matched:
                container_ports = {
                    p.get("name"): p["containerPort"]
                    for c in d["spec"]["template"]["spec"]["containers"]
                    for p in c.get("ports", [])
                }
                assert port["targetPort"] in container_ports, (name, port)
                assert container_ports[port["targetPort"]] == port["port"], (name, port)
    assert {9464, 9465} <= ports_seen, "metrics Services for df-server (9464) and df-worker (9465)"


def test_kustomization_lists_every_manifest(yaml: Any, manifests: list[dict[str, Any]]) -> None:
    (kustomization,) = load_docs(yaml, K8S_APP / "kustomization.yaml")
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S_APP.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present, f"listed {sorted(listed)}, present {sorted(present)}"
    assert kustomization.get("namespace") == K8S_NAMESPACE
    images = {i["name"] for i in kustomization.get("images", [])}
    used = {
        c["image"].split(":")[0]
        for d in of_kind(manifests, "Deployment").values()
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert used <= images, f"images {used - images} cannot be overridden by kustomize"


def test_kubectl_kustomize_renders_the_manifests(manifests: list[dict[str, Any]]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("`kubectl kustomize` not run: no kubectl on this machine")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S_APP)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    kinds = Counter(re.findall(r"(?m)^kind: (\w+)$", result.stdout))
    assert kinds == Counter(m["kind"] for m in manifests), kinds


def test_nats_helm_values_make_a_durable_three_node_cluster(
    yaml: Any, manifests: list[dict[str, Any]]
) -> None:
    (values,) = load_docs(yaml, NATS_VALUES)
    config = values["config"]
    assert config["cluster"]["enabled"] is True and config["cluster"]["replicas"] == 3
    jetstream = config["jetstream"]
    assert jetstream["enabled"] is True
    assert jetstream["fileStore"]["enabled"] is True
    assert jetstream["fileStore"]["pvc"]["enabled"] is True
    assert jetstream["merge"]["sync_interval"] == "always"
    batch = jetstream["merge"]["limits"]["batch"]
    assert batch == {"max_inflight_per_stream": 500, "max_inflight_total": 5000}
    assert version_of(values["container"]["image"]["tag"]) >= MIN_NATS
    url = of_kind(manifests, "ConfigMap")["durablefuture-env"]["data"]["DF_NATS_URL"]
    assert url == f"tls://{values['fullnameOverride']}:4222", url
    # TLS with client certificates, and the df auth init accounts mounted and included
    tls = config["nats"]["tls"]
    assert tls["enabled"] is True and tls["secretName"] and tls["ca"], tls
    include = config["merge"]["$include"]
    mounts = [p["value"] for p in values["container"]["patch"] if p["path"] == "/volumeMounts/-"]
    volumes = [p["value"] for p in values["podTemplate"]["patch"] if p["path"] == "/spec/volumes/-"]
    (auth,) = [m for m in mounts if m["name"] == "auth"]
    assert include == f"./{Path(auth['mountPath']).name}/df-auth.conf", include
    assert [v["secret"]["secretName"] for v in volumes if v["name"] == "auth"] == ["nats-auth"]
    readme = README.read_text()
    assert re.search(r"helm upgrade --install nats nats/nats .*nats-values\.yaml", readme, re.S)


def test_readme_explains_the_durability_choices() -> None:
    readme = README.read_text()
    for needle in ("sync_interval: always", "R3", "Jepsen", "account", "permissions"):
        assert needle in readme, needle


# ------------------------------------------------------------------------------ loopback run


class Processes:
    """Child processes of one test, stopped by their own PIDs."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.specs: dict[str, tuple[list[str], dict[str, str] | None]] = {}
        self.offsets: dict[str, int] = {}
        self.restarts: list[str] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        path = self.log_dir / f"{name}.log"
        self.specs[name] = (argv, env)
        self.offsets[name] = path.stat().st_size if path.exists() else 0
        with open(path, "ab") as log:
            self.procs[name] = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def output(self, name: str) -> str:
        """What the current incarnation of ``name`` has printed."""
        with open(self.log_dir / f"{name}.log", "rb") as log:
            log.seek(self.offsets[name])
            return log.read().decode(errors="replace")

    def restart_exited(self, names: list[str]) -> None:
        """Docker's `restart: unless-stopped`: start again whatever exited."""
        for name in names:
            proc = self.procs[name]
            if proc.poll() is not None:
                self.restarts.append(
                    f"{name} exited with code {proc.returncode}:\n{self.output(name)[-2000:]}"
                )
                assert len(self.restarts) <= 10, "crash loop:\n" + "\n".join(self.restarts)
                self.start(name, *self.specs[name])

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n{(self.log_dir / f'{name}.log').read_text(errors='replace')[-3000:]}"
            for name in self.procs
        )

    def stop(self, name: str, timeout: float = 40.0) -> int:
        proc = self.procs[name]
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        return proc.wait(timeout)

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.kill_all()


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open while they are picked)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.loads(response.read())


async def wait_healthy(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if http_json(url).get("status") == "ok":
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} not healthy within {timeout}s"
        await asyncio.sleep(0.2)


async def test_compose_layout_runs_on_loopback(
    compose: dict[str, Any], processes: Processes, tmp_path: Path, secrets: Path
) -> None:
    """The NATS nodes and df services of docker-compose.yml, run as local processes, with the
    logins and TLS files `df auth init --tls-host` writes."""
    import durablefuture as df
    from durablefuture.core.errors import DurableFutureError
    from durablefuture.natsserver import find_binary
    from durablefuture.transport.connection import connect
    from durablefuture.transport.subjects import Layout
    from workflows_examples.order import order_workflow

    try:
        binary = find_binary()
    except DurableFutureError as exc:
        pytest.skip(f"no nats-server binary: {exc}")

    nodes = nats_services(compose)
    services = df_services(compose)
    spare = iter(free_ports(3 * len(nodes) + len(services)))
    ports = {
        name: {"client": next(spare), "cluster": next(spare), "http": next(spare)} for name in nodes
    }

    def local(url: str) -> str:
        def repl(m: re.Match[str]) -> str:
            kind = {"4222": "client", "6222": "cluster"}[m.group(2)]
            return f"127.0.0.1:{ports[m.group(1)][kind]}"

        return re.sub(r"([\w.-]+):(4222|6222)", repl, url)

    conf = host_conf(tmp_path, secrets).read_text()  # its secrets in tmp_path/secrets
    assert conf.count("store_dir: /data") == 1
    for name, svc in nodes.items():
        args = command_list(svc["command"])
        store = tmp_path / name
        store.mkdir()
        node_conf = tmp_path / f"{name}.conf"
        node_conf.write_text(conf.replace("store_dir: /data", f"store_dir: {str(store)!r}"))
        processes.start(
            name,
            [
                binary,
                "-c", str(node_conf),
                "-a", "127.0.0.1",
                "-p", str(ports[name]["client"]),
                "-m", str(ports[name]["http"]),
                "--cluster", f"nats://127.0.0.1:{ports[name]['cluster']}",
                "--name", str(flag_value(args, "--name")),
                "--routes", local(str(flag_value(args, "--routes"))),
            ],
        )  # fmt: skip
    try:
        for name in nodes:  # what the compose health check waits for
            await wait_healthy(f"http://127.0.0.1:{ports[name]['http']}/healthz")
    except AssertionError as exc:
        pytest.fail(f"{exc}\n{processes.logs()}")

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("DF_")}
    base_env["PYTHONPATH"] = str(ROOT) + os.pathsep + base_env.get("PYTHONPATH", "")
    modules = {"df-server": "daemons.df_server", "df-worker": "daemons.df_worker"}
    metrics: dict[str, str] = {}
    health_checks: dict[str, tuple[list[str], dict[str, str]]] = {}
    for name, svc in services.items():
        program, *args = command_list(svc["command"])
        env = {
            k: on_host(interpolate(v), tmp_path / "secrets") for k, v in service_env(svc).items()
        }
        env["DF_NATS_URL"] = local(env["DF_NATS_URL"])
        env["DF_LOG_FORMAT"] = "text"
        # each container has its own network namespace; here they share loopback
        env["DF_METRICS_PORT"] = str(next(spare))
        env["DF_METRICS_HOST"] = "127.0.0.1"
        metrics[name] = f"http://127.0.0.1:{env['DF_METRICS_PORT']}/metrics"
        processes.start(name, [sys.executable, "-m", modules[program], *args], {**base_env, **env})
        health = svc["healthcheck"]["test"]
        assert health[:2] == ["CMD", "python"], health
        health_checks[name] = ([sys.executable, *health[2:]], {**base_env, **env})

    async def restart_policy() -> None:  # what `restart: unless-stopped` does in compose
        while True:
            processes.restart_exited(list(services))
            await asyncio.sleep(0.2)

    supervisor = asyncio.create_task(restart_policy())
    first = next(iter(nodes))
    url = f"nats://127.0.0.1:{ports[first]['client']}"
    namespace = interpolate(service_env(next(iter(services.values())))["DF_NAMESPACE"])
    tls = df.TlsConfig(
        ca=str(tmp_path / "secrets/tls/ca.pem"),
        cert=str(tmp_path / "secrets/tls/client.pem"),
        key=str(tmp_path / "secrets/tls/client-key.pem"),
    )
    creds = {
        role: str(tmp_path / f"secrets/{namespace}/{role}.creds") for role in ("client", "admin")
    }

    async def namespace_ready() -> None:  # df-server created the namespace (its consumer)
        layout = Layout(namespace)
        deadline = time.monotonic() + 60
        nc = await connect(url, creds=creds["admin"], tls=tls, timeout=30)
        try:
            while True:
                try:
                    await nc.jetstream().consumer_info(layout.stream, layout.server_consumer)
                    return
                except Exception:
                    assert time.monotonic() < deadline, "the namespace was not created"
                    await asyncio.sleep(0.2)
        finally:
            await nc.close()

    try:
        await namespace_ready()
        client = await df.Client.connect(url, namespace, creds=creds["client"], tls=tls)
        try:
            result = await client.execute_workflow(
                order_workflow, "deploy-1", 42.0, id="deploy-1", task_queue="examples", timeout=60
            )
        finally:
            await client.close()
        deadline = time.monotonic() + 60
        for name, svc in services.items():  # every daemon up (restarted if it had crashed)
            marker = READY_LOG_LINES[command_list(svc["command"])[0]]
            while marker not in processes.output(name):
                assert time.monotonic() < deadline, f"{name} is not serving"
                await asyncio.sleep(0.2)
    except (AssertionError, DurableFutureError, TimeoutError) as exc:
        pytest.fail(f"{exc}\n{processes.logs()}")
    finally:
        supervisor.cancel()
    assert result["tracking"] == "TRACK-DEPLOY-1", result

    for name, (argv, env) in health_checks.items():  # the compose health check of each daemon
        check = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)
        assert check.returncode == 0, (name, check.stderr)
    started = 0.0
    for name, svc in services.items():
        if command_list(svc["command"])[0] == "df-server":
            with urllib.request.urlopen(metrics[name], timeout=5) as response:
                text = response.read().decode()
            started += sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("df_workflows_started_total")
            )
    assert started >= 1, "df_workflows_started_total did not move on the df-servers"

    nc = await connect(url, creds=creds["admin"], tls=tls, timeout=30)
    try:
        info = await nc.jetstream().stream_info(f"DF_{namespace}")
    finally:
        await nc.close()
    assert info.config.num_replicas == 3
    assert info.cluster is not None and len(info.cluster.replicas or []) == 2, info.cluster
    for name in nodes:
        jsz = http_json(f"http://127.0.0.1:{ports[name]['http']}/jsz")
        assert jsz["config"].get("sync_always") is True, (name, jsz["config"])
        assert jsz["limits"].get("max_batch_inflight_per_stream") == 500, (name, jsz["limits"])
        assert jsz["limits"].get("max_batch_inflight_total") == 5000, (name, jsz["limits"])
        assert jsz["meta_cluster"].get("cluster_size") == 3, (name, jsz["meta_cluster"])

    for name in services:  # `docker compose stop`: SIGTERM, then a clean, drained exit
        assert processes.stop(name) == 0, f"{name} did not exit cleanly\n{processes.logs()}"
    if processes.restarts:  # the layout recovered, but a daemon should not crash at start
        warnings.warn(
            "restarted by the restart policy: " + "\n".join(processes.restarts), stacklevel=1
        )
