"""NATS accounts, users and role permissions for DurableFuture namespaces (``df auth init``).

How it works. Every namespace gets two NATS accounts:

* ``DF_<ns>`` holds JetStream (the stream ``DF_<ns>``, its KV buckets and consumers) and one
  user, the ``server`` role (df-server), which may do anything there.
* ``DF_<ns>_users`` holds the ``worker``, ``client`` and ``admin`` users. It has no JetStream of
  its own: it reaches ``DF_<ns>`` only through the subjects that account exports (the input
  subjects a role may write, the JetStream API, acks, the KV subjects of the activity and
  worker buckets; the closed notices and the users' own inboxes back: the server's inbox
  traffic stays home). Each user's permissions then narrow that to its role.

Why two accounts: an answer goes where the asker's reply subject says, and nats-server checks
permissions on the subject of a publish, never on its reply subject. Inside one account a
client or worker could publish with the reply subject of a run's history (or status entry, or
a task subject) and have JetStream's PubAck, an API answer, a direct get's copy of any stored
message or a pull's deliveries written there. Across an export NATS rewrites the reply subject,
and the answer comes back into the users' account, where no stream stores anything. The price
is that every request of a worker or client crosses the boundary in nats-server (measured in
bench/README.md, ``python -m bench.logins``). Users of another namespace are in other
accounts: they see, list and read nothing of this one.

========  ===========================================================================
role      may (everything else is refused by nats-server with a permissions violation)
========  ===========================================================================
server    everything in ``DF_<ns>``: histories, status entries, closed notices, tasks,
          timers, check lists (``ck.<list>``, ``rm.check-list``), dead letters, JetStream
          management (df-server is the only writer)
worker    take workflow/activity tasks of any task queue (never the server's inputs),
          and sticky workflow tasks (``wt.<queue>.<token>``: the runs a worker caches),
          report on ``df.<ns>.in.report`` or ask df-server to record a report
          (``dfev.<ns>.report``), heartbeats/leases/liveness records, read histories,
          answer queries and check updates, answer eager start offers (``dfev.<ns>.ws.*``,
          which the users' account exports to the server's), put and get payloads stored by
          reference
client    start (``in.start``, or asked of df-server: ``dfev.<ns>.start``),
          signal/update/cancel/terminate (``in.run``), schedule control (``sci.ctl``),
          queries and update checks, read histories and status, list and count (the
          df-servers' visibility index, ``dfev.<ns>.visibility``), wait for results, put
          and get payloads stored by reference (object store ``DF_<ns>_payloads``)
admin     what client can, plus listing streams and consumers, reading dead letters
          through the consumer named ``dlq`` (the UI and operators) and deleting closed
          runs (``rm.delete``, ``df workflow delete``)
========  ===========================================================================

Replies: each user subscribes only under its own inbox prefix ``_INBOX.<user public key>``
(:func:`~durablefuture.transport.credentials.inbox_prefix`;
:func:`~durablefuture.transport.connection.connect` sets it when it connects with an nkey
credentials file), so no user can read another's replies; no user but the server may publish
to inboxes (the others answer only through ``allow_responses``, i.e. to a request they got).

Credentials are nkey seed files (``<out>/<ns>/<role>.creds``, mode 0600) with the seed block of
a NATS credentials file: config-file accounts with nkey users need no operator, JWTs or
resolver. The configuration is an include file for the operator's nats-server config
(``include "df-auth.conf"``). Nothing here talks to NATS.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import nkeys
from attrs import frozen

from durablefuture.core.errors import InvalidArgumentError
from durablefuture.core.types import check_namespace
from durablefuture.transport.credentials import (
    Credentials,
    inbox_prefix,
    public_key_of,
    read_credentials,
)
from durablefuture.transport.subjects import Layout

__all__ = [
    "DEAD_LETTER_CONSUMER",
    "ROLES",
    "AuthFiles",
    "Credentials",
    "Permissions",
    "account_name",
    "generate",
    "inbox_prefix",
    "new_user_seed",
    "permissions",
    "read_credentials",
    "render_config",
    "users_account_name",
    "write",
]

ROLES = ("server", "worker", "client", "admin")
CONFIG_NAME = "df-auth.conf"
DEAD_LETTER_CONSUMER = "dlq"
"""The consumer name through which the admin role reads dead letters (``df.<ns>.dlq.>``)."""


@frozen
class Permissions:
    """One NATS user's permissions (subjects may use ``*`` and ``>``)."""

    publish_allow: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    subscribe_allow: tuple[str, ...] = ()
    allow_responses: bool = False

    @property
    def unrestricted(self) -> bool:
        """Everything in the account: nats-server then needs no ``permissions`` block at all
        (one with ``>`` would still cost it a check of every publish and, with
        ``allow_responses``, a reply entry for every message delivered)."""
        return (
            self.publish_allow == (">",)
            and not self.publish_deny
            and self.subscribe_allow == (">",)
        )

    def render(self) -> str:
        """The ``permissions`` block of the nats-server config language."""
        pub = f"allow: {_list(self.publish_allow)}"
        if self.publish_deny:
            pub += f", deny: {_list(self.publish_deny)}"
        parts = [f"publish: {{{pub}}}", f"subscribe: {{allow: {_list(self.subscribe_allow)}}}"]
        if self.allow_responses:
            parts.append("allow_responses: true")
        return "{" + ", ".join(parts) + "}"


