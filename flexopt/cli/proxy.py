"""`flexopt storage-proxy`: Optuna's gRPC storage proxy in front of one database."""

from __future__ import annotations

import click


@click.command("storage-proxy")
@click.option("--storage", required=True, metavar="URL",
              help="The database every worker shares, e.g. postgresql://user:pass@host/db.")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=13000, show_default=True, type=click.IntRange(1, 65535))
def storage_proxy(storage, host, port):
    """Serve STORAGE to workers over gRPC, so hundreds share one database's connections.

    Workers then use `--storage grpc://HOST:PORT`. Runs until Ctrl-C.

    \b
    Example:
      flexopt storage-proxy --storage postgresql://flexopt:secret@db/flexopt --port 13000
      flexopt search study.toml --storage grpc://proxy-host:13000     # on each worker
    """
    from flexopt.report.dashboard import check_listen
    from flexopt.search.storage import make_storage, mask_url, serve_proxy

    db = make_storage(storage, heartbeat=None)  # Optuna's proxy carries no heartbeats
    check_listen(host, port)  # a taken port is one line, not a traceback after the banner
    click.echo(f"storage proxy for {mask_url(storage)} on grpc://{host}:{port} (Ctrl-C to stop)")
    serve_proxy(db, host, port)  # returns on Ctrl-C or SIGTERM
    click.echo("storage proxy stopped")
