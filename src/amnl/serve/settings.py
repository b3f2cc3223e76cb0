"""The service's settings: one dataclass, checked once (the CLI and tests build it)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from amnl.config import InferenceConfig
from amnl.errors import ConfigError

#: Where the API token may come from besides ``--api-token``.
TOKEN_ENV = "AMNL_API_TOKEN"
#: Where the webhook signing secret may come from besides ``--webhook-secret``.
SECRET_ENV = "AMNL_WEBHOOK_SECRET"
#: Largest request body, bytes: a fleet post of 707 C-MAPSS readings is about 0.4 MB.
DEFAULT_MAX_BODY_BYTES = 4_000_000
#: How long the batcher waits for more readings after the first of a batch, ms.
DEFAULT_MAX_WAIT_MS = 5.0
#: Windows the batcher holds in memory (about 3.5 kB each for FD001's 30 x 29 inputs: 3.6 MB);
#: beyond it predictions wait in the database (every reading is stored with its model inputs)
#: and are caught up from there.
DEFAULT_MAX_BACKLOG = 1024
#: Assets whose state the service holds in memory at most (see docs/serving.md, "Memory": about
#: 5.7 kB each); the others are loaded from their database row when they next send a reading.
DEFAULT_MAX_ASSETS_IN_MEMORY = 100_000
#: SQLite ``synchronous`` per durability level (WAL mode): ``process`` survives a killed
#: process (the default), ``power`` also a power loss (an fsync per commit).
DURABILITY = {"process": "NORMAL", "power": "FULL"}
#: Largest cycle number a reading (or a failure) may carry: a cycle a minute for 1,900 years; it
#: keeps every stored integer far inside a 64-bit column.
MAX_CYCLE = 1_000_000_000
#: A recorded failure is at the asset's last cycle or at most this many cycles later (the
#: readings may stop before the end of life: C-MAPSS's test histories end up to 195 cycles
#: before it, and its longest training run is 543 cycles); more is taken for a typo, since a
#: failure closes the asset's history.
MAX_FAILURE_GAP = 1000
#: A client sends its request line and headers within this many seconds (uvicorn has no such
#: timeout; :class:`amnl.serve.app.TimedH11Protocol` adds it): a connection trickling a header a
#: second is closed instead of holding a file descriptor for ever.
DEFAULT_HEADER_TIMEOUT_S = 10.0
#: ... and its body within this many more (a 408 otherwise): 4 MB at about 1 Mbit/s.
DEFAULT_BODY_TIMEOUT_S = 30.0
#: An idle kept-alive connection is closed after this many seconds (uvicorn's default).
DEFAULT_KEEP_ALIVE_S = 5
#: Connections (and requests in progress) at most; beyond, uvicorn answers 503 at once. Keep it
#: under the process's open-file limit (``ulimit -n``, often 1024) less the database's files.
DEFAULT_LIMIT_CONCURRENCY = 512
#: Largest request line plus headers, bytes (h11's own default; a 400 beyond).
DEFAULT_MAX_HEADER_BYTES = 16_384
#: Bind addresses that listen on every interface: the Host header is then not checked unless
#: ``allowed_hosts`` is given (such a bind needs a token; see :attr:`ServeSettings.allowed_hosts`).
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
#: Readings per group commit at most (a group is what arrived while the last one committed).
MAX_GROUP_READINGS = 8192


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def database_url(db: str) -> str:
    """A SQLAlchemy URL: URLs pass through, anything else is a SQLite file path."""
    if "://" in db:
        return db
    return f"sqlite:///{os.path.abspath(db)}"


@dataclass
class ServeSettings:
    """How ``amnl serve`` runs.

    Attributes:
        model: a bundled model name, a run directory or an exported folder.
        inference: runtime and precision (the onnx runtime never imports torch in the serving
            process: a run directory is exported once, in a child process, into the cache).
        db: a SQLAlchemy URL or a SQLite file path.
        host, port: where to listen. Anything but loopback needs ``api_token``.
        api_token: bearer token required on every write (POST, DELETE) when set.
        max_batch: windows per forward pass at most (None: the runtime's measured batch).
        max_wait_ms: how long a batch waits for more readings after its first; 0 sends what
            is there at once.
        batching: False predicts every reading alone (for comparison).
        max_backlog: windows queued in memory at most (see :data:`DEFAULT_MAX_BACKLOG`).
        max_assets_in_memory: asset states held in memory at most, least recently used out
            (see :data:`DEFAULT_MAX_ASSETS_IN_MEMORY`).
        durability: ``process`` or ``power`` (SQLite; PostgreSQL's commits are durable).
        max_body_bytes: larger requests get a 413.
        alert_rules: a JSON file of alert rules (default:
            :data:`amnl.serve.alert_rules.DEFAULT_RULES`).
        webhooks: URLs that receive every alert transition.
        webhook_secret: the HMAC-SHA256 key of their signature (required with webhooks;
            default ``$AMNL_WEBHOOK_SECRET``).
        demo: replay FD001's shipped test engines into the service (:mod:`amnl.serve.demo`).
        demo_speed: cycles a second of the demo.
        allowed_hosts: Host header values (without the port) the server answers besides its
            bind address, ``localhost``, ``127.0.0.1`` and ``[::1]``; others get a 400, which
            closes DNS rebinding. A wildcard bind (0.0.0.0) without any answers every Host (it
            needs a token anyway); a ``*`` entry does that on any bind.
        header_timeout_s, body_timeout_s: see :data:`DEFAULT_HEADER_TIMEOUT_S` and
            :data:`DEFAULT_BODY_TIMEOUT_S`.
        keep_alive_s, limit_concurrency, max_header_bytes: uvicorn's ``timeout_keep_alive``,
            ``limit_concurrency`` and ``h11_max_incomplete_event_size``.
    """

    model: str | None = None
    inference: InferenceConfig = field(default_factory=lambda: InferenceConfig(runtime="onnx"))
    db: str = "amnl.db"
    host: str = "127.0.0.1"
    port: int = 8000
    api_token: str | None = None
    max_batch: int | None = None
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS
    batching: bool = True
    max_backlog: int = DEFAULT_MAX_BACKLOG
    max_assets_in_memory: int = DEFAULT_MAX_ASSETS_IN_MEMORY
    durability: str = "process"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    alert_rules: str | None = None
    webhooks: list[str] = field(default_factory=list)
    webhook_secret: str | None = None
    demo: bool = False
    demo_speed: float = 10.0
    allowed_hosts: list[str] = field(default_factory=list)
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    keep_alive_s: int = DEFAULT_KEEP_ALIVE_S
    limit_concurrency: int = DEFAULT_LIMIT_CONCURRENCY
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES

    def __post_init__(self) -> None:
        if self.api_token is None:
            self.api_token = os.environ.get(TOKEN_ENV) or None
        if not is_loopback(self.host) and not self.api_token:
            raise ConfigError(f"refusing to listen on {self.host} without an API token: pass "
                              f"--api-token or set {TOKEN_ENV} (writes then need "
                              "'Authorization: Bearer <token>')")
        if self.webhook_secret is None:
            self.webhook_secret = os.environ.get(SECRET_ENV) or None
        for url in self.webhooks:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"webhook {url!r}: an http:// or https:// URL")
        if self.webhooks and not self.webhook_secret:
            raise ConfigError(f"webhooks are signed: pass --webhook-secret or set {SECRET_ENV}")
        if self.durability not in DURABILITY:
            raise ConfigError(f"durability must be one of {', '.join(DURABILITY)}, got "
                              f"{self.durability!r}")
        for name in ("max_backlog", "max_assets_in_memory", "max_body_bytes", "keep_alive_s",
                     "limit_concurrency", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_batch is not None and self.max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        for name in ("header_timeout_s", "body_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for h in self.allowed_hosts:
            if h != "*" and (not h or any(ch in h for ch in "/ @:")
                             and not (h.startswith("[") and h.endswith("]"))):
                raise ConfigError(f"allowed host {h!r}: a host name or address as the Host "
                                  "header carries it, without a port ([::1] for IPv6), or *")
        if self.demo_speed <= 0:
            raise ConfigError(f"demo_speed must be > 0, got {self.demo_speed}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1-65535, got {self.port}")

    @property
    def url(self) -> str:
        return database_url(self.db)

    def host_allowed(self) -> frozenset[str] | None:
        """The Host header values (lower case, without the port) the server answers; None:
        every one (see :attr:`allowed_hosts`)."""
        if "*" in self.allowed_hosts or (self.host in WILDCARD_HOSTS and not self.allowed_hosts):
            return None
        bind = f"[{self.host}]" if ":" in self.host else self.host
        return frozenset(h.lower() for h in (bind, "localhost", "127.0.0.1", "[::1]",
                                             *self.allowed_hosts))
