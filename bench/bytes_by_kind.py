"""Where nats-server's bytes go, per kind of message: W1 with the security parts on and off.

``python -m bench.bytes_by_kind [--w1-count 300] [--secure-parts auth,tls,codec] [--ref REF]``
runs ``python -m bench --workloads w1 --secure pair --rounds 1`` with nats-server's trace on
(``DF_BENCH_NATS_TRACE=1``: ``trace: true``, payloads traced whole). nats-server then logs
every message it delivers to a client connection, with its protocol line and its bytes
(headers and body), and every message a client publishes. For the W1 window only (the log's
offset before and after the workload), :func:`summarize` sums per kind of message:

* ``out``: what nats-server delivered (messages, bytes on the wire: protocol line, headers,
  body and the CRLFs), split into the subject and reply of the protocol line, each header
  by name, and the body; the kind is the subject's class (``df.<kind>``, ``dfev.<kind>``,
  ``$JS.API.<verb>``, ``$KV.<bucket>``) or, for a message on an inbox, ``reply:`` and the
  class of the request that named that inbox (``pull:`` for a pull's deliveries);
* ``in``: what the clients published, by the same classes.

Counts per W1 workflow, printed as JSON for both modes and their difference. The trace is
slow (every message is logged): the timings of these runs mean nothing, the counts do.
JetStream's and df-server's internal clients are not traced, so what nats-server writes to
its store is not in here; only the sockets of the daemons and the driver.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ENV = "DF_BENCH_NATS_TRACE"

__all__ = ["ENV", "classify", "summarize", "trace_config"]

_LINE = re.compile(
    r'\[TRC\] \S+ - \w+:(\d+) - (?:"([^"]*)" - )*(->>|<<-) (?:\[(H?(?:MSG|PUB)) ([^\]]*)\]'
    r"|MSG_PAYLOAD: \[(.*)\])$"
)


def trace_config() -> str:
    """The lines that turn nats-server's message trace on (payloads whole)."""
    return "trace: true\nmax_traced_msg_len: 0\n"


def classify(subject: str) -> str:
    """The class of a subject: its namespace, ids, queues and tokens left out."""
    t = subject.split(".")
    if t[0] in ("df", "dfev") and len(t) >= 3:
        return f"{t[0]}.{t[2]}"
    if t[0] == "$JS" and len(t) >= 3 and t[1] == "API":
        if t[2] in ("CONSUMER", "STREAM") and len(t) >= 4:
            verb = t[3] if t[3] != "MSG" else "MSG." + (t[4] if len(t) > 4 else "")
            return f"$JS.API.{t[2]}.{verb}" + (f".{t[-1]}" if verb == "MSG.NEXT" else "")
        if t[2] == "DIRECT":
            return "$JS.API.DIRECT.GET"
        return "$JS.API." + t[2]
    if t[0] == "$JS":
        return ".".join(t[:2])
    if t[0] in ("$KV", "$O") and len(t) >= 2:
        return ".".join(t[:2])
    if t[0] == "_INBOX":
        return "_INBOX"
    return t[0]


def _headers(raw: str, hdr_len: int) -> dict[str, int]:
    """Bytes per header name of a traced payload (``"NATS/1.0\\r\\nName: v\\r\\n\\r\\n..."``)."""
    try:
        text = ast.literal_eval(raw)  # Go's %q of the payload: close enough to a Python literal
    except (SyntaxError, ValueError):
        return {"(unparsed)": hdr_len}
    if not isinstance(text, str):
        return {"(unparsed)": hdr_len}
    head = text.encode("utf-8", "surrogateescape")[:hdr_len].decode("utf-8", "replace")
    out: dict[str, int] = defaultdict(int)
    lines = head.split("\r\n")
    out["(NATS/1.0 line and blank line)"] += len(lines[0]) + 4
    for line in lines[1:]:
        if line:
            out[line.split(":", 1)[0]] += len(line) + 2
    return dict(out)


