"""Load benchmark: many IMAP sessions and SMTP senders at once against a real ``serve``.

    python bench/bench_load.py [--imap 200] [--smtp 50] [--duration 60] [--procs 2]
                               [--think 1.0] [--smtp-think 0.5] [--mailboxes 50] [--json F]

``segur-sim serve`` runs as its own process on free loopback ports (``bench/_server.py``).
The clients are asyncio code of our own (below: a few dozen lines of IMAP and SMTP each,
no response parsing beyond what the loop needs), spread over ``--procs`` client
processes. Why asyncio rather than threads with imaplib/smtplib: 250 threads in one
interpreter fight over the GIL (a thread waits up to its 5 ms switch interval behind the
others), so the client's own queueing would show up as server latency. One event loop
per process does no such thing, and each client process measures its own event-loop lag
(a 10 ms ticker), printed with the results: if it is high, the client, not the server,
was the bottleneck.

What runs (each session loops until the end of the run, then logs out):

- IMAP session (PER mailboxes with XOAUTH2, every fifth one an APP mailbox with its ORG
  client certificate and LOGIN; alternately implicit TLS and STARTTLS): SELECT INBOX,
  ``UID SEARCH UID n:*`` for mail newer than what it has read, ``UID FETCH`` of the new
  mail's headers (up to 20), ``UID FETCH BODY.PEEK[]`` of the newest 3 and
  ``UID STORE +FLAGS (\\Seen)`` on them (or a FLAGS resync of the last 20 when nothing is
  new), NOOP, one cycle in five an IDLE round-trip (IDLE, wait up to 1 s for news, DONE),
  then a think time (uniform 0.5x-1.5x ``--think``). One cycle in 50 logs out and
  reconnects.
- SMTP sender (PER identities, STARTTLS + XOAUTH2): a 2-5 KB mail to 1 (80 %) or 2
  recipients among the mailboxes the IMAP sessions read, on a persistent connection,
  then a think time (0.5x-1.5x ``--smtp-think``); one mail in ten opens a new
  connection first (QUIT, connect, STARTTLS, AUTH).

Before the run every mailbox gets a few mails (untimed). After it, every mailbox is read
over IMAP: each acknowledged (``250``) mail must be there exactly once.

Printed: per operation p50/p99/max latency and count, throughput, the error count with
the first errors verbatim, server RSS (start, peak, end) and CPU (% of one core), per
server thread the share of the wall time it ran and the share it was runnable but
waiting for a CPU (``/proc/PID/task/*/schedstat``: a busy machine shows there), the
clients' CPU and event-loop lag, the load average before and after, and the
acknowledged-mail check. Exit code 1 if there was an error or a lost or duplicated mail
(latency targets are reported, not enforced); the server's stderr tail is then printed.

``--rounds N`` runs N times against the same server (RSS after each: a leak shows).
``--procs 0`` runs the clients in this process (what tests/robustness/test_load.py does
through :func:`run_load`). ``--server-nice`` is a diagnostic.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing as mp
import os
import random
import re
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import DOMAIN, ServerProcess, prepare_data_dir, read_proc_status

OP_TIMEOUT = 30.0  # an operation slower than this is an error (a stall)
MAX_ERRORS_KEPT = 10


# ---- configuration and results ---------------------------------------------------------
@dataclass
class Identity:
    address: str
    kind: str  # "PER" or "APP"
    token: str = ""  # PER: PSC access token
    cert: str = ""  # APP: client certificate chain and key
    key: str = ""

    def xoauth2(self) -> str:
        raw = f"user={self.address}\x01auth=Bearer {self.token}\x01\x01"
        return base64.b64encode(raw.encode()).decode()


@dataclass
class LoadConfig:
    imap_sessions: int = 200
    smtp_senders: int = 50
    duration: float = 60.0  # seconds of load after the ramp
    ramp: float = 5.0  # sessions start at random moments in [0, ramp]
    think: float = 1.0  # mean think time between IMAP cycles
    smtp_think: float = 0.5  # mean think time between mails of one sender
    idle_every: int = 5  # one IMAP cycle in N does an IDLE round-trip
    idle_wait: float = 1.0
    reconnect_every: int = 50  # one IMAP cycle in N logs out and reconnects
    smtp_new_connection_every: int = 10
    seed_mails: int = 4  # per mailbox, before the run
    seed: int = 1


@dataclass
class Endpoints:
    imaps: int
    imap_starttls: int
    smtp_starttls: int
    ca: str


@dataclass
class ClientResult:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    acked: dict[str, list[str]] = field(default_factory=dict)  # mailbox -> Message-IDs
    sent_unacked: int = 0
    loop_lag: list[float] = field(default_factory=list)
    cycles: int = 0
    idle_news: int = 0  # IDLE round-trips that saw new mail arrive
    imap_served: int = 0  # IMAP sessions that completed at least one cycle
    smtp_served: int = 0  # SMTP senders that got at least one 250
    cpu_seconds: float = 0.0  # the client process(es), during the run

    def add(self, op: str, seconds: float) -> None:
        self.latencies.setdefault(op, []).append(seconds)

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.first_errors) < MAX_ERRORS_KEPT:
            self.first_errors.append(text[:500])

    def merge(self, other: ClientResult) -> None:
        for op, values in other.latencies.items():
            self.latencies.setdefault(op, []).extend(values)
        self.errors += other.errors
        self.first_errors.extend(other.first_errors[: MAX_ERRORS_KEPT - len(self.first_errors)])
        for box, ids in other.acked.items():
            self.acked.setdefault(box, []).extend(ids)
        self.sent_unacked += other.sent_unacked
        self.loop_lag.extend(other.loop_lag)
        self.cycles += other.cycles
        self.idle_news += other.idle_news
        self.imap_served += other.imap_served
        self.smtp_served += other.smtp_served
        self.cpu_seconds += other.cpu_seconds


class ProtocolError(Exception):
    """The server answered something other than what the step needs."""


# ---- a small asyncio IMAP client ----------------------------------------------------------
_LITERAL = re.compile(rb"\{(\d+)\}\r\n\Z")


class AsyncImap:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.tags = 0

    @classmethod
    async def connect(cls, ends: Endpoints, ctx: ssl.SSLContext, *, implicit: bool) -> AsyncImap:
        if implicit:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", ends.imaps, ssl=ctx, server_hostname="127.0.0.1"
            )
            client = cls(reader, writer)
            await client.expect_greeting()
            return client
        reader, writer = await asyncio.open_connection("127.0.0.1", ends.imap_starttls)
        client = cls(reader, writer)
        await client.expect_greeting()
        await client.ok("STARTTLS")
        await writer.start_tls(ctx, server_hostname="127.0.0.1")
        return client

    async def expect_greeting(self) -> None:
        line = await self.line()
        if not line.startswith(b"* OK"):
            raise ProtocolError(f"IMAP greeting: {line[:200]!r}")

    async def line(self) -> bytes:
        """One response line, with the literals it announces read in."""
        out = b""
        while True:
            part = await self.reader.readline()
            if not part:
                raise ConnectionError(f"IMAP server closed the connection (after {out[:200]!r})")
            out += part
            match = _LITERAL.search(part)
            if match is None:
                return out
            out += await self.reader.readexactly(int(match.group(1)))

    async def command(self, text: str) -> list[bytes]:
        self.tags += 1
        tag = b"L%d" % self.tags
        self.writer.write(tag + b" " + text.encode() + b"\r\n")
        lines = []
        while True:
            line = await self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines
            if line.startswith(b"* BYE") and text != "LOGOUT":
                raise ProtocolError(f"unexpected {line[:200]!r} after {text[:60]!r}")

    async def ok(self, text: str) -> list[bytes]:
        lines = await self.command(text)
        status = lines[-1].split(b" ", 2)[1:2]
        if status != [b"OK"]:
            raise ProtocolError(f"{text[:60]!r} -> {lines[-1][:300]!r}")
        return lines

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2)


# ---- a small asyncio SMTP client -----------------------------------------------------------
class AsyncSmtp:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def reply(self) -> tuple[int, bytes]:
        text = b""
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError(f"SMTP server closed the connection (after {text!r})")
            text += line
            if line[3:4] != b"-":
                try:
                    return int(line[:3]), text
                except ValueError:
                    raise ProtocolError(f"not an SMTP reply: {line[:200]!r}") from None

    async def cmd(self, line: str, expect: int) -> bytes:
        self.writer.write(line.encode() + b"\r\n")
        code, text = await self.reply()
        if code != expect:
            shown = line if not line.startswith("AUTH") else "AUTH XOAUTH2 <redacted>"
            raise ProtocolError(f"{shown[:80]!r} -> {text[:300]!r}")
        return text

    @classmethod
    async def connect(cls, ends: Endpoints, ctx: ssl.SSLContext, who: Identity) -> AsyncSmtp:
        reader, writer = await asyncio.open_connection("127.0.0.1", ends.smtp_starttls)
        client = cls(reader, writer)
        code, text = await client.reply()
        if code != 220:
            raise ProtocolError(f"SMTP greeting: {text[:200]!r}")
        await client.cmd("EHLO lps.load.example", 250)
        await client.cmd("STARTTLS", 220)
        await writer.start_tls(ctx, server_hostname="127.0.0.1")
        await client.cmd("EHLO lps.load.example", 250)
        await client.cmd("AUTH XOAUTH2 " + who.xoauth2(), 235)
        return client

    async def send(self, sender: str, rcpts: list[str], data: bytes) -> None:
        await self.cmd(f"MAIL FROM:<{sender}> SIZE={len(data)}", 250)
        for rcpt in rcpts:
            await self.cmd(f"RCPT TO:<{rcpt}>", 250)
        await self.cmd("DATA", 354)
        stuffed = re.sub(rb"(?m)^\.", b"..", data)
        if not stuffed.endswith(b"\r\n"):
            stuffed += b"\r\n"
        self.writer.write(stuffed + b".\r\n")
        code, text = await self.reply()
        if code != 250:
            raise ProtocolError(f"end of DATA -> {text[:300]!r}")

    async def quit(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(b"QUIT\r\n")
            await asyncio.wait_for(self.reply(), 5)
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2)


# ---- mails --------------------------------------------------------------------------------
_WORDS = [
    "patient", "compte", "rendu", "hospitalisation", "consultation", "examen", "biologie",
    "resultat", "traitement", "suivi", "ordonnance", "courrier", "service", "medecin",
    "cardiologie", "radiologie",
]  # fmt: skip


def make_mail(rng: random.Random, sender: str, rcpts: list[str], message_id: str) -> bytes:
    """A 2-5 KB MSSanté-like mail (one in four multipart with a small attachment)."""
    size = rng.randint(2048, 5120)
    head = (
        f"From: <{sender}>\r\nTo: {', '.join(f'<{r}>' for r in rcpts)}\r\n"
        f"Subject: load {rng.choice(_WORDS)} {rng.choice(_WORDS)}\r\n"
        f"Date: Mon, 23 Nov 2026 10:00:00 +0100\r\nMessage-ID: <{message_id}>\r\n"
        "X-MSS-NIL: DEV935997\r\nMIME-Version: 1.0\r\n"
    )
    lines = []
    total = len(head) + 120
    while total < size:
        line = " ".join(rng.choice(_WORDS) for _ in range(10))
        lines.append(line)
        total += len(line) + 2
    text = "\r\n".join(lines) + "\r\n"
    if rng.random() < 0.25:
        cut = len(text) // 2
        blob = base64.encodebytes(rng.randbytes(cut * 3 // 4)).replace(b"\n", b"\r\n")
        return (
            head.encode()
            + b'Content-Type: multipart/mixed; boundary="=_load"\r\n\r\n'
            + b"--=_load\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            + text[:cut].encode()
            + b"\r\n--=_load\r\nContent-Type: application/pdf\r\n"
            + b"Content-Transfer-Encoding: base64\r\n\r\n"
            + blob
            + b"--=_load--\r\n"
        )
    return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text).encode()


# ---- the sessions --------------------------------------------------------------------------
class Load:
    """One client process's share of the sessions, on one event loop."""

    def __init__(
        self,
        cfg: LoadConfig,
        ends: Endpoints,
        readers: list[tuple[int, Identity]],
        senders: list[tuple[int, Identity]],
        mailboxes: list[str],
        proc_index: int,
    ) -> None:
        self.cfg = cfg
        self.ends = ends
        self.readers = readers
        self.senders = senders
        self.mailboxes = mailboxes
        self.proc_index = proc_index
        self.result = ClientResult()
        self.ctx = ssl.create_default_context(cafile=ends.ca)
        self._app_ctx: dict[str, ssl.SSLContext] = {}
        self.stop_at = 0.0
        self.serial = 0

    def context(self, who: Identity) -> ssl.SSLContext:
        if who.kind != "APP":
            return self.ctx
        ctx = self._app_ctx.get(who.address)
        if ctx is None:
            ctx = ssl.create_default_context(cafile=self.ends.ca)
            ctx.load_cert_chain(who.cert, who.key)
            self._app_ctx[who.address] = ctx
        return ctx

    async def timed(self, op: str, awaitable: Any) -> Any:
        started = time.perf_counter()
        try:
            value = await asyncio.wait_for(awaitable, OP_TIMEOUT)
        except TimeoutError:
            raise ProtocolError(f"{op}: no answer in {OP_TIMEOUT:.0f} s (stall)") from None
        self.result.add(op, time.perf_counter() - started)
        return value

    # ---- seeding and checking (untimed) ------------------------------------------------------
    async def seed(self) -> None:
        """``seed_mails`` mails to each mailbox of this process's senders' share."""
        if not self.senders:
            return
        rng = random.Random(self.cfg.seed * 1000 + self.proc_index)
        _, who = self.senders[0]
        client = await asyncio.wait_for(AsyncSmtp.connect(self.ends, self.ctx, who), OP_TIMEOUT)
        try:
            share = self.mailboxes[self.proc_index :: max(1, self._procs)]
            for box in share:
                for _ in range(self.cfg.seed_mails):
                    await self._send_one(client, who, [box], rng, timed=False)
        finally:
            await client.quit()

    _procs = 1

    async def _send_one(
        self, client: AsyncSmtp, who: Identity, rcpts: list[str], rng: random.Random, *, timed: bool
    ) -> None:
        self.serial += 1
        message_id = f"load-{self.proc_index}-{self.serial}-{rng.getrandbits(32):08x}@lps.example"
        data = make_mail(rng, who.address, rcpts, message_id)
        try:
            if timed:
                await self.timed("smtp mail", client.send(who.address, rcpts, data))
            else:
                await asyncio.wait_for(client.send(who.address, rcpts, data), OP_TIMEOUT)
        except BaseException:
            self.result.sent_unacked += 1
            raise
        for rcpt in rcpts:
            self.result.acked.setdefault(rcpt, []).append(message_id)

    # ---- the run -------------------------------------------------------------------------
    async def run(self) -> ClientResult:
        cpu0 = time.process_time()
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.stop_at = start + self.cfg.ramp + self.cfg.duration
        lag_task = asyncio.ensure_future(self._lag_probe())
        tasks = [
            asyncio.ensure_future(self._imap_session(index, who)) for index, who in self.readers
        ] + [asyncio.ensure_future(self._smtp_sender(index, who)) for index, who in self.senders]
        await asyncio.gather(*tasks)
        lag_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lag_task
        self.result.cpu_seconds = time.process_time() - cpu0
        return self.result

    async def _lag_probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            self.result.loop_lag.append(loop.time() - before - 0.01)

    def _running(self) -> bool:
        return asyncio.get_running_loop().time() < self.stop_at

    async def _imap_session(self, index: int, who: Identity) -> None:
        cfg = self.cfg
        rng = random.Random(cfg.seed * 100_003 + index)
        await asyncio.sleep(rng.uniform(0, cfg.ramp))
        last_uid = 0
        cycle = 0
        client: AsyncImap | None = None
        while self._running():
            try:
                if client is None:
                    client = await self.timed("imap connect+TLS", self._imap_connect(index, who))
                    if who.kind == "PER":
                        await self.timed(
                            "imap login", client.ok("AUTHENTICATE XOAUTH2 " + who.xoauth2())
                        )
                    else:
                        await self.timed("imap login", client.ok(f"LOGIN {who.address} x"))
                last_uid = await self._imap_cycle(client, last_uid, cycle, rng)
                cycle += 1
                if cycle == 1:
                    self.result.imap_served += 1
                self.result.cycles += 1
                if cycle % cfg.reconnect_every == 0:
                    await self.timed("imap logout", client.ok("LOGOUT"))
                    await client.close()
                    client = None
            except (ProtocolError, ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
                self.result.error(f"IMAP session {index} ({who.address}): {exc!r}")
                if client is not None:
                    await client.close()
                client = None
                await asyncio.sleep(0.5)
                continue
            await asyncio.sleep(rng.uniform(0.5 * cfg.think, 1.5 * cfg.think))
        if client is not None:
            try:
                await self.timed("imap logout", client.ok("LOGOUT"))
            except (ProtocolError, ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
                self.result.error(f"IMAP session {index} ({who.address}) LOGOUT: {exc!r}")
            await client.close()

    async def _imap_connect(self, index: int, who: Identity) -> AsyncImap:
        return await AsyncImap.connect(self.ends, self.context(who), implicit=index % 2 == 0)

    async def _imap_cycle(
        self, client: AsyncImap, last_uid: int, cycle: int, rng: random.Random
    ) -> int:
        await self.timed("imap SELECT", client.ok("SELECT INBOX"))
        lines = await self.timed("imap UID SEARCH", client.ok(f"UID SEARCH UID {last_uid + 1}:*"))
        found = [int(n) for line in lines if line.startswith(b"* SEARCH") for n in line[8:].split()]
        new = sorted(u for u in found if u > last_uid)
        if new:
            heads = new[-20:]
            await self.timed(
                "imap FETCH headers",
                client.ok(
                    f"UID FETCH {','.join(map(str, heads))} (UID FLAGS RFC822.SIZE "
                    "BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE MESSAGE-ID)])"
                ),
            )
            bodies = ",".join(map(str, new[-3:]))
            await self.timed("imap FETCH bodies", client.ok(f"UID FETCH {bodies} (BODY.PEEK[])"))
            await self.timed("imap STORE", client.ok(f"UID STORE {bodies} +FLAGS (\\Seen)"))
            last_uid = new[-1]
        else:
            await self.timed(
                "imap FETCH flags", client.ok(f"UID FETCH {max(1, last_uid - 19)}:* (FLAGS)")
            )
        await self.timed("imap NOOP", client.ok("NOOP"))
        if cycle % self.cfg.idle_every == self.cfg.idle_every - 1:
            await self._idle(client, rng)
        return last_uid

    async def _idle(self, client: AsyncImap, rng: random.Random) -> None:
        client.tags += 1
        tag = b"L%d" % client.tags
        started = time.perf_counter()
        client.writer.write(tag + b" IDLE\r\n")

        async def continuation() -> None:
            while True:
                line = await client.line()
                if line.startswith(b"+"):
                    return
                if line.startswith(tag + b" ") or line.startswith(b"* BYE"):
                    raise ProtocolError(f"IDLE -> {line[:200]!r}")

        await asyncio.wait_for(continuation(), OP_TIMEOUT)
        self.result.add("imap IDLE (to +)", time.perf_counter() - started)
        # Wait a little for news (a new mail: EXISTS), as a client in IDLE does.
        deadline = time.perf_counter() + rng.uniform(0.5, 1.0) * self.cfg.idle_wait
        while (left := deadline - time.perf_counter()) > 0:
            try:
                line = await asyncio.wait_for(client.line(), left)
            except TimeoutError:
                break
            if line.startswith(b"* BYE"):
                raise ProtocolError(f"during IDLE: {line[:200]!r}")
            if line.endswith(b"EXISTS\r\n"):
                self.result.idle_news += 1
                break
        started = time.perf_counter()
        client.writer.write(b"DONE\r\n")

        async def done() -> None:
            while True:
                line = await client.line()
                if line.startswith(tag + b" "):
                    if line.split(b" ", 2)[1:2] != [b"OK"]:
                        raise ProtocolError(f"DONE -> {line[:200]!r}")
                    return

        await asyncio.wait_for(done(), OP_TIMEOUT)
        self.result.add("imap IDLE DONE", time.perf_counter() - started)

    async def _smtp_sender(self, index: int, who: Identity) -> None:
        cfg = self.cfg
        rng = random.Random(cfg.seed * 7919 + index)
        await asyncio.sleep(rng.uniform(0, cfg.ramp))
        client: AsyncSmtp | None = None
        sent = 0
        while self._running():
            try:
                if client is not None and sent % cfg.smtp_new_connection_every == 0 and sent:
                    await client.quit()
                    client = None
                if client is None:
                    client = await self.timed(
                        "smtp connect+STARTTLS+AUTH", AsyncSmtp.connect(self.ends, self.ctx, who)
                    )
                count = 2 if rng.random() < 0.2 else 1
                rcpts = rng.sample(self.mailboxes, count)
                await self._send_one(client, who, rcpts, rng, timed=True)
                sent += 1
                if sent == 1:
                    self.result.smtp_served += 1
            except (ProtocolError, ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
                self.result.error(f"SMTP sender {index} ({who.address}): {exc!r}")
                if client is not None:
                    client.writer.close()
                client = None
                await asyncio.sleep(0.5)
                continue
            await asyncio.sleep(rng.uniform(0.5 * cfg.smtp_think, 1.5 * cfg.smtp_think))
        if client is not None:
            await client.quit()


def _client_process(
    cfg: LoadConfig,
    ends: Endpoints,
    readers: list[tuple[int, Identity]],
    senders: list[tuple[int, Identity]],
    mailboxes: list[str],
    proc_index: int,
    procs: int,
    start_gate: Any,
    ready: Any,
    out: Any,
) -> None:
    """One client process: seed its share, wait for the others, run, report."""

    async def main() -> ClientResult:
        load = Load(cfg, ends, readers, senders, mailboxes, proc_index)
        load._procs = procs
        try:
            await load.seed()
        except Exception as exc:
            load.result.error(f"seeding failed: {exc!r}")
        ready.put(proc_index)
        await asyncio.get_running_loop().run_in_executor(None, start_gate.wait)
        return await load.run()

    try:
        result = asyncio.run(main())
    except BaseException as exc:  # report, never hang the parent
        result = ClientResult()
        result.error(f"client process {proc_index} crashed: {exc!r}")
    out.put(asdict(result))


# ---- set-up and the whole run ----------------------------------------------------------------
def make_identities(data_dir: Path, count: int, app_every: int = 5) -> list[Identity]:
    """``count`` mailboxes (one in ``app_every`` an APP mailbox) and their credentials."""
    from simulators.core.store.mail import MailboxType
    from simulators.mss.services import MssServices

    services = MssServices.open(data_dir)
    out: list[Identity] = []
    try:
        store = services.store
        for i in range(count):
            if app_every and i % app_every == app_every - 1:
                address = f"load.app.{i:03d}@{DOMAIN}"
                box = store.get_mailbox(address) or store.create_mailbox(
                    address, MailboxType.APP, entity="LABO LOAD"
                )
                creds = services.pki.client_credentials(box.address, box.entity, "valid")
                out.append(
                    Identity(address, "APP", cert=str(creds.chain_path), key=str(creds.key_path))
                )
            else:
                address = f"load.per.{i:03d}@{DOMAIN}"
                box = store.get_mailbox(address) or store.create_mailbox(address, MailboxType.PER)
                token = services.psc.issue(box, access_lifetime=4 * 3600).access_token
                out.append(Identity(address, "PER", token=token))
    finally:
        services.close()
    return out


@dataclass
class LoadReport:
    config: dict[str, Any]
    procs: int
    wall_seconds: float
    latencies: dict[str, dict[str, float]]
    errors: int
    first_errors: list[str]
    acked_mails: int
    acked_ids: list[str]
    acked_deliveries: int
    sent_unacked: int
    lost: int
    duplicated: int
    unacked_but_stored: int
    check_problems: list[str]
    imap_cycles: int
    idle_news: int
    imap_sessions_served: int
    smtp_senders_served: int
    client_loop_lag_ms: dict[str, float]
    server_rss_mb: dict[str, float]
    server_cpu_percent: float
    client_cpu_percent: float
    server_threads: dict[str, dict[str, float]]
    load_before: str
    load_after: str
    server_tracebacks: int

    @property
    def ok(self) -> bool:
        return (
            self.errors == 0
            and self.lost == 0
            and self.duplicated == 0
            and not self.check_problems
            and self.server_tracebacks == 0
        )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def thread_schedstat(pid: int) -> dict[str, tuple[int, int]]:
    """Per thread (name/tid): nanoseconds on a CPU and waiting for one (runqueue)."""
    out: dict[str, tuple[int, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            name = (task / "comm").read_text().strip()
            on_cpu, waiting = (task / "schedstat").read_text().split()[:2]
            label = "main thread" if task.name == str(pid) else f"{name} thread {task.name}"
            out[label] = (int(on_cpu), int(waiting))
    return out


def schedstat_share(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], wall: float
) -> dict[str, dict[str, float]]:
    """% of the wall time each lasting thread ran, and waited for a CPU while runnable."""
    shares: dict[str, dict[str, float]] = {}
    for key, (cpu1, wait1) in after.items():
        if key in before:
            cpu0, wait0 = before[key]
            run, wait = (cpu1 - cpu0) / 1e9 / wall * 100, (wait1 - wait0) / 1e9 / wall * 100
            if run + wait >= 1.0:
                shares[key] = {"on_cpu": run, "waiting_for_cpu": wait}
    return shares


class _Sampler:
    """Server RSS every 0.25 s in a thread (peak kept)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, KeyError):
                self.peak_kb = max(self.peak_kb, read_proc_status(self.pid)["VmRSS"])
            self._stop.wait(0.25)

    def __enter__(self) -> _Sampler:
        self.sched_before = thread_schedstat(self.pid)
        self.started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.threads = schedstat_share(
            self.sched_before, thread_schedstat(self.pid), time.perf_counter() - self.started
        )


async def read_mailbox_ids(ends: Endpoints, who: Identity) -> Counter[str]:
    """Message-IDs in ``who``'s INBOX, read over IMAP (EXAMINE: nothing changes)."""
    ctx = ssl.create_default_context(cafile=ends.ca)
    if who.kind == "APP":
        ctx.load_cert_chain(who.cert, who.key)
    client = await AsyncImap.connect(ends, ctx, implicit=True)
    try:
        if who.kind == "PER":
            await client.ok("AUTHENTICATE XOAUTH2 " + who.xoauth2())
        else:
            await client.ok(f"LOGIN {who.address} x")
        await client.ok("EXAMINE INBOX")
        lines = await client.ok("UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        await client.ok("LOGOUT")
    finally:
        await client.close()
    ids = re.findall(rb"Message-ID:\s*<([^>]+)>", b"".join(lines), re.I)
    return Counter(i.decode() for i in ids)


async def check_mailboxes(
    ends: Endpoints,
    identities: list[Identity],
    acked: dict[str, list[str]],
    earlier: frozenset[str] = frozenset(),
) -> tuple[int, int, int, list[str]]:
    """(lost, duplicated, unacked but stored, problems) over every mailbox.

    ``earlier``: Message-IDs of earlier runs against the same server (not counted as
    stored without a 250)."""
    lost = duplicated = extra = 0
    problems: list[str] = []
    semaphore = asyncio.Semaphore(8)

    async def one(who: Identity) -> tuple[Identity, Counter[str]]:
        async with semaphore:
            return who, await read_mailbox_ids(ends, who)

    for who, seen in await asyncio.gather(*(one(w) for w in identities)):
        wanted = Counter(acked.get(who.address, []))
        for message_id, n in wanted.items():
            if n > 1:
                problems.append(f"{who.address}: {message_id} acknowledged {n} times (client bug)")
            if seen[message_id] == 0:
                lost += 1
                if len(problems) < 20:
                    problems.append(f"{who.address}: acknowledged {message_id} missing")
            elif seen[message_id] > 1:
                duplicated += 1
                if len(problems) < 20:
                    problems.append(f"{who.address}: {message_id} present {seen[message_id]} times")
        extra += sum(1 for m in seen if m not in wanted and m not in earlier)
    return lost, duplicated, extra, problems


def run_load(
    data_dir: Path,
    cfg: LoadConfig,
    *,
    mailboxes: int = 50,
    procs: int = 2,
    server: ServerProcess | None = None,
    earlier: frozenset[str] = frozenset(),
) -> LoadReport:
    """Start ``serve`` (unless given a running one), run the load, check, report."""
    identities = make_identities(data_dir, mailboxes)
    owned = server is None
    if server is None:
        server = ServerProcess(data_dir, ready_timeout=120)
        server.start()
    try:
        return _run(server, identities, cfg, procs, earlier)
    finally:
        if owned:
            server.stop()


def _run(
    server: ServerProcess,
    identities: list[Identity],
    cfg: LoadConfig,
    procs: int,
    earlier: frozenset[str],
) -> LoadReport:
    ends = Endpoints(
        server.port("imaps"),
        server.port("imap_starttls"),
        server.port("smtp_starttls"),
        server.ca_bundle,
    )
    addresses = [w.address for w in identities]
    per = [w for w in identities if w.kind == "PER"]
    readers = [(i, identities[i % len(identities)]) for i in range(cfg.imap_sessions)]
    senders = [(j, per[j % len(per)]) for j in range(cfg.smtp_senders)]
    load_before = load_average()
    rss_start = server.rss_kb()
    if procs == 0:  # in this process (the CI test): seed, then run on one loop
        load = Load(cfg, ends, readers, senders, addresses, 0)
        asyncio.run(load.seed())
        cpu0 = server.cpu_seconds()
        started = time.perf_counter()
        with _Sampler(server.pid) as sampler:
            total = asyncio.run(load.run())
        return _report(
            server,
            identities,
            cfg,
            procs,
            total,
            sampler,
            started,
            cpu0,
            rss_start,
            load_before,
            earlier,
        )
    ctx = mp.get_context("spawn")
    gate = ctx.Event()
    ready = ctx.Queue()
    out = ctx.Queue()
    workers = [
        ctx.Process(
            target=_client_process,
            args=(
                cfg,
                ends,
                readers[k::procs],
                senders[k::procs],
                addresses,
                k,
                procs,
                gate,
                ready,
                out,
            ),
            daemon=True,
        )
        for k in range(procs)
    ]
    for worker in workers:
        worker.start()
    # Each worker seeds its share of the mailboxes (untimed), then waits at the gate.
    waiting = 0
    seed_deadline = time.monotonic() + 300
    while waiting < procs and time.monotonic() < seed_deadline:
        with contextlib.suppress(Exception):
            ready.get(timeout=1)
            waiting += 1
        if not any(w.is_alive() for w in workers):
            break
    cpu0 = server.cpu_seconds()
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    with _Sampler(server.pid) as sampler:
        gate.set()
        deadline = time.monotonic() + cfg.ramp + cfg.duration + 3 * OP_TIMEOUT + 60
        while len(results) < procs and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                results.append(out.get(timeout=1))
            if len(results) < procs and not any(w.is_alive() for w in workers):
                with contextlib.suppress(Exception):
                    results.append(out.get(timeout=5))
                break
    for worker in workers:
        worker.join(10)
        if worker.is_alive():
            worker.kill()
    total = ClientResult()
    for raw in results:
        total.merge(ClientResult(**raw))
    if len(results) < procs:
        total.error(f"{procs - len(results)} client process(es) reported nothing (hung?)")
    return _report(
        server,
        identities,
        cfg,
        procs,
        total,
        sampler,
        started,
        cpu0,
        rss_start,
        load_before,
        earlier,
    )


def _report(
    server: ServerProcess,
    identities: list[Identity],
    cfg: LoadConfig,
    procs: int,
    total: ClientResult,
    sampler: _Sampler,
    started: float,
    cpu0: float,
    rss_start: int,
    load_before: str,
    earlier: frozenset[str],
) -> LoadReport:
    wall = time.perf_counter() - started
    cpu = server.cpu_seconds() - cpu0
    rss_end = server.rss_kb()
    load_after = load_average()
    ends = Endpoints(
        server.port("imaps"),
        server.port("imap_starttls"),
        server.port("smtp_starttls"),
        server.ca_bundle,
    )
    lost, duplicated, extra, problems = asyncio.run(
        check_mailboxes(ends, identities, total.acked, earlier)
    )
    lat = {
        op: {
            "count": float(len(values)),
            "p50_ms": percentile(values, 0.50) * 1000,
            "p99_ms": percentile(values, 0.99) * 1000,
            "max_ms": max(values) * 1000,
        }
        for op, values in sorted(total.latencies.items())
    }
    lags = total.loop_lag
    return LoadReport(
        config=asdict(cfg),
        procs=procs,
        wall_seconds=wall,
        latencies=lat,
        errors=total.errors,
        first_errors=total.first_errors,
        acked_mails=len({m for ids in total.acked.values() for m in ids}),
        acked_ids=sorted({m for ids in total.acked.values() for m in ids}),
        acked_deliveries=sum(len(ids) for ids in total.acked.values()),
        sent_unacked=total.sent_unacked,
        lost=lost,
        duplicated=duplicated,
        unacked_but_stored=extra,
        check_problems=problems,
        imap_cycles=total.cycles,
        idle_news=total.idle_news,
        imap_sessions_served=total.imap_served,
        smtp_senders_served=total.smtp_served,
        client_loop_lag_ms={
            "p50": percentile(lags, 0.5) * 1000,
            "p99": percentile(lags, 0.99) * 1000,
            "max": (max(lags) if lags else 0.0) * 1000,
        },
        server_rss_mb={
            "start": rss_start / 1024,
            "peak": max(sampler.peak_kb, rss_end) / 1024,
            "end": rss_end / 1024,
        },
        server_cpu_percent=100 * cpu / wall,
        client_cpu_percent=100 * total.cpu_seconds / wall,
        server_threads=sampler.threads,
        load_before=load_before or load_average(),
        load_after=load_after,
        server_tracebacks=server.stderr_text().count("Traceback (most recent call last)"),
    )


def format_report(report: LoadReport) -> str:
    cfg = report.config
    out = [
        f"load: {cfg['imap_sessions']} IMAP sessions + {cfg['smtp_senders']} SMTP senders, "
        f"{cfg['duration']:.0f} s (+{cfg['ramp']:.0f} s ramp), think {cfg['think']} s IMAP / "
        f"{cfg['smtp_think']} s SMTP, {report.procs} client process(es), "
        f"{os.cpu_count()} CPU(s)",
        f"load average before {report.load_before}, after {report.load_after}",
        "",
        f"{'operation':30} {'count':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}",
    ]
    for op, row in report.latencies.items():
        out.append(
            f"{op:30} {int(row['count']):7d} {row['p50_ms']:8.1f} {row['p99_ms']:8.1f} "
            f"{row['max_ms']:8.1f}"
        )
    imap_ops = sum(int(r["count"]) for op, r in report.latencies.items() if op.startswith("imap"))
    mails = int(report.latencies.get("smtp mail", {}).get("count", 0))
    wall = report.wall_seconds
    all_p99 = max((r["p99_ms"] for r in report.latencies.values()), default=0.0)
    out += [
        "",
        f"throughput: {imap_ops / wall:.0f} IMAP commands/s, {mails / wall:.1f} mails/s "
        f"accepted ({report.acked_deliveries} deliveries incl. seeding), "
        f"{report.imap_cycles} IMAP cycles, {report.idle_news} IDLEs woken by new mail; "
        f"wall {wall:.1f} s; sessions served: IMAP {report.imap_sessions_served}/"
        f"{cfg['imap_sessions']}, SMTP {report.smtp_senders_served}/{cfg['smtp_senders']}",
        f"errors: {report.errors}",
        *(f"  {e}" for e in report.first_errors[:5]),
        f"acknowledged mails checked over IMAP: lost {report.lost}, duplicated "
        f"{report.duplicated}, stored without a 250 seen {report.unacked_but_stored} "
        f"(sends that failed: {report.sent_unacked})",
        *(f"  {p}" for p in report.check_problems[:5]),
        f"server: CPU {report.server_cpu_percent:.0f} % of one core; RSS start "
        f"{report.server_rss_mb['start']:.1f} MB, peak {report.server_rss_mb['peak']:.1f} MB, "
        f"end {report.server_rss_mb['end']:.1f} MB; tracebacks on stderr: "
        f"{report.server_tracebacks}",
        "server threads, % of wall time on a CPU / runnable but waiting for one: "
        + "; ".join(
            f"{name} {v['on_cpu']:.0f} / {v['waiting_for_cpu']:.0f}"
            for name, v in report.server_threads.items()
        ),
        f"clients: CPU {report.client_cpu_percent:.0f} % of one core (all processes); "
        f"event-loop lag: p50 {report.client_loop_lag_ms['p50']:.1f} ms, p99 "
        f"{report.client_loop_lag_ms['p99']:.1f} ms, max {report.client_loop_lag_ms['max']:.1f} ms",
        f"targets: 0 errors -> {'met' if report.errors == 0 else 'NOT met'}; "
        f"p99 < 200 ms (worst operation {all_p99:.1f} ms) -> "
        f"{'met' if all_p99 < 200 else 'NOT met'}",
    ]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imap", type=int, default=200, help="concurrent IMAP sessions")
    parser.add_argument("--smtp", type=int, default=50, help="concurrent SMTP senders")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--ramp", type=float, default=5.0)
    parser.add_argument("--think", type=float, default=1.0, help="mean IMAP think time (s)")
    parser.add_argument("--smtp-think", type=float, default=0.5, help="mean SMTP think time")
    parser.add_argument("--mailboxes", type=int, default=50)
    parser.add_argument(
        "--procs", type=int, default=2, help="client processes (0: in this process)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--server-nice",
        type=int,
        help="renice the server's threads (diagnostic: a negative value, as root, gives it "
        "the CPU before the machine's other work; say so when quoting the figures)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="runs against the same server (a leak shows)"
    )
    parser.add_argument("--data-dir", type=Path, help="default: a temporary directory")
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    args = parser.parse_args()
    cfg = LoadConfig(
        imap_sessions=args.imap,
        smtp_senders=args.smtp,
        duration=args.duration,
        ramp=args.ramp,
        think=args.think,
        smtp_think=args.smtp_think,
        seed=args.seed,
    )
    reports: list[LoadReport] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = prepare_data_dir(args.data_dir or Path(tmp) / "data")
        make_identities(data_dir, args.mailboxes)  # the mailboxes exist before the start
        server = ServerProcess(data_dir, ready_timeout=120)
        server.start()
        if args.server_nice is not None:  # every thread of the server (diagnostic)
            for task in Path(f"/proc/{server.pid}/task").iterdir():
                os.setpriority(os.PRIO_PROCESS, int(task.name), args.server_nice)
        try:
            for round_ in range(args.rounds):
                cfg.seed = args.seed + round_
                report = run_load(
                    data_dir,
                    cfg,
                    mailboxes=args.mailboxes,
                    procs=args.procs,
                    server=server,
                    earlier=frozenset(m for r in reports for m in r.acked_ids),
                )
                reports.append(report)
                if args.rounds > 1:
                    print(f"==== round {round_ + 1} of {args.rounds} (same server)")
                print(format_report(report), flush=True)
                if not report.ok:
                    print("server stderr (tail):\n" + server.stderr_tail(60), flush=True)
        finally:
            server.stop()
    if args.rounds > 1:
        print(
            "server RSS after each round (MB): "
            + ", ".join(f"{r.server_rss_mb['end']:.1f}" for r in reports)
        )
    if args.json:
        rows = [{k: v for k, v in asdict(r).items() if k != "acked_ids"} for r in reports]
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
