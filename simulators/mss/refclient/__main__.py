"""``python -m simulators.mss.refclient [--fault NAME] [--list-faults]``.

Exit codes: 0 done, 1 action failed, 2 server refused (TLS or certificate: aborted
before any AUTH), 3 authentication refused after the back-off, 4 configuration
error, 5 PSC unusable. The runner keeps them as evidence only.
"""

from __future__ import annotations

import argparse
import logging
import sys

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
from simulators.mss.refclient.faults import UnknownFault, describe
from simulators.mss.refclient.tls import ServerRefused
from simulators.mss.refclient.tokens import PscError, RefreshRefused

log = logging.getLogger("refclient")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.mss.refclient",
        description="MSSanté reference client (SIMULATION): performs $SEGUR_SIM_ACTION.",
    )
    parser.add_argument("--fault", help="break one rule (see --list-faults)")
    parser.add_argument("--list-faults", action="store_true", help="list the faulty variants")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    args = parser.parse_args(argv)
    if args.list_faults:
        print(describe())
        return 0
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="refclient: %(message)s",
        stream=sys.stderr,
    )
    try:
        cfg = from_env(fault=args.fault)
        client = RefClient(cfg)
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
    except KeyboardInterrupt:
        return 130
    log.info("done (exit %d)", code)
    return code


if __name__ == "__main__":
    sys.exit(main())
