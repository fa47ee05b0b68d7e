"""`edge-gemma serve`: load the model on the worker thread, serve the app with uvicorn, drain on exit."""

from __future__ import annotations

from edge.errors import UsageError
from edge.launch import ProjectorUse, RunPlan, load_model
from edge.model.engine import LoadedModel
from edge.serve.app import ServeConfig, create_app
from edge.serve.metrics import Metrics
from edge.serve.worker import ModelWorker

DEFAULT_PORT = 8080


def load_served(plan: RunPlan) -> LoadedModel:
    """The model, with its projector when there is one (audio and picture requests are refused without)."""
    return load_model(plan, ProjectorUse.OPTIONAL)


def serve(
    plan: RunPlan,
    *,
    host: str,
    port: int,
    config: ServeConfig,
    max_queue: int = 8,
) -> None:
    """Run until SIGINT/SIGTERM: uvicorn stops taking requests, lets running ones finish, then the
    worker frees the model."""
    import uvicorn

    check_port_free(host, port)
    metrics = Metrics()
    worker = ModelWorker(lambda: load_served(plan), max_queue=max_queue, on_job_end=metrics.job_finished)
    app = create_app(worker, config, metrics)
    worker.start()
    server = _clean_exit_server(
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


def _clean_exit_server(config):
    """A uvicorn server whose SIGTERM ends serve() normally. uvicorn raises a SIGTERM again once its
    graceful shutdown is done, which would end the process by signal before the model worker has
    stopped and freed the model; a stop that was asked for (systemctl stop) is a clean exit here."""
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM and sig in self._captured_signals:
                self._captured_signals.remove(sig)

    return Server(config)


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
