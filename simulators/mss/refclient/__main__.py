"""``python -m simulators.mss.refclient [--fault NAME] [--list-faults] [--serve]``.

Exit codes: 0 done, 1 action failed, 2 server refused (TLS or certificate: aborted
before any AUTH), 3 authentication refused after the back-off, 4 configuration
error, 5 PSC unusable. The runner keeps them as evidence only.

``--serve`` is the persistent driver mode (docs/mss-conformance.md): one process for
the whole run, the steps read from standard input, one done line per step carrying
the exit code above.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Mapping

log = logging.getLogger("refclient")


def perform(
    env: Mapping[str, str] | None = None,
    fault: str | None = None,
    stop: threading.Event | None = None,
) -> int:
    """One action, as the driver contract in ``env`` (default: os.environ) describes it."""
    from simulators.mss.refclient.actions import run
    from simulators.mss.refclient.client import (
        EXIT_AUTH_REFUSED,
        EXIT_CONFIG,
        EXIT_PSC,
        EXIT_SERVER_REFUSED,
        GiveUp,
        RefClient,
    )
    from simulators.mss.refclient.config import ConfigError, from_env
    from simulators.mss.refclient.faults import UnknownFault
    from simulators.mss.refclient.tls import ServerRefused
    from simulators.mss.refclient.tokens import PscError, RefreshRefused

    client: RefClient | None = None
    try:
        cfg = from_env(env, fault=fault)
        client = RefClient(cfg, stop)
        log.info(
            "%s for %s (%s)%s",
            cfg.action,
            cfg.bal,
            cfg.bal_type,
            f", fault {cfg.fault}" if cfg.fault else "",
        )
        if not cfg.nil:
            log.warning("SEGUR_SIM_NIL is empty: mails will carry no X-MSS-NIL")
        code = run(client)
    except (ConfigError, UnknownFault) as exc:
        log.error("configuration: %s", exc)
        return EXIT_CONFIG
    except ServerRefused as exc:
        log.error("aborted before any authentication: %s", exc)
        return EXIT_SERVER_REFUSED
    except GiveUp as exc:
        log.error("%s", exc)
        return exc.code
    except RefreshRefused as exc:
        log.error("PSC session ended: %s", exc)
        return EXIT_AUTH_REFUSED
    except PscError as exc:
        log.error("PSC: %s", exc)
        return EXIT_PSC
    finally:
        if client is not None:
            client.close()
    log.info("done (exit %d)", code)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.mss.refclient",
        description="MSSanté reference client (SIMULATION): performs $SEGUR_SIM_ACTION.",
    )
    parser.add_argument("--fault", help="break one rule (see --list-faults)")
    parser.add_argument("--list-faults", action="store_true", help="list the faulty variants")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="persistent driver mode: read the steps from stdin (docs/mss-conformance.md)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    args = parser.parse_args(argv)
    if args.list_faults:
        from simulators.mss.refclient.faults import describe

        print(describe())
        return 0
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format=(
            "refclient %(created).3f: %(message)s"
            if os.environ.get("SEGUR_SIM_REFCLIENT_LOG_TIMES")
            else "refclient: %(message)s"
        ),
        stream=sys.stderr,
    )
    try:
        if args.serve:
            from simulators.mss.refclient.serve import serve

            return serve(perform, args.fault)
        return perform(fault=args.fault)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    exit_code = main()
    # Leave without the interpreter's teardown (tens of milliseconds, paid at every step
    # of a run): everything to keep is written and flushed, the client closed its
    # sessions and removed its temporary files in perform().
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
