"""Which asyncio event loop the servers run on.

uvloop (libuv, with TLS in C) when it is installed, else the standard loop. Measured
with ``bench/bench_smtp.py``: the SMTP server needs about 10 % less CPU per message on
uvloop. ``SEGUR_SIM_LOOP=asyncio`` forces the standard loop (to compare, or to rule the
loop out when chasing a bug); ``SEGUR_SIM_LOOP=uvloop`` makes its absence an error.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

ENV = "SEGUR_SIM_LOOP"
CHOICES = ("auto", "asyncio", "uvloop")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    choice = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"{ENV}={choice!r}: expected one of {', '.join(CHOICES)}")
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ValueError(f"{ENV}=uvloop but uvloop is not installed") from None
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def new_event_loop() -> asyncio.AbstractEventLoop:
    return loop_factory()()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: for endpoints.json and bug reports."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
