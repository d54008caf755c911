"""``df auth init``: NATS accounts, users and credentials for DurableFuture namespaces."""

from __future__ import annotations

from pathlib import Path

import click

from daemons.common import fail
from durablefuture.auth import ROLES, write
from durablefuture.core.errors import DurableFutureError
from durablefuture.pki import TLS_DIR, check_hosts, write_tls

CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.group(context_settings=CONTEXT)
def auth() -> None:
    """NATS logins and permissions for DurableFuture (see README, "Security")."""


@auth.command("init", context_settings=CONTEXT)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory to write df-auth.conf and <namespace>/<role>.creds into.",
)
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    required=True,
    help="A namespace to create an account for; repeat for several.",
)
@click.option("--force", is_flag=True, help="Replace existing files (new keys for every role).")
@click.option(
    "--tls-host",
    "tls_hosts",
    multiple=True,
    metavar="HOST",
    help="Also write a private CA and certificates for TLS into DIR/tls: nats-server's "
    "certificate valid for HOST (repeat for every name clients use; localhost and 127.0.0.1 "
    "are added) and one client certificate for the DurableFuture processes.",
)
def init(out: str, namespaces: tuple[str, ...], force: bool, tls_hosts: tuple[str, ...]) -> None:
    """Write a nats-server include file (one account per namespace, one user per role) and
    one credentials file per namespace and role: DIR/<namespace>/{server,worker,client,admin}.creds.

    Add `include "df-auth.conf"` to the nats-server config (copy the file beside it), reload
    nats-server, then pass each process its role's file: df-server --creds .../server.creds,
    df-worker --creds .../worker.creds, df/Client --creds .../client.creds, the UI and
    operators .../admin.creds.
    """
    try:
        check_hosts(tls_hosts)
        files = write(out, list(namespaces), force=force)
        tls = write_tls(Path(out) / TLS_DIR, tls_hosts, force=force) if tls_hosts else None
    except DurableFutureError as exc:
        fail(str(exc))
    click.echo(f"nats-server include file: {files.config}")
    for ns in dict.fromkeys(namespaces):
        paths = ", ".join(str(files.creds[(ns, role)]) for role in ROLES)
        click.echo(f"namespace {ns}: {paths}")
    if tls is not None:
        click.echo(
            f"TLS: nats-server tls {{cert_file: {tls.server_cert}, key_file: {tls.server_key}, "
            f"ca_file: {tls.ca}, verify: true}}; every DurableFuture process: --tls-ca "
            f"{tls.ca} --tls-cert {tls.client_cert} --tls-key {tls.client_key}"
        )
    click.echo(
        'add `include "df-auth.conf"` to the nats-server config (with the file beside it) and '
        "reload it; keep the .creds and key files secret"
    )
