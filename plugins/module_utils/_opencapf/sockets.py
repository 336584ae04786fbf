# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""TCP socket settings shared by the CAPF service and the phone simulator, and listening sockets
bound once for several server processes.

CAPF is a conversation of small messages, each waiting for the answer to the previous one: with
Nagle's algorithm and delayed ACKs each exchange can stall for tens of milliseconds, so every
accepted and every connected CAPF socket sets ``TCP_NODELAY``.
"""

from __future__ import annotations

import socket

from .errors import CapfError

BACKLOG = 1024


def set_nodelay(sock) -> bool:
    """Turn off Nagle's algorithm on a TCP socket; return whether it is now off.

    ``sock`` may be None or a non-TCP socket (a Unix socket in tests): then nothing is set.
    """
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    except OSError:
        return False


def has_nodelay(sock) -> bool:
    try:
        return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    except OSError:
        return False


def can_share_port() -> bool:
    """Whether each server process can have its own listening socket on the same port (SO_REUSEPORT)."""
    return hasattr(socket, "SO_REUSEPORT")


def bind_listeners(addresses, port: int, groups: int) -> list[list[socket.socket]]:
    """Listening sockets for ``groups`` server processes: one list per process, one socket per address.

    With SO_REUSEPORT every process gets its own sockets on the same port, and the kernel spreads
    new connections over them (a busy process does not take the connections an idle one could
    serve); otherwise every process shares the same sockets. Port 0 picks one free port, the same
    for every address and process. Sockets are non-blocking, ready for an event loop.
    """
    own = groups if can_share_port() else 1
    made: list[list[socket.socket]] = []
    try:
        for _group in range(own):
            sockets = []
            made.append(sockets)
            for address in addresses:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if own > 1:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind((address, port))
                except OSError as exc:
                    raise CapfError(f"cannot listen on {address} port {port}: {exc.strerror or exc}") from None
                sock.listen(BACKLOG)
                sock.setblocking(False)
                port = sock.getsockname()[1]
    except BaseException:
        for sockets in made:
            for sock in sockets:
                sock.close()
        raise
    return made if own == groups else [made[0]] * groups


__all__ = ["set_nodelay", "has_nodelay", "can_share_port", "bind_listeners", "BACKLOG"]


def prefer_cpu(sock: socket.socket, cpu: int) -> bool:
    """Ask the kernel to hand this listening socket, among those sharing its port, the connections
    whose packets the given CPU handles (``SO_INCOMING_CPU``, Linux): with one server process
    pinned to each CPU, a connection then stays on one CPU from the network stack to the session.
    False where the option does not exist."""
    option = getattr(socket, "SO_INCOMING_CPU", None)
    if option is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, cpu)
    except OSError:
        return False
    return True