def summarize(lines: Iterable[str], workflows: int) -> dict[str, Any]:
    """Per W1 workflow: what nats-server delivered and received, by kind (module docstring)."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    inb: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    reply_to: dict[str, str] = {}  # inbox subject -> class of the request that named it
    pending: dict[tuple[str, str], tuple[str, int]] = {}  # (cid, dir) -> (kind, header bytes)
    for line in lines:
        m = _LINE.search(line)
        if m is None:
            continue
        cid, _name, direction, op, args, payload = m.groups()
        key = (cid, direction)
        if op is None:
            kind, hdr = pending.pop(key, ("", 0))
            if kind and hdr and direction == "->>":
                for h, n in _headers(payload, hdr).items():
                    out[kind]["hdr " + h] += n
            continue
        a = args.split()
        if direction == "<<-":  # PUB subj [reply] size | HPUB subj [reply] hdr total
            n_tail = 2 if op == "HPUB" else 1
            subj, rest = a[0], a[1:]
            reply = rest[0] if len(rest) > n_tail else ""
            kind = classify(subj)
            if reply.startswith("_INBOX."):
                reply_to[reply] = ("pull:" if ".MSG.NEXT" in kind else "reply:") + kind
            total = int(rest[-1])
            c = inb[kind]
            c["msgs"] += 1
            c["bytes"] += len(op) + 1 + len(args) + 2 + total + 2
            c["reply subject"] += len(reply)
            c["headers"] += int(rest[-2]) if op == "HPUB" else 0
            continue
        # MSG subj sid [reply] size | HMSG subj sid [reply] hdr total
        n_tail = 2 if op == "HMSG" else 1
        subj, rest = a[0], a[2:]
        reply = rest[0] if len(rest) > n_tail else ""
        kind = reply_to.get(subj, "") or (
            "reply:?" if subj.startswith("_INBOX.") else classify(subj)
        )
        total = int(rest[-1])
        hdr = int(rest[-2]) if op == "HMSG" else 0
        c = out[kind]
        c["msgs"] += 1
        c["bytes"] += len(op) + 1 + len(args) + 2 + total + 2
        c["subject"] += len(subj)
        c["reply subject"] += len(reply)
        c["headers"] += hdr
        c["body"] += total - hdr
        pending[key] = (kind, hdr)

    def per_wf(table: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        rows = {
            k: {f: round(v / workflows, 1) for f, v in sorted(c.items())}
            for k, c in sorted(table.items(), key=lambda kv: -kv[1]["bytes"])
        }
        rows["TOTAL"] = {
            f: round(sum(c.get(f, 0.0) for c in table.values()) / workflows, 1)
            for f in ("msgs", "bytes", "headers", "body", "subject", "reply subject")
        }
        return rows

    return {"workflows": workflows, "out": per_wf(out), "in": per_wf(inb)}


def read_from(path: str, offset: int) -> list[str]:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace").splitlines()


def _diff(on: dict[str, Any], off: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in sorted(set(on) | set(off)):
        a, b = on.get(kind, {}), off.get(kind, {})
        out[kind] = {
            f: round(a.get(f, 0.0) - b.get(f, 0.0), 1)
            for f in sorted(set(a) | set(b))
            if a.get(f, 0.0) != b.get(f, 0.0)
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bytes_by_kind", description=__doc__)
    ap.add_argument("--w1-count", type=int, default=300)
    ap.add_argument("--secure-parts", default="auth,tls,codec")
    ap.add_argument("--ref", default=None, help="benchmark this git ref (as python -m bench)")
    ap.add_argument("--out", default=None, help="write the JSON here as well")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="df-bytes-") as tmp:
        lines = str(Path(tmp) / "bench.jsonl")
        args = ["--workloads", "w1", "--secure", "pair", "--rounds", "1", "--quick"]
        args += ["--w1-count", str(a.w1_count), "--secure-parts", a.secure_parts, "--out", lines]
        args += ["--ref", a.ref] if a.ref else []
        env = dict(os.environ, **{ENV: "1"})
        subprocess.run(
            [sys.executable, "-m", "bench", *args], env=env, check=False, stdout=sys.stderr
        )
        records = [json.loads(x) for x in Path(lines).read_text().splitlines() if x.strip()]
    by_mode = {
        r["secure"]: r["nats_bytes_by_kind"]
        for r in records
        if r.get("workload") == "w1" and "nats_bytes_by_kind" in r
    }
    result: dict[str, Any] = {"secure_parts": a.secure_parts, **by_mode}
    if "on" in by_mode and "off" in by_mode:
        result["on_minus_off"] = {
            d: _diff(by_mode["on"][d], by_mode["off"][d]) for d in ("out", "in")
        }
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0 if len(by_mode) == 2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
