"""`edge-gemma serve`: load the model on the worker thread, serve the app with uvicorn, drain on exit."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from edge.errors import UsageError
from edge.launch import RunPlan, load_model
from edge.model.engine import LoadedModel
from edge.serve.app import ServeConfig, create_app
from edge.serve.metrics import Metrics
from edge.serve.worker import ModelWorker

DEFAULT_PORT = 8080


def load_served(plan: RunPlan, mmproj: Path | None, *, verbose: bool = False) -> LoadedModel:
    """The model, with its projector when there is one (audio requests are refused without)."""
    return load_model(plan, verbose=verbose, projector="optional", mmproj=mmproj)


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    plan: RunPlan,
    *,
    host: str,
    port: int,
    config: ServeConfig,
    mmproj: Path | None = None,
    max_queue: int = 8,
    verbose: bool = False,
    on_ready=None,
) -> None:
    """Run until SIGINT/SIGTERM: uvicorn stops taking requests, lets running ones finish, then the
    worker frees the model."""
    import uvicorn

    check_port_free(host, port)
    metrics = Metrics()
    worker = ModelWorker(
        lambda: load_served(plan, mmproj, verbose=verbose), max_queue=max_queue, on_job_end=metrics.job_finished
    )
    app = create_app(worker, config, metrics)
    worker.start()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=30,
            lifespan="off",
        )
    )
    try:
        server.run()
    finally:
        worker.stop()


def check_port_free(host: str, port: int) -> None:
    """Before the model loads: a port in use or a host that is not ours is one clear line."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}): another server may be "
                "using it; pick another with --port, or --host for another address"
            ) from None
