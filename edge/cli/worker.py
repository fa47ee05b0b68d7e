"""`edge-gemma worker`: serve this board's memory and CPU to another board's model over llama.cpp RPC."""

from __future__ import annotations

from pathlib import Path

import click

from edge.cli import options


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: the LAN).")
@click.option("--port", type=click.IntRange(1, 65535), default=50052, show_default=True)
@click.option("-t", "--threads", type=click.IntRange(1, 512), help="Threads for the layers it runs (default: all).")
@click.option(
    "--cache",
    type=click.Path(path_type=Path, file_okay=False),
    help="Keep the tensors clients send here, so a restart reloads them from disk, not the network.",
)
@click.option("--memory", "memory_gb", type=click.FloatRange(0.1), help="GB offered (default: what is free).")
@click.option(
    "--allow",
    metavar="CIDR[,...]",
    help="Networks allowed to connect (required beyond loopback); others are closed before a byte is read.",
)
@click.option("--no-announce", is_flag=True, help="Do not announce the worker on the LAN (zeroconf).")
@options.llama_log
def worker(host, port, threads, cache, memory_gb, allow, no_announce, llama_log):
    """Lend this board's memory to a model on another board (llama.cpp RPC).

    The other board runs with --workers HOST:PORT (or --workers auto) and puts the layers it cannot hold
    here. The traffic is neither authenticated nor encrypted: keep it on a trusted LAN.

    \b
    Examples:
      edge-gemma worker --host 0.0.0.0 --allow 192.168.1.0/24
      edge-gemma worker --host 0.0.0.0 --allow 192.168.1.10 --cache ~/.cache/edge-gemma/rpc --memory 3
      edge-gemma run -m e4b.gguf --workers 192.168.1.20:50052 "Hello"   (on the other board)
    """
    from edge.workers.worker import WorkerOptions, run_worker

    run_worker(
        WorkerOptions(
            host=host,
            port=port,
            threads=threads or 0,
            cache=cache.expanduser() if cache else None,
            memory_bytes=int(memory_gb * 1e9) if memory_gb else 0,
            allow=allow,
            announce=not no_announce,
            llama_log=llama_log,
        ),
        log=lambda line: click.echo(f"worker: {line}", err=True),
    )
