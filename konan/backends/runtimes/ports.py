"""Free TCP ports for local model servers.

Ports are taken below the kernel's ephemeral range (``ip_local_port_range``), so that an
outgoing connection never borrows a deployment's port while its replicas are restarting. A port
counts as free when a plain bind succeeds (no SO_REUSEPORT: a port some listener already holds
fails the test even when that listener shares it).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import socket
from collections.abc import Iterable
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 20000


def candidate_range() -> range:
    """Ports we hand out: [20000, start of the ephemeral range)."""
    ephemeral_start = 32768
    with contextlib.suppress(OSError, ValueError, IndexError):
        ephemeral_start = int(_RANGE_FILE.read_text().split()[0])
    if ephemeral_start - _LOWEST < 1000:  # an unusual range: fall back to the upper ports
        return range(61000, 65535)
    return range(_LOWEST, ephemeral_start)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: connections of a stopped server in TIME_WAIT do not make the port busy
        # (on Linux a listener still does).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def allocate_port(host: str, *, exclude: Iterable[int] = (), seed: str | None = None) -> int:
    """A port that is free on ``host`` now and not in ``exclude``.

    With a ``seed`` (a deployment name) the search starts at a position derived from it, so the
    same name on a fresh machine tends to get the same port; otherwise it starts at random.
    """
    ports = candidate_range()
    taken = set(exclude)
    if seed is not None:
        start = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big") % len(ports)
    else:
        start = random.randrange(len(ports))
    for offset in range(len(ports)):
        port = ports[(start + offset) % len(ports)]
        if port not in taken and port_is_free(host, port):
            return port
    raise OSError(f"no free TCP port on {host} in {ports.start}-{ports.stop - 1}")
