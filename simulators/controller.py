"""Run a simulator in a background thread with its own event loop.

Like aiosmtpd's ``Controller``: tests (and the pytest plugin) drive it with
ordinary blocking clients (``smtplib``, ``imaplib``, ``curl``) from the main thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from simulators.core import eventloop
from simulators.mss.services import MssServices
from simulators.serve import Simulator

T = TypeVar("T")


class SimulatorController:
    def __init__(self, data_dir: Path | str, **overrides: Any) -> None:
        overrides.setdefault("port_base", 0)
        self.data_dir = Path(data_dir)
        self.overrides = overrides
        self.loop = eventloop.new_event_loop()
        self._thread: threading.Thread | None = None
        self.simulator: Simulator | None = None
        self.services: MssServices | None = None

    def start(self, timeout: float = 30) -> SimulatorController:
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.services = MssServices.open(self.data_dir, **self.overrides)
                self.simulator = Simulator(self.services)
                self.loop.run_until_complete(self.simulator.start())
            except BaseException as exc:
                ready.set_exception(exc)
                return
            ready.set_result(None)
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name="segur-sim", daemon=True)
        self._thread.start()
        ready.result(timeout)
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine in the simulator's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def endpoints(self) -> dict[str, Any]:
        assert self.simulator is not None
        return self.simulator.endpoints

    def port(self, name: str) -> int:
        return int(self.endpoints["endpoints"][name]["port"])

    def stop(self) -> None:
        if self.simulator is not None and self.loop.is_running():
            self.call(self.simulator.stop())
            # As asyncio.run does: session tasks still pending are cancelled and
            # awaited, or they are garbage-collected later as "destroyed but pending".
            self.call(_cancel_remaining_tasks())
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        if self.services is not None:
            self.services.close()
        if not self.loop.is_closed():
            self.loop.close()

    def __enter__(self) -> SimulatorController:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _cancel_remaining_tasks(timeout: float = 5.0) -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    await asyncio.get_running_loop().shutdown_asyncgens()
