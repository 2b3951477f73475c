"""`alignd worker`: the dispatcher loop against ALIGND_DATABASE_URL and ALIGND_RAY_ADDRESS."""

from __future__ import annotations

import signal
import threading

import typer


def worker_command(
    ray_address: str = typer.Option(None, help="Ray cluster address (default: ALIGND_RAY_ADDRESS or a local Ray)."),
    num_cpus: int = typer.Option(None, help="CPUs of a local Ray (default: all)."),
    lease_seconds: float = typer.Option(None, help="Lease length (default: ALIGND_LEASE_SECONDS)."),
    worker_id: str = typer.Option(None, help="Name of this dispatcher in job events (default: host-pid-random)."),
    warm_worker: bool = typer.Option(
        True,
        "--warm-worker/--no-warm-worker",
        help="Run single-worker CPU stages on a warm Ray actor instead of a new "
        "Ray Train worker group per job (saves the start-up).",
    ),
) -> None:
    """Claim jobs from the queue and run each stage on Ray until interrupted."""
    from services.settings import configure_logging, get_settings
    from services.store.engine import make_engine, make_session_factory
    from services.store.migrate import upgrade_database
    from services.workers.dispatcher import Dispatcher
    from services.workers.ray_cluster import connect_ray

    settings = get_settings()
    configure_logging(settings.log_level)
    upgrade_database(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    connect_ray(ray_address or settings.ray_address, num_cpus=num_cpus)
    dispatcher = Dispatcher(
        make_session_factory(engine),
        settings.resolved_storage_uri,
        lease_seconds=lease_seconds or settings.lease_seconds,
        worker_id=worker_id,
        engine=engine,
        warm_worker=warm_worker,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    typer.echo(f"alignd worker {dispatcher.worker_id} running (Ctrl-C stops after the current job)")
    try:
        dispatcher.run(stop)
    except KeyboardInterrupt:
        typer.echo("stopping")
