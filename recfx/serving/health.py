"""Small helpers for starting servers from scripts and tests: free loopback ports, waiting for readiness."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free right now (the OS picks them)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until_ready(url: str, *, timeout_s: float, alive: Callable[[], str | None] = lambda: None,
                     what: str = "the server") -> None:
    """Poll ``url`` (a Triton ``.../ready`` endpoint) until it answers 200.

    ``alive()`` returns None while the server process runs, else why it stopped (then this raises at once).

    Raises:
        RuntimeError: the process stopped (with ``alive()``'s reason), or ``url`` did not answer 200 within
            ``timeout_s`` (look at the server's log; a slow first compile may need a longer timeout).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        stopped = alive()
        if stopped is not None:
            raise RuntimeError(f"{what} stopped before it was ready: {stopped}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready at {url} within {timeout_s:.0f} s; see its log (a slow start "
                               "may need a longer timeout)")
        time.sleep(0.5)
