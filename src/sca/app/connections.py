"""Connections under slow clients: uvicorn's HTTP/1.1 protocol with a header timeout and a cap on idle connections.

uvicorn closes a connection that stays idle after a response (keep-alive), but not one that never finishes its
request's headers: 260 sockets sending a byte now and then held every slot of its concurrency limit, and every new
request, /api/health included, got 503. Here a connection has `header_timeout` seconds to send its headers, and at
most `max_idle_connections` may wait for theirs at once: a newcomer past that closes the one that waited longest.
"""

from __future__ import annotations

import time

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..options import ServerLimits


def protocol_class(limits: ServerLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with this server's header timeout and idle-connection cap."""

    class GuardedProtocol(H11Protocol):
        header_timeout, max_idle = limits.header_timeout, limits.max_idle_connections

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._header_timer = None
            self._waiting_since = time.monotonic()
            self._arm()
            waiting = [c for c in self.connections if getattr(c, "_header_timer", None) is not None]
            if len(waiting) > self.max_idle:
                min(waiting, key=lambda c: c._waiting_since)._close_slow()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._awaiting_headers():
                self._arm()
            else:
                self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _awaiting_headers(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            if self._header_timer is None:
                self._waiting_since = time.monotonic()
                self._header_timer = self.loop.call_later(self.header_timeout, self._close_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _close_slow(self) -> None:
            self._disarm()
            if self._awaiting_headers() and not self.transport.is_closing():
                self.transport.close()

    return GuardedProtocol


def server_config(app, host: str, port: int, limits: ServerLimits, log_level: str = "info") -> uvicorn.Config:
    """uvicorn's configuration for the app: one event loop, the guarded protocol, the connection limit."""
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=protocol_class(limits),
                          timeout_keep_alive=5, limit_concurrency=limits.max_connections, timeout_graceful_shutdown=5)
