"""uvicorn as ``effnet serve`` runs the app: one place for the server's settings, so the
command and the tests run the same server.

uvicorn times out idle keep-alive connections but not a client that is slow to send a
request's head: a connection that sends nothing, or its headers a byte at a time, would be
held forever. ``HeadDeadlineProtocol`` gives the head ``--read-timeout`` seconds (the app
gives the body the same, see requests.read_body); each such client is one info line in the
log and one ``header_timeout`` in the error counts, like a slow body's ``body_timeout``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import signal
import socket
from types import FrameType

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from .metrics import ServeMetrics

log = logging.getLogger("effnet.serve")


def _timeout_answer(seconds: float) -> bytes:
    body = json.dumps({"error": {"status": 408, "code": "header_timeout", "message": (
        f"the request line and headers did not arrive within {seconds:g} seconds (--read-timeout)")}}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class HeadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for each request's head: from the connection's
    start, or from the first byte of a next request on a kept-alive connection, to the end of
    its headers. Past it the client gets a 408 and the connection closes.

    Between requests uvicorn's own keep-alive timeout applies, as before.
    """

    head_timeout: float = 60.0
    metrics: ServeMetrics | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            if self._head_deadline is None:
                self._arm()  # a next request began
        else:
            self._disarm()  # the head is complete (or the connection is over)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._head_deadline = self.loop.call_later(self.head_timeout, self._head_too_late)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_late(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self.transport.write(_timeout_answer(self.head_timeout))
            self.transport.close()
            peer = self.client
            log.info("%s: 408 the request line and headers did not arrive within %g seconds (--read-timeout)",
                     f"{peer[0]}:{peer[1]}" if peer else "a client", self.head_timeout)
            if self.metrics is not None:
                self.metrics.errors.labels(code="header_timeout").inc()


def server_config(app: FastAPI, *, log_level: str = "info", access_log: bool = False,
                  shutdown_timeout: float = 30.0) -> uvicorn.Config:
    """The uvicorn configuration for ``app`` (from ``create_app``, whose settings give the
    read timeout).

    ``shutdown_timeout``: seconds in-flight requests get after SIGTERM before they are
    answered 503 and the server stops.
    """
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)  # our "ready" line in uvicorn's format
    log_config["loggers"]["effnet.serve"] = {"handlers": ["default"], "level": log_level.upper(),
                                             "propagate": False}
    # a malformed multipart body is the client's 400, already explained to it: not a server warning
    log_config["loggers"]["python_multipart"] = {"level": "ERROR"}
    protocol = type("HeadDeadlineProtocol", (HeadDeadlineProtocol,),
                    {"head_timeout": app.state.settings.read_timeout, "metrics": app.state.metrics})
    return uvicorn.Config(
        app, http=protocol, log_level=log_level, log_config=log_config, access_log=access_log,
        timeout_graceful_shutdown=shutdown_timeout, server_header=False,
    )


def serve_until_stopped(config: uvicorn.Config, sock: socket.socket) -> None:
    """Run the server on ``sock`` until SIGTERM or Ctrl-C, then shut down gracefully.

    uvicorn re-raises the signal that stopped it once its shutdown is complete, so the
    process would die of SIGTERM (exit status 143 to docker, Kubernetes and shells) after a
    shutdown that went as planned. SIGTERM is how supervisors end a server's life, not a
    failure: here it ends the process with status 0. Ctrl-C keeps its usual 130.
    """
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