@frozen
class AuthFiles:
    """What :func:`write` wrote."""

    config: Path
    creds: dict[tuple[str, str], Path]


def account_name(namespace: str) -> str:
    return f"DF_{check_namespace(namespace)}"


def users_account_name(namespace: str) -> str:
    return f"DF_{check_namespace(namespace)}_users"


def new_user_seed() -> str:
    """A fresh nkey user seed (``SU...``)."""
    seed: bytes = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode()


def permissions(role: str, namespace: str, public_key: str) -> Permissions:
    """The permissions of ``role`` in ``namespace``'s account (see the module docstring)."""
    lay = Layout(namespace)
    p = lay.prefix
    s = lay.stream
    inbox = f"{inbox_prefix(public_key)}.>"
    api = "$JS.API"
    if role == "server":
        return Permissions(publish_allow=(">",), subscribe_allow=(">",))
    read = (
        f"{api}.INFO",
        f"{api}.STREAM.INFO.*",
        f"{api}.STREAM.MSG.GET.*",
        f"{api}.DIRECT.GET.*",
        f"{api}.DIRECT.GET.*.>",
        f"{api}.CONSUMER.INFO.*.*",
    )
    # ordered consumers over KV buckets (key listings, watches), removed when done
    kv_read = tuple(
        f"{api}.CONSUMER.{verb}.KV_{bucket}{tail}"
        for bucket in (lay.runs_bucket, lay.activity_bucket, lay.workers_bucket)
        for verb, tail in (("CREATE", ""), ("CREATE", ".>"), ("DELETE", ".*"))
    )
    # payloads stored by reference: put objects, read them (an ordered consumer per object)
    objects = f"OBJ_{lay.payloads_bucket}"
    payloads = (
        f"$O.{lay.payloads_bucket}.C.>",
        f"$O.{lay.payloads_bucket}.M.>",
        f"{api}.CONSUMER.CREATE.{objects}",
        f"{api}.CONSUMER.CREATE.{objects}.>",
        f"{api}.CONSUMER.DELETE.{objects}.*",
    )
    # the server's own consumers and the admin's dead-letter reader: no worker creates, pulls
    # from or acknowledges on them
    protected = tuple(
        x
        for c in (
            lay.server_consumer,
            lay.start_consumer,
            lay.schedule_consumer,
            lay.removal_consumer,
            DEAD_LETTER_CONSUMER,
        )
        for x in (
            f"{api}.CONSUMER.CREATE.{s}.{c}.>",
            f"{api}.CONSUMER.DELETE.{s}.{c}",
            f"{api}.CONSUMER.MSG.NEXT.{s}.{c}",
            f"$JS.ACK.{s}.{c}.>",
        )
    )
    if role == "worker":
        return Permissions(
            publish_allow=(
                *read,
                *kv_read,
                *payloads,
                f"{api}.CONSUMER.CREATE.{s}.*.{p}.wt.*",
                # its sticky workflow tasks (the runs it caches): df.<ns>.wt.<queue>.<token>
                f"{api}.CONSUMER.CREATE.{s}.*.{p}.wt.*.*",
                f"{api}.CONSUMER.CREATE.{s}.*.{p}.at.*",
                f"{api}.CONSUMER.MSG.NEXT.{s}.*",
                f"$JS.ACK.{s}.>",
                lay.input("report"),
                lay.report_requests,  # reports asked of df-server (not stored)
                lay.dead_letter("worker"),
                f"$KV.{lay.activity_bucket}.>",
                f"$KV.{lay.workers_bucket}.>",
            ),
            publish_deny=protected,
            # eager start offers (df-server's requests, crossing from its account: answered
            # through allow_responses)
            subscribe_allow=(inbox, f"{lay.events_prefix}.query.*", f"{lay.events_prefix}.ws.*"),
            allow_responses=True,
        )
    client = (
        *read,
        *kv_read,
        *payloads,
        lay.input("start"),
        lay.start_requests,  # starts asked of df-server (not stored)
        lay.input("run"),
        lay.schedule_input("ctl"),
        f"{lay.events_prefix}.query.*",
        lay.visibility,
    )
    subscribe = (inbox, f"{lay.events_prefix}.closed.>")
    if role == "client":
        return Permissions(client, (), subscribe, allow_responses=True)
    if role == "admin":
        admin = (
            f"{api}.STREAM.NAMES",
            f"{api}.STREAM.LIST",
            f"{api}.CONSUMER.NAMES.*",
            f"{api}.CONSUMER.LIST.*",
            # dead letters, through the one consumer named DEAD_LETTER_CONSUMER
            f"{api}.CONSUMER.CREATE.{s}.{DEAD_LETTER_CONSUMER}.{lay.dead_letters()}",
            f"{api}.CONSUMER.MSG.NEXT.{s}.{DEAD_LETTER_CONSUMER}",
            f"{api}.CONSUMER.DELETE.{s}.{DEAD_LETTER_CONSUMER}",
            lay.removal("delete"),
        )
        return Permissions((*client, *admin), (), subscribe, allow_responses=True)
    raise InvalidArgumentError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")


