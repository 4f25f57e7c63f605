"""What SMTP over TLS costs before our code runs: the floors under bench_smtp.py's figure.

Run by hand:  python bench/smtp_floor.py [--messages 4000] [--connections 8]

The same senders as ``bench_smtp.py`` (smtplib, implicit TLS, 2 KB messages, 8
persistent connections) against three servers that store nothing, each on the
standard asyncio loop and on uvloop:

- ``raw``: a 40-line ``asyncio.Protocol`` that answers every command (TLS and
  sockets only: the floor of any Python server);
- ``aiosmtpd``: stock aiosmtpd with a handler that accepts every message and keeps
  nothing (no AUTH, no recording, no storage);
- and, for comparison, ``bench_smtp.py`` runs the real server (AUTH, recording, MIME
  analysis, durable storage).

Server CPU per message = (utime + stime of the server process) / messages.
Figures, not assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import smtplib
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

BODY = b"Subject: floor\r\n\r\n" + (b"x" * 70 + b"\r\n") * 28  # about 2 KB


class RawSmtp(asyncio.Protocol):
    """Just enough SMTP for smtplib: every line answered, DATA read in one scan."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buffer = b""
        self.in_data = False
        transport.write(b"220 floor\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    return
                self.buffer = self.buffer[end + 5 :]
                self.in_data = False
                self.transport.write(b"250 OK\r\n")
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return
            command = self.buffer[:4].upper()
            self.buffer = self.buffer[end + 2 :]
            if command == b"EHLO":
                self.transport.write(b"250-floor\r\n250 8BITMIME\r\n")
            elif command == b"DATA":
                self.in_data = True
                self.transport.write(b"354 go on\r\n")
            elif command == b"QUIT":
                self.transport.write(b"221 bye\r\n")
                self.transport.close()
            else:
                self.transport.write(b"250 OK\r\n")


class KeepNothing:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def _server(kind: str, loop_kind: str, cert_dir: str, ports: Any) -> None:
    if loop_kind == "uvloop":
        import uvloop

        uvloop.install()

    async def main() -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(f"{cert_dir}/cert.pem", f"{cert_dir}/key.pem")
        factory: Any = RawSmtp if kind == "raw" else (lambda: SMTP(KeepNothing(), hostname="f"))
        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=context)
        ports.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _sender(port: int, count: int, out: Any) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = smtplib.SMTP_SSL("127.0.0.1", port, context=context, timeout=30)
    client.ehlo("floor")
    for _ in range(count):
        client.sendmail("a@floor.test", ["b@floor.test"], BODY)
    client.quit()
    out.put(count)


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(kind: str, loop_kind: str, cert_dir: str, messages: int, connections: int) -> str:
    ports: Any = mp.Queue()
    server = mp.Process(target=_server, args=(kind, loop_kind, cert_dir, ports), daemon=True)
    server.start()
    port = ports.get(timeout=30)
    assert server.pid is not None
    cpu0 = _cpu(server.pid)
    started = time.perf_counter()
    done: Any = mp.Queue()
    senders = [
        mp.Process(target=_sender, args=(port, messages // connections, done))
        for _ in range(connections)
    ]
    for p in senders:
        p.start()
    total = sum(done.get(timeout=300) for _ in senders)
    for p in senders:
        p.join()
    elapsed = time.perf_counter() - started
    cpu = _cpu(server.pid) - cpu0
    server.terminate()
    server.join()
    return (
        f"{kind:9} on {loop_kind:7}: {total / elapsed:7.0f} msg/s, "
        f"server CPU {cpu * 1000 / total:.3f} ms/msg"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cert_dir:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=localhost", "-keyout", f"{cert_dir}/key.pem",
             "-out", f"{cert_dir}/cert.pem"],
            check=True,
            capture_output=True,
        )  # fmt: skip
        print(f"SMTP floors: {args.connections} connections, implicit TLS, 2 KB messages")
        for kind in ("raw", "aiosmtpd"):
            for loop_kind in ("asyncio", "uvloop"):
                print(measure(kind, loop_kind, cert_dir, args.messages, args.connections))


if __name__ == "__main__":
    main()
