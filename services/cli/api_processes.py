"""Several API processes on one port, each with its own listening socket (SO_REUSEPORT).

uvicorn's own `--workers` share one listening socket, and whichever worker wakes first accepts the whole
backlog: 50 clients connecting at once were split 47 / 3, 29 / 21 and 50 / 0 between two workers
(bench/queue/api_latency, `connections_per_process`), so one process queued nearly every client while the
other idled. With a socket per process the kernel hashes each new connection to one of them.
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import sys
from types import FrameType

# uvicorn's default listen backlog.
BACKLOG = 2048


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux")


def port_is_free(host: str, port: int) -> bool:
    """Whether a plain socket (no SO_REUSEPORT) can bind: another server on the port, an alignd one with its
    shared port included, makes it fail, where the processes' own sockets would silently share the port."""
    family, kind, protocol, _, address = _address(host, port)
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed connection's TIME_WAIT is no server
        try:
            probe.bind(address)
        except OSError:
            return False
    return True


def serve_processes(host: str, port: int, processes: int, log_level: str) -> int:
    """Run `processes` API processes until SIGINT / SIGTERM or until one of them exits; returns the exit code.

    A process that dies ends the others too, so the service stops as a whole and its supervisor (systemd,
    Kubernetes) restarts it, rather than running on with a share of its connections refused."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked event loop or pool
    children = [context.Process(target=_serve_one, args=(host, port, log_level), name=f"alignd-api-{index}")
                for index in range(processes)]
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive():
                child.terminate()  # SIGTERM: uvicorn finishes the requests in flight, then exits

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for child in children:
            child.start()
        sentinels = {child.sentinel: child for child in children}
        from multiprocessing.connection import wait

        first_exit = sentinels[wait(list(sentinels))[0]]
        if not stopping:
            stop(signal.SIGTERM, None)
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
        return 0 if stopping else (first_exit.exitcode or 1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serve_one(host: str, port: int, log_level: str) -> None:
    import uvicorn

    from services.api.main import create_app

    family, kind, protocol, _, address = _address(host, port)
    listener = socket.socket(family, kind, protocol)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(address)
    listener.listen(BACKLOG)
    server = uvicorn.Server(uvicorn.Config(create_app(migrate=False), log_level=log_level))
    server.run(sockets=[listener])


def _address(host: str, port: int) -> tuple:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