def _list(subjects: Iterable[str]) -> str:
    # JSON strings are valid quoted strings of the config language; quoting keeps `$JS...`
    # from being read as a variable reference
    return "[" + ", ".join(json.dumps(x) for x in subjects) + "]"


def _exports(namespace: str, user_keys: Iterable[str]) -> list[tuple[str, str, str]]:
    """(kind, subject, response type) the namespace's account lends its users' account.

    Of the inboxes, only those of the users (``user_keys``) cross: the server's own inbox
    traffic (every PubAck and API answer it gets) stays in its account."""
    lay = Layout(namespace)
    api = "$JS.API"
    services = [
        f"{api}.INFO",
        f"{api}.STREAM.INFO.*",
        f"{api}.STREAM.MSG.GET.*",
        f"{api}.STREAM.NAMES",
        f"{api}.STREAM.LIST",
        f"{api}.CONSUMER.INFO.>",
        f"{api}.CONSUMER.CREATE.>",
        f"{api}.CONSUMER.DELETE.>",
        f"{api}.CONSUMER.NAMES.>",
        f"{api}.CONSUMER.LIST.>",
        "$JS.ACK.>",
        "$JS.FC.>",
        lay.input("start"),
        lay.input("run"),
        lay.input("report"),
        lay.report_requests,
        lay.start_requests,
        lay.dead_letter("worker"),
        lay.schedule_input("ctl"),
        lay.visibility,
        lay.removal("delete"),
        f"$KV.{lay.activity_bucket}.>",
        f"$KV.{lay.workers_bucket}.>",
        f"$O.{lay.payloads_bucket}.>",
    ]
    out = [("service", x, "") for x in services]
    # batched direct gets and pulls answer with many messages
    out.append(("service", f"{api}.DIRECT.GET.>", "stream"))
    out.append(("service", f"{api}.CONSUMER.MSG.NEXT.>", "stream"))
    out.append(("stream", f"{lay.events_prefix}.closed.>", ""))
    out += [("stream", f"{inbox_prefix(key)}.>", "") for key in user_keys]
    return out


