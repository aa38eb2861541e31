"""Clients as careless or hostile users would write them, for the front-door tests."""

import socket


def open_stalled_connections(host: str, port: int, count: int) -> list[socket.socket]:
    """Connections that start a request and never finish its headers."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((host, port), timeout=5)
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the other end closed (or reset) the connection."""
    sock.settimeout(0.01)
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except OSError:
        return True  # reset
