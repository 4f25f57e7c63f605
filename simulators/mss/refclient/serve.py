"""``--serve``: the persistent driver mode of docs/mss-conformance.md.

The runner writes one JSON line per step on our standard input,
``{"type": "step", "env": {...}}`` with the variables of the per-step contract, and
``{"type": "stop"}`` to end the current step early (keep-session-open). We perform
each step exactly as a fresh process would (a new RefClient: new PSC login, new CRL
download, new TLS contexts), then print ``@@SEGUR-SIM-STEP-DONE@@ <exit code>``.
Only the interpreter and the imports are reused. End of input ends the process.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger("refclient")

# Same text as simulators.mss.conformance.driver.STEP_DONE (the client does not import
# the runner).
STEP_DONE = "@@SEGUR-SIM-STEP-DONE@@"

_Step = tuple[dict[str, str], threading.Event]
Perform = Callable[[Mapping[str, str], str | None, threading.Event], int]


class _Input:
    """Reads stdin in a thread: steps go to the queue, a stop sets the current event."""

    def __init__(self) -> None:
        self.steps: queue.Queue[_Step | None] = queue.Queue()
        self.current: threading.Event | None = None
        self._lock = threading.Lock()

    def read(self) -> None:
        try:
            for line in sys.stdin:
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    log.warning("--serve: not a JSON line, ignored: %.80s", line.strip())
                    continue
                kind = message.get("type") if isinstance(message, dict) else None
                if kind == "step" and isinstance(message.get("env"), dict):
                    env = {str(k): str(v) for k, v in message["env"].items()}
                    stop = threading.Event()
                    with self._lock:
                        self.current = stop
                    self.steps.put((env, stop))
                elif kind == "stop":
                    with self._lock:
                        if self.current is not None:
                            self.current.set()
                else:
                    log.warning("--serve: unknown message, ignored: %.80s", line.strip())
        finally:
            with self._lock:
                if self.current is not None:
                    self.current.set()  # end of the run: finish the step in progress
            self.steps.put(None)


def serve(perform: Perform, fault: str | None = None) -> int:
    """Perform the steps read from stdin until its end; ``perform`` does one step."""
    source = _Input()
    threading.Thread(target=source.read, name="refclient-stdin", daemon=True).start()
    while (item := source.steps.get()) is not None:
        env, stop = item
        try:
            code = perform({**os.environ, **env}, fault, stop)
        except Exception as exc:  # one broken step must not end the run's driver
            log.exception("step crashed: %s", exc)
            code = 1
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        sys.stdout.write(f"{STEP_DONE} {code}\n")
        sys.stdout.flush()
    return 0
