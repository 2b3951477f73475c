"""`alignd up`: everything in one process on this machine (API, dispatcher, local Ray, SQLite)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path

import typer

FORCED_EXIT_CODE = 130


def up_command(
    host: str = typer.Option("127.0.0.1", help="Address the API binds."),
    port: int = typer.Option(8000, help="Port of the API."),
) -> None:
    """Start alignd embedded under ALIGND_HOME; Ctrl-C stops it (running jobs resume on the next start)."""
    from services.cli.library_logs import quiet_ray_logs
    from services.settings import configure_logging, get_settings
    from services.workers.embedded import EmbeddedAlignd

    settings = get_settings()
    configure_logging(settings.log_level)
    # Before Ray starts (tens of seconds): a taken port is then a one-line answer, not a traceback after the wait.
    problem = _cannot_bind(host, port)
    if problem:
        typer.echo(f"error: cannot listen on {host}:{port} ({problem}); choose another with --port", err=True)
        raise typer.Exit(1)
    refuse_if_home_in_use(settings.resolved_home)
    quiet_ray_logs()
    instance = EmbeddedAlignd(settings.resolved_home, host=host, port=port, lease_seconds=settings.lease_seconds)
    stop_requested = threading.Event()
    _catch_stop_signals(stop_requested)  # also during start: a Ctrl-C there stops cleanly once started
    typer.echo(f"starting alignd under {settings.resolved_home} ...")
    try:
        instance.start()
        # ray.init installs its own SIGTERM handler (a bare sys.exit); ours must win so SIGTERM stops cleanly too.
        _catch_stop_signals(stop_requested)
        url = browser_url(host, port)
        typer.echo(f"alignd is up: {url}  (dashboard {url}/, API docs {url}/docs)")
        if url != instance.url:
            typer.echo(f"listening on all interfaces ({host}:{port}); from other machines use this host's address")
        typer.echo(f"API key: {instance.api_key}")
        typer.echo("Ctrl-C stops it.")
        # A timed wait so the main thread regularly returns to the interpreter, where signal handlers run.
        while not stop_requested.wait(0.5):
            pass
        typer.echo("stopping alignd ...")
    finally:
        clean = instance.stop()
        typer.echo("stopped" if clean else "stopped (Ray did not shut down in time; its processes were killed)")
    # Skip interpreter teardown: Ray's atexit hooks would call ray.shutdown again and can block just like above.
    _exit_now(0)


def browser_url(host: str, port: int) -> str:
    """The address to open: a wildcard bind (0.0.0.0, ::) is reached on this machine through loopback."""
    if host in ("0.0.0.0", "::", ""):
        return f"http://127.0.0.1:{port}"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def refuse_if_home_in_use(home: Path) -> None:
    """Exit with one line when another embedded alignd runs under `home` (it would lose its running jobs)."""
    from services.workers.home_lock import HomeInUse, HomeLock

    lock = HomeLock(home)
    try:
        lock.acquire(url="")
    except HomeInUse as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    lock.release()  # the instance takes it for good in start()


def _cannot_bind(host: str, port: int) -> str | None:
    """Why the API could not listen on host:port (e.g. the port is taken), or None when it can."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
            probe.bind((host, port))
    except OSError as error:
        return error.strerror or str(error)
    return None


def _catch_stop_signals(stop_requested: threading.Event) -> None:
    """SIGINT / SIGTERM ask for a clean stop (even where the parent left SIGINT ignored); a second one forces exit."""

    from services.workers.embedded import kill_child_processes

    def on_signal(signum: int, _frame: object) -> None:
        if stop_requested.is_set():
            typer.echo(f"{signal.Signals(signum).name} again: exiting now", err=True)
            kill_child_processes()
            _exit_now(FORCED_EXIT_CODE)
        stop_requested.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def _exit_now(code: int) -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