def render_config(seeds: dict[tuple[str, str], str]) -> str:
    """The nats-server include file for users ``(namespace, role) -> seed``."""
    namespaces = sorted({ns for ns, _ in seeds}, key=str)
    lines = [
        "# DurableFuture accounts and users, written by `df auth init`.",
        '# Include it from the nats-server config: include "df-auth.conf"',
        "# Per namespace: an account with JetStream and the server user, and an account of the",
        "# worker, client and admin users, which reach the first only through its exports.",
        "accounts {",
    ]
    for ns in namespaces:
        home, users = account_name(ns), users_account_name(ns)
        user_keys = [
            public_key_of(seeds[(ns, role)])
            for role in ROLES
            if role != "server" and (ns, role) in seeds
        ]
        exports = _exports(ns, user_keys)
        for name in (home, users):
            lines.append(f"  {name}: {{")
            if name == home:
                lines.append("    jetstream: enabled")
            lines.append("    users: [")
            for role in ROLES:
                seed = seeds.get((ns, role))
                if seed is None or (role == "server") != (name == home):
                    continue
                key = public_key_of(seed)
                perms = permissions(role, ns, key)
                block = "" if perms.unrestricted else f", permissions: {perms.render()}"
                lines.append(f"      # {role}")
                lines.append(f"      {{nkey: {json.dumps(key)}{block}}}")
            lines.append("    ]")
            # the other way, df-server's eager start offers to the workers
            offers = json.dumps(f"{Layout(ns).events_prefix}.ws.*")
            if name == home:
                lines.append("    exports: [")
                for kind, subject, response in exports:
                    extra = f", response_type: {response}" if response else ""
                    lines.append(f"      {{{kind}: {json.dumps(subject)}{extra}}}")
                lines.append("    ]")
                lines.append("    imports: [")
                lines.append(f"      {{service: {{account: {users}, subject: {offers}}}}}")
            else:
                lines.append("    imports: [")
                for kind, subject, _ in exports:
                    ref = f"{{account: {home}, subject: {json.dumps(subject)}}}"
                    lines.append(f"      {{{kind}: {ref}}}")
                lines.append("    ]")
                lines.append("    exports: [")
                lines.append(f"      {{service: {offers}}}")
            lines.append("    ]")
            lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_creds(seed: str, namespace: str, role: str) -> str:
    """A credentials file holding ``seed`` (the seed block of a NATS creds file)."""
    return (
        f"# DurableFuture {role} of namespace {namespace} (written by `df auth init`).\n"
        "# Pass it as --creds (or Client.connect(creds=...)). Keep it secret: it logs in.\n"
        "\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed}\n"
        "------END USER NKEY SEED------\n"
    )


def generate(
    namespaces: Sequence[str], roles: Sequence[str] = ROLES
) -> tuple[str, dict[tuple[str, str], str]]:
    """New seeds for every (namespace, role) and the config for them (nothing written)."""
    if not namespaces:
        raise InvalidArgumentError("give at least one namespace")
    for role in roles:
        if role not in ROLES:
            raise InvalidArgumentError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    seeds = {(check_namespace(ns), role): new_user_seed() for ns in namespaces for role in roles}
    return render_config(seeds), seeds


def write(
    out: str | os.PathLike[str], namespaces: Sequence[str], *, force: bool = False
) -> AuthFiles:
    """Write ``<out>/df-auth.conf`` and ``<out>/<ns>/<role>.creds`` for every namespace.

    Raises:
        InvalidArgumentError: a file exists already (and ``force`` is false), or a namespace
            name is invalid.
    """
    config_text, seeds = generate(list(dict.fromkeys(namespaces)))
    root = Path(out)
    config = root / CONFIG_NAME
    creds = {key: root / key[0] / f"{key[1]}.creds" for key in seeds}
    if not force:
        existing = [p for p in (config, *creds.values()) if p.exists()]
        if existing:
            raise InvalidArgumentError(
                f"{existing[0]} exists already; pass --force to replace every credential "
                "(the old ones stop working once nats-server reloads the new config)"
            )
    root.mkdir(parents=True, exist_ok=True)
    for (ns, role), path in creds.items():
        path.parent.mkdir(mode=0o700, exist_ok=True)
        _write_private(path, render_creds(seeds[(ns, role)], ns, role))
    _write_private(config, config_text)
    return AuthFiles(config=config, creds=creds)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
