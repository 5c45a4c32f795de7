"""systemd's notification protocol (sd_notify(3)): one datagram per message to $NOTIFY_SOCKET.

Used for READY=1 once every camera is started, RELOADING=1/READY=1 around a config reload, STOPPING=1,
STATUS= lines, and WATCHDOG=1 pings while the node is alive (WatchdogSec= in the unit).
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)
_WAKES_PER_PING = 4  # wake-ups per ping interval: a ping is then at most 1/4 interval late, 5/8 of WatchdogSec=


class Notifier:
    """Sends to $NOTIFY_SOCKET; does nothing when the node was not started by systemd."""

    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET") or ""
        # "@name" is Linux's abstract namespace: the address starts with a NUL byte instead.
        self.address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog_s = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` fields as one message; False when it could not be sent (never raises)."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode(), self.address)
            return True
        except OSError as exc:
            log.warning("sd_notify to %r failed: %s", self.address.replace("\0", "@"), exc)
            return False

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> bool:
        # systemd >= 253 wants the time the reload began, to tell this reload from an older one.
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def ping(self) -> bool:
        return self.send("WATCHDOG=1")

    def wake_s(self, longest: float) -> float:
        """How long a loop that pings may sleep: `longest`, or less when the watchdog wants pings more often,
        so that a ping due is sent at most a quarter interval late (well inside WatchdogSec=)."""
        return longest if self.watchdog_s is None else min(longest, self.watchdog_s / _WAKES_PER_PING)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval(env) -> float | None:
    """Seconds between WATCHDOG=1 pings asked by the unit (half of WatchdogSec=), or None: no watchdog."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None  # the watchdog is some other process's (a child that inherited the environment)
    return usec / 2e6  # sd_watchdog_enabled(3): ping at half the interval
