"""``amnl serve``: the fleet service (FastAPI + uvicorn; extra ``serve``)."""

from __future__ import annotations

import logging
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Annotated, Any

import typer

from amnl.cli.options import Precision, Threads, fail, inference_config, run
from amnl.extras import require
from amnl.serve.settings import ServeSettings


def _default(name: str) -> Any:
    """ServeSettings' default of a field: the options below take theirs from there."""
    f = next(f for f in fields(ServeSettings) if f.name == name)
    return f.default_factory() if f.default is MISSING else f.default


def _check_port(host: str, port: int) -> None:
    """Fail in one line, before the model is loaded, when ``host:port`` cannot be listened
    on (in use, or an address this machine does not have); uvicorn would print the URL, then
    a traceback-like error and exit 3."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            sock.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise fail(f"port {port} on {host} is in use (another amnl serve?); stop it or "
                       "pass --port") from None
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(
    model: Annotated[str | None, typer.Option(
        help="A bundled model (FD001..FD004), a run directory or an exported folder "
             "(default: FD001).")] = None,
    runtime: Annotated[str, typer.Option(
        help="onnx (ONNX Runtime; the serving process never imports torch: a run directory "
             "is exported once into the cache by a child process) or torch.")
    ] = _default("inference").runtime,
    precision: Precision = "fp32",
    threads: Threads = 0,
    db: Annotated[str, typer.Option(
        help="SQLite file, or a SQLAlchemy URL such as postgresql+psycopg://user@host/db.")
    ] = _default("db"),
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback "
                                           "needs --api-token.")] = _default("host"),
    port: Annotated[int, typer.Option(help="TCP port.")] = _default("port"),
    api_token: Annotated[str | None, typer.Option(
        envvar="AMNL_API_TOKEN", show_envvar=True,
        help="Bearer token every write (POST, DELETE) must carry.")] = None,
    max_batch: Annotated[int | None, typer.Option(
        help="Windows per forward pass at most (default: the runtime's measured batch); "
             "bounds the memory of a pass, e.g. 16 for a 128 MB box (docs/deployment.md).",
        show_default=False)] = None,
    max_wait_ms: Annotated[float, typer.Option(
        help="How long a batch waits for more readings after its first, ms.")
    ] = _default("max_wait_ms"),
    batching: Annotated[bool, typer.Option(
        help="Coalesce the predictions of concurrent readings (--no-batching: one each).")
    ] = _default("batching"),
    max_backlog: Annotated[int, typer.Option(
        help="Windows queued in memory at most; beyond, predictions are caught up from the "
             "database.")] = _default("max_backlog"),
    max_assets_in_memory: Annotated[int, typer.Option(
        help="Asset states held in memory at most (about 5.7 kB each); the least recently "
             "used others are loaded from the database when they next send a reading.")
    ] = _default("max_assets_in_memory"),
    durability: Annotated[str, typer.Option(
        help="SQLite: process (an acknowledged write survives a killed process) or power "
             "(also a power loss: an fsync per commit).")] = _default("durability"),
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body.")
                              ] = _default("max_body_bytes"),
    alert_rules: Annotated[Path | None, typer.Option(
        help="JSON list of alert rules (default: RUL lower bound < 30 for 3 cycles, critical; "
             "P(critical) > 0.5 for 3 cycles, major).", show_default=False)] = None,
    webhook: Annotated[list[str] | None, typer.Option(
        help="URL that receives every alert transition (repeatable).", show_default=False)] = None,
    webhook_secret: Annotated[str | None, typer.Option(
        envvar="AMNL_WEBHOOK_SECRET", show_envvar=True,
        help="HMAC-SHA256 key of the webhooks' X-Amnl-Signature header.")] = None,
    demo: Annotated[bool, typer.Option(
        help="Replay FD001's test engines (shipped with amnl) into the service: a live fleet "
             "with alerts, no data needed.")] = _default("demo"),
    demo_speed: Annotated[float, typer.Option(help="Cycles a second of --demo.")
                          ] = _default("demo_speed"),
    allowed_host: Annotated[list[str] | None, typer.Option(
        help="A Host header the server answers besides its bind address, localhost, 127.0.0.1 "
             "and [::1] (repeatable; * for any); others get a 400 (no DNS rebinding). A "
             "0.0.0.0 bind without it answers any Host.", show_default=False)] = None,
    header_timeout: Annotated[float, typer.Option(
        help="Seconds a client has for its request line and headers (then the connection is "
             "closed: no slowloris).")] = _default("header_timeout_s"),
    body_timeout: Annotated[float, typer.Option(
        help="Seconds a client has for its request body (a 408 after).")
    ] = _default("body_timeout_s"),
    limit_concurrency: Annotated[int, typer.Option(
        help="Connections and requests at most, beyond a 503 at once; keep it under ulimit -n "
             "(docs/serving.md: a reverse proxy bounds connections).")
    ] = _default("limit_concurrency"),
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve a fleet: readings in over HTTP, RUL and health per asset, kept in a database.

    The dashboard is at http://HOST:PORT/, the OpenAPI documentation at /docs, Prometheus
    metrics at /metrics.
    """
    for module in ("fastapi", "uvicorn", "sqlalchemy", "prometheus_client"):
        try:
            require(module, "amnl serve")
        except ImportError as exc:
            raise fail(f"{exc} (or pip install 'amnl[serve]')") from None
    import uvicorn

    from amnl.serve.app import create_app, server_config

    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise fail(f"--log-level must be debug, info, warning or error, got {log_level!r}")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: "
                                                        "%(message)s")
    inference = inference_config(runtime, precision, "cpu", threads)
    settings = run(ServeSettings, model=model, inference=inference, db=db, host=host,
                   port=port, api_token=api_token, max_batch=max_batch,
                   max_wait_ms=max_wait_ms, batching=batching, max_backlog=max_backlog,
                   max_assets_in_memory=max_assets_in_memory, durability=durability, max_body_bytes=max_body_bytes,
                   alert_rules=str(alert_rules) if alert_rules else None,
                   webhooks=list(webhook or []), webhook_secret=webhook_secret, demo=demo,
                   demo_speed=demo_speed, allowed_hosts=list(allowed_host or []),
                   header_timeout_s=header_timeout, body_timeout_s=body_timeout,
                   limit_concurrency=limit_concurrency)
    _check_port(host, port)
    app = run(create_app, settings)  # loads the model: a bad --model is one line
    # the model and database are opened by the app's lifespan: load them now, so that a bad
    # --model or --db is one line and exit 2 rather than a traceback inside uvicorn
    run(app.state.service.start)
    typer.echo(f"amnl serve: model {app.state.service.predictor.model_id} on "
               f"http://{host}:{port}/ (API docs at /docs), database "
               f"{Path(db) if '://' not in db else 'URL'}", err=True)
    uvicorn.Server(server_config(app, settings, log_level=log_level)).run()


def register(app: typer.Typer) -> None:
    app.command()(serve)
