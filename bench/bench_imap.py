"""IMAP benchmark (run by hand): the scripted session and 20 concurrent sessions.

    python bench/bench_imap.py [--messages 1000] [--runs 5] [--dovecot]

The server runs in a child process (so client and server do not share a GIL, as
with Dovecot), on free loopback ports with a temporary data directory. The client
is stdlib ``imaplib`` over STARTTLS with an APP mailbox (client certificate + LOGIN).

Scripted session (the baseline in /work/shared/docs/mail-notes.md): connect +
STARTTLS + LOGIN, SELECT, SEARCH, FETCH 1:* (FLAGS ENVELOPE), FETCH 1:* BODY.PEEK[],
STORE 1:* +FLAGS (\\Seen), UID SEARCH, 200 NOOP, LOGOUT. The concurrency figure is
20 threads each doing LOGIN, SELECT, FETCH 1:* (FLAGS ENVELOPE), SEARCH UNSEEN, LOGOUT.

``--dovecot`` runs the same script against ``/usr/sbin/dovecot`` if it is installed
(``apt-get install -y dovecot-imapd``; nothing is installed by this script), then
prints both side by side with the ratios. Dovecot runs unprivileged (as root, this
script starts it as the ``dovecot`` system user) from its own config file
(``dovecot -F -c FILE``), with a passwd-file user, a maildir holding the same 1,000
messages (same generator, same seed), the segur-sim server certificate for STARTTLS
and ``mail_max_userip_connections = 100``. Each server gets one untimed warm-up
session first (Dovecot builds its index then; segur-sim has its metadata at storage).
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import json
import os
import random
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASELINE_MS = {"total": 222.0, "FETCH 1:* (FLAGS ENVELOPE)": 29.0, "LOGIN": 6.7}

# ---- messages ------------------------------------------------------------------------
_NAMES = ["MARTIN", "BERNARD", "DUBOIS", "THOMAS", "ROBERT", "RICHARD", "PETIT", "DURAND"]
_FIRST = ["Jean", "Marie", "Pierre", "Sophie", "Luc", "Claire", "Paul", "Anne"]
_WORDS = [
    "patient",
    "compte",
    "rendu",
    "hospitalisation",
    "consultation",
    "examen",
    "biologie",
    "resultat",
    "traitement",
    "suivi",
    "ordonnance",
    "courrier",
    "service",
    "medecin",
    "cardiologie",
    "radiologie",
]


def make_message(i: int, rng: random.Random) -> bytes:
    """A 2-5 KB message with realistic MSSanté headers; every fifth is multipart."""
    name, first = rng.choice(_NAMES), rng.choice(_FIRST)
    sender = f"dr.{first.lower()}.{name.lower()}@mssante.localhost"
    headers = (
        f"Return-Path: <{sender}>\r\n"
        f"Received: from lps.example (localhost [127.0.0.1]) by smtp.mssante.localhost "
        f"with ESMTPSA id {i:08x}\r\n\tfor <labo@mssante.localhost>; "
        f"Mon, 3 Jun 2024 10:{i % 60:02d}:00 +0200\r\n"
        f'From: "Dr {first} {name}" <{sender}>\r\n'
        f"To: labo@mssante.localhost\r\n"
        f"Subject: XDM/1.0/DDM+CR {rng.choice(_WORDS)} {name} {first} 1970-01-{1 + i % 28:02d}\r\n"
        f"Date: Mon, 3 Jun 2024 10:{i % 60:02d}:00 +0200\r\n"
        f"Message-ID: <bench-{i}@lps.example>\r\n"
        "X-MSS-NIL: DEV935997\r\nX-MSS-INS: O\r\nX-MSS-CODECDA: 11490-0\r\n"
        f"Disposition-Notification-To: {sender}\r\n"
        "MIME-Version: 1.0\r\n"
    )
    size = rng.randint(1500, 4200)
    text = ""
    while len(text) < size:
        text += " ".join(rng.choice(_WORDS) for _ in range(12)) + "\r\n"
    if i % 5:
        return (
            headers + "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n" + text
        ).encode()
    import base64

    blob = base64.encodebytes(bytes(rng.getrandbits(8) for _ in range(size // 2)))
    return (
        headers.encode()
        + b'Content-Type: multipart/mixed; boundary="=_bench"\r\n\r\n'
        + b"--=_bench\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + text[: size // 2].encode()
        + b'\r\n--=_bench\r\nContent-Type: application/zip; name="IHE_XDM.ZIP"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="IHE_XDM.ZIP"\r\n\r\n'
        + blob.replace(b"\n", b"\r\n")
        + b"--=_bench--\r\n"
    )


# ---- the segur-sim server (child process) ---------------------------------------------
def serve(data_dir: str, count: int) -> None:
    """Child process: load the mailbox, start both listeners, print ports, run."""
    from simulators.core.store.mail import MailboxType, NewSubmission
    from simulators.mss.imap import ImapServer
    from simulators.mss.mime import analyse_message
    from simulators.mss.services import MssServices

    async def main() -> None:
        services = MssServices.open(data_dir, port_base=0)
        store = services.store
        box = store.create_mailbox("labo@mssante.localhost", MailboxType.APP, entity="LABO")
        creds = services.pki.client_credentials(box.address, box.entity)
        rng = random.Random(42)
        started = time.perf_counter()
        jobs = []
        for i in range(count):
            raw = make_message(i, rng)
            sub = NewSubmission(
                None, None, "x@example.org", [box.address], raw, analyse_message(raw)
            )
            jobs.append(store.accept_submission(sub))
        await asyncio.gather(*jobs)
        load_ms = (time.perf_counter() - started) * 1000
        ctx = services.pki.server_ssl_context()
        server = ImapServer(services)
        port = await server.start(
            "127.0.0.1", 0, implicit_tls=False, ssl_context=ctx, endpoint_name="imap_starttls"
        )
        print(
            json.dumps(
                {
                    "port": port,
                    "user": box.address,
                    "password": "x",
                    "cert": str(creds.chain_path),
                    "key": str(creds.key_path),
                    "ca": str(services.pki.ca_bundle_path),
                    "load_ms": load_ms,
                }
            ),
            flush=True,
        )
        await asyncio.Event().wait()

    asyncio.run(main())


def start_segur(tmp: Path, count: int) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(tmp / "data"), "--messages", str(count)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise SystemExit("the segur-sim server did not start")
    return proc, json.loads(line)


# ---- Dovecot (optional, nothing installed) --------------------------------------------
DOVECOT = "/usr/sbin/dovecot"


def _dovecot_account() -> tuple[int, int, str, str]:
    """Who runs Dovecot: the current user, or (as root) the unprivileged ``dovecot`` user."""
    import grp
    import pwd

    if os.getuid() != 0:
        entry = pwd.getpwuid(os.getuid())
    else:
        try:
            entry = pwd.getpwnam("dovecot")  # created by the Debian package
        except KeyError:
            entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid, entry.pw_name, grp.getgrgid(entry.pw_gid).gr_name


def start_dovecot(
    tmp: Path, count: int, pki_info: dict[str, Any]
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Dovecot 2.3, unprivileged, from its own config file (``dovecot -F -c FILE``).

    A passwd-file user ``labo`` (password ``x``) with a maildir holding the same
    messages as the segur-sim mailbox (same generator, same seed); STARTTLS with the
    segur-sim server certificate; ``mail_max_userip_connections`` above 20.
    """
    import socket

    uid, gid, user, group = _dovecot_account()
    base = tmp / "dovecot"
    home = base / "mail" / "labo"
    maildir = home / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("run", "state"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    rng = random.Random(42)
    for i in range(count):
        name = f"{1700000000 + i}.M{i}P1.bench,S={0}:2,"
        raw = make_message(i, rng)
        (maildir / "cur" / name.replace("S=0", f"S={len(raw)}")).write_bytes(raw)
    # the key must be readable by the unprivileged user: copy it into the tree
    shutil.copy(pki_info["server_cert"], base / "cert.pem")
    shutil.copy(pki_info["server_key"], base / "key.pem")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (base / "passwd").write_text(f"labo:{{PLAIN}}x:{uid}:{gid}::{home}::\n")
    (base / "dovecot.conf").write_text(f"""
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
default_login_user = {user}
default_internal_user = {user}
default_internal_group = {group}
first_valid_uid = {min(uid, 500)}
first_valid_gid = {min(gid, 500)}
ssl = required
ssl_cert = <{base}/cert.pem
ssl_key = <{base}/key.pem
disable_plaintext_auth = yes
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
mail_max_userip_connections = 100
passdb {{
  driver = passwd-file
  args = {base}/passwd
}}
userdb {{
  driver = passwd-file
  args = {base}/passwd
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""")
    if os.getuid() == 0:
        tmp.chmod(0o711)  # TemporaryDirectory is private to root: let the user through
        for path in [base, *base.rglob("*")]:
            os.chown(path, uid, gid)
    proc = subprocess.Popen(
        [DOVECOT, "-F", "-c", str(base / "dovecot.conf")],
        user=uid if os.getuid() == 0 else None,
        group=gid if os.getuid() == 0 else None,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise SystemExit(f"dovecot exited with {proc.returncode}: {err}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("dovecot did not start listening") from None
            time.sleep(0.1)
    return proc, {"port": port, "user": "labo", "password": "x", "ca": pki_info["ca"]}


# ---- the client script -------------------------------------------------------------------
def client_context(info: dict[str, Any]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=info["ca"])
    ctx.check_hostname = False  # the bench connects to 127.0.0.1
    if info.get("cert"):
        ctx.load_cert_chain(info["cert"], info["key"])
    return ctx


def scripted_session(info: dict[str, Any]) -> dict[str, float]:
    ctx = client_context(info)
    steps: dict[str, float] = {}

    def timed(name: str, action: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = action()
        steps[name] = (time.perf_counter() - started) * 1000
        return result

    client: imaplib.IMAP4 = timed("connect + STARTTLS", lambda: _connect(info, ctx))
    timed("LOGIN", lambda: _ok(client.login(info["user"], info["password"])))
    timed("SELECT", lambda: _ok(client.select("INBOX")))
    timed("SEARCH ALL", lambda: _ok(client.search(None, "ALL")))
    timed("FETCH 1:* (FLAGS ENVELOPE)", lambda: _ok(client.fetch("1:*", "(FLAGS ENVELOPE)")))
    timed("FETCH 1:* BODY.PEEK[]", lambda: _ok(client.fetch("1:*", "(BODY.PEEK[])")))
    timed("STORE 1:* +FLAGS (\\Seen)", lambda: _ok(client.store("1:*", "+FLAGS", "(\\Seen)")))
    timed("UID SEARCH SEEN", lambda: _ok(client.uid("SEARCH", "SEEN")))
    timed("200 x NOOP", lambda: [_ok(client.noop()) for _ in range(200)])
    timed("LOGOUT", client.logout)
    steps["total"] = sum(steps.values())
    # put the mailbox back as it was for the next run
    reset = _connect(info, ctx)
    reset.login(info["user"], info["password"])
    reset.select("INBOX")
    reset.store("1:*", "-FLAGS.SILENT", "(\\Seen)")
    reset.logout()
    return steps


def _connect(info: dict[str, Any], ctx: ssl.SSLContext) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", info["port"], timeout=60)
    client.starttls(ctx)
    return client


def _ok(result: Any) -> Any:
    if result[0] != "OK":
        raise RuntimeError(result)
    return result


def concurrent_sessions(info: dict[str, Any], sessions: int = 20) -> float:
    ctx = client_context(info)
    errors: list[BaseException] = []
    barrier = threading.Barrier(sessions)

    def one() -> None:
        try:
            barrier.wait()
            client = _connect(info, ctx)
            _ok(client.login(info["user"], info["password"]))
            _ok(client.select("INBOX"))
            _ok(client.fetch("1:*", "(FLAGS ENVELOPE)"))
            _ok(client.search(None, "UNSEEN"))
            client.logout()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(sessions)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} sessions failed: {errors[0]!r}")
    return elapsed


def concurrent_sessions_raw(info: dict[str, Any], sessions: int = 20) -> float:
    """The same 20 sessions with a raw-socket client that does not parse responses.

    imaplib parses every FETCH line in Python under one GIL, so with 20 threads the
    client, not the server, sets the pace; this variant only scans for the tag.
    """
    import socket

    ctx = client_context(info)
    errors: list[BaseException] = []
    barrier = threading.Barrier(sessions)

    def until(sock: Any, tag: bytes, buffer: bytearray) -> None:
        while True:
            index = buffer.find(b"\r\n" + tag + b" ")
            start = 0 if buffer.startswith(tag + b" ") else (index + 2 if index >= 0 else -1)
            if start >= 0:
                end = buffer.find(b"\r\n", start)
                if end >= 0:
                    if not buffer[start + len(tag) + 1 :].startswith(b"OK"):
                        raise RuntimeError(bytes(buffer[start:end]))
                    del buffer[: end + 2]
                    return
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed")
            buffer += chunk

    def one() -> None:
        try:
            barrier.wait()
            buffer = bytearray()
            sock = socket.create_connection(("127.0.0.1", info["port"]), timeout=60)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while b"\r\n" not in buffer:
                buffer += sock.recv(4096)
            buffer.clear()
            sock.sendall(b"a STARTTLS\r\n")
            until(sock, b"a", buffer)
            tls = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
            commands = [
                f'b LOGIN "{info["user"]}" "{info["password"]}"',
                "c SELECT INBOX",
                "d FETCH 1:* (FLAGS ENVELOPE)",
                "e SEARCH UNSEEN",
                "f LOGOUT",
            ]
            for command in commands:
                tls.sendall(command.encode() + b"\r\n")
                until(tls, command[:1].encode(), buffer)
            tls.close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(sessions)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} sessions failed: {errors[0]!r}")
    return elapsed


def report(label: str, info: dict[str, Any], runs: int) -> dict[str, float]:
    scripted_session(info)  # warm-up, not timed (Dovecot builds its index here)
    results = [scripted_session(info) for _ in range(runs)]
    medians = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print(f"\n== {label}: scripted session, median of {runs} runs (after one warm-up) ==")
    for name, value in medians.items():
        base = BASELINE_MS.get(name)
        extra = f"   (baseline Dovecot {base:.1f} ms, x{value / base:.2f})" if base else ""
        print(f"  {name:32s} {value:8.1f} ms{extra}")
    conc = statistics.median(concurrent_sessions(info) for _ in range(runs))
    print(
        f"  {'20 concurrent sessions':32s} {conc * 1000:8.1f} ms   "
        f"(baseline Dovecot 420 ms, x{conc / 0.42:.2f}; median of {runs})"
    )
    medians["concurrent"] = conc * 1000
    raw = statistics.median(concurrent_sessions_raw(info) for _ in range(runs))
    print(f"  {'20 concurrent, raw-socket client':32s} {raw * 1000:8.1f} ms   (median of {runs})")
    medians["concurrent, raw client"] = raw * 1000
    return medians


def side_by_side(ours: dict[str, float], theirs: dict[str, float]) -> None:
    print("\n== side by side, same machine, same 1,000 messages, same client ==")
    print(f"  {'step':34s} {'segur-sim':>10s} {'Dovecot':>10s} {'ratio':>7s}")
    for name in ours:
        print(
            f"  {name:34s} {ours[name]:8.1f}ms {theirs[name]:8.1f}ms "
            f"{ours[name] / max(theirs[name], 1e-9):6.2f}x"
        )
    total = ours["total"] / theirs["total"]
    conc = ours["concurrent"] / theirs["concurrent"]
    raw = ours["concurrent, raw client"] / theirs["concurrent, raw client"]
    verdict = "met" if total <= 3 else "NOT met"
    print(f"  scripted session: x{total:.2f} (target: within 3x, {verdict})")
    print(f"  20 concurrent: x{conc:.2f} (target: within 4x, {'met' if conc <= 4 else 'NOT met'})")
    print(f"  20 concurrent, raw client: x{raw:.2f} ({'met' if raw <= 4 else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dovecot", action="store_true", help=f"also bench {DOVECOT}")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.messages)
        return

    from simulators.mss.mime import analyse_message

    rng = random.Random(7)
    sample = [make_message(i, rng) for i in range(500)]
    started = time.perf_counter()
    for raw in sample:
        analyse_message(raw)
    per_msg = (time.perf_counter() - started) / len(sample) * 1e6
    average = sum(map(len, sample)) / len(sample)
    print(
        f"analyse_message: {per_msg:.0f} us per message (average {average:.0f} bytes, "
        f"1 in 5 multipart)"
    )

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        proc, info = start_segur(tmp, args.messages)
        try:
            print(f"loaded {args.messages} messages in {info['load_ms']:.0f} ms")
            ours = report("segur-sim", info, args.runs)
        finally:
            proc.terminate()
            proc.wait(10)
        if args.dovecot:
            if not Path(DOVECOT).exists():
                print(f"\n{DOVECOT} not found: skipping the Dovecot side (nothing is installed)")
                return
            pki = tmp / "data" / "pki"
            server = pki / "server" / "valid"
            dovecot_pki = {
                "server_cert": server / "chain.pem",
                "server_key": server / "key.pem",
                "ca": str(pki / "ca-bundle.pem"),
            }
            version = subprocess.run(
                [DOVECOT, "--version"], capture_output=True, text=True, check=False
            ).stdout.strip()
            dproc, dinfo = start_dovecot(tmp, args.messages, dovecot_pki)
            try:
                theirs = report(f"Dovecot {version}", dinfo, args.runs)
            finally:
                dproc.terminate()
                dproc.wait(10)
            side_by_side(ours, theirs)


if __name__ == "__main__":
    main()
