"""Run the gateway under uvicorn: what ``fhir-adapter serve`` and the Docker image call.

Before anything listens, :func:`preflight` refuses what would only fail later or fail open:
no credentials configured, an outbox that cannot be opened or written, TLS files that cannot
be read. Each is one line naming the variable (or option) and exit code 2.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from adapter.gateway.audit import configure_logging
from adapter.gateway.config import PREFIX, ConfigError, Settings
from adapter.gateway.main import create_app
from adapter.gateway.offload import stop_worker_processes
from adapter.gateway.outbox import open_outbox

__all__ = ["EXIT_CONFIG", "Tls", "header_timeout_protocol", "preflight", "serve"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
SWITCH_INTERVAL_SECONDS = 0.001
"""How long a CPU worker thread may hold the interpreter lock before the event loop gets it
back (Python's default is 5 ms): keeps /healthz and small requests quick while large bodies
are processed."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tls:
    """Certificate chain and private key (PEM files) for HTTPS."""

    certfile: str
    keyfile: str


def _check_tls(tls: Tls) -> None:
    """Both files readable and the key matching the certificate, before anything listens."""
    for path, option in ((tls.certfile, "--ssl-certfile"), (tls.keyfile, "--ssl-keyfile")):
        try:
            with Path(path).open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise ConfigError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            tls.certfile, tls.keyfile
        )
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            f"--ssl-certfile/--ssl-keyfile: not a PEM certificate chain and its key: {exc}"
        ) from None


def preflight(settings: Settings, tls: Tls | None = None) -> list[str]:
    """Refuse to start on a configuration that cannot work or would not be safe; returns
    the warnings to log about what is allowed but not meant for production."""
    warnings = []
    if not settings.auth_configured:
        if not settings.development:
            raise ConfigError(
                f"no credentials configured: set {PREFIX}CLIENTS or {PREFIX}API_KEYS (or the "
                f"JWT settings); {PREFIX}DEVELOPMENT=true starts without, for local use only"
            )
        warnings.append("development mode: no credentials configured, every request gets 401")
    elif settings.development:
        warnings.append(f"development mode ({PREFIX}DEVELOPMENT): plain and weak keys accepted")
    if tls is not None:
        _check_tls(tls)
    try:
        outbox = open_outbox(settings.db)
    except Exception as exc:  # whatever the driver raises: the message names the variable
        raise ConfigError(f"{PREFIX}DB: cannot open {settings.db}: {_reason(exc)}") from None
    try:
        outbox.probe_write()
    except Exception as exc:
        raise ConfigError(f"{PREFIX}DB: cannot write {settings.db}: {_reason(exc)}") from None
    finally:
        outbox.close()
    return warnings


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def header_timeout_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol with a deadline on request headers.

    uvicorn times out idle keep-alive connections, but not a connection that sends nothing,
    or its headers one byte at a time (slowloris): each would hold a socket for ever. Here a
    connection has ``seconds`` from its opening, or from the first byte of a further request,
    to complete the request's headers; otherwise it is closed. The body has its own deadline
    (``FHIR_ADAPTER_BODY_TIMEOUT``, enforced while the gateway reads it).
    """

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                self._arm()
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expired(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol


def serve(host: str, port: int, tls: Tls | None = None) -> int:
    """Serve until SIGINT/SIGTERM; returns the process exit code.

    Settings come from the environment and are checked before anything listens, so a
    misconfiguration exits 2 with one line naming the variable. uvicorn's access log is off:
    it prints raw paths (which can hold patient identifiers); the gateway's own audit
    line replaces it. ``X-Forwarded-For`` is believed only from ``FHIR_ADAPTER_TRUSTED_PROXIES``.
    """
    try:
        settings = Settings.from_env()
        app = create_app(settings)
        warnings = preflight(settings, tls)
    except ConfigError as exc:
        print(f"fhir-adapter serve: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(logging.INFO)
    for warning in warnings:
        log.warning("%s", warning)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=header_timeout_protocol(settings.header_timeout),
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
        lifespan="on",
        timeout_graceful_shutdown=15,
        ssl_certfile=tls.certfile if tls else None,
        ssl_keyfile=tls.keyfile if tls else None,
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    finally:
        stop_worker_processes()
    return EXIT_OK if server.started else EXIT_FAILED
