"""The HTTP edge of ``mlops serve``: API key, body limit, timeout, request id, access log.

:class:`Guard` is plain ASGI middleware around the app, so a request that is refused
(401, 413, 504) never reaches a route, and every request, answered or refused, is
counted in the metrics and written to the access log: one JSON object per line on
standard output, through a queue so the event loop never waits on the write.
"""

from __future__ import annotations

import asyncio
import atexit
import hmac
import ipaddress
import logging
import os
import queue
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlops.config import ConfigError, Params

if TYPE_CHECKING:
    from mlops.serve_metrics import Metrics

API_KEY_ENV = "MLOPS_SERVE_API_KEY"
OPEN_PATHS = ("/health", "/ready", "/metrics", "/v2/health/live", "/v2/health/ready")
access = logging.getLogger("mlops.serve.access")
Scope = dict[str, Any]
ASGI = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Any]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_key(host: str, env: dict[str, str] | None = None) -> str | None:
    """The API key requests must carry; refuses a non-loopback bind without one."""
    key = (env if env is not None else os.environ).get(API_KEY_ENV) or None
    if key is None and not is_loopback(host):
        raise ConfigError(
            f"serve: binding to {host} needs an API key: set {API_KEY_ENV} (clients send "
            "'Authorization: Bearer <key>'), or bind to 127.0.0.1"
        )
    return key


class Guard:
    """ASGI middleware: request id, API key, body limit, timeout, metrics, access log."""

    def __init__(self, app: ASGI, cfg: Params, metrics: Metrics, key: str | None) -> None:
        """Wrap ``app`` with the limits of ``cfg.serve``."""
        self.app, self.metrics, self.key = app, metrics, key
        self.max_body, self.timeout = cfg.serve.max_body_bytes, cfg.serve.timeout_s
        self.paths = {getattr(r, "path", None) for r in getattr(app, "routes", [])}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Answer one request, or refuse it before the app sees it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        rid = headers.get("x-request-id") or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        path = scope["path"]
        status = [500]

        async def reply(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        async def guarded() -> None:
            # The body is read whole before the app runs: one over the limit is refused
            # here, never half-read by a route that has then already answered.
            messages = await self._body(receive)
            if messages is None:
                await _asgi_json(reply, 413, self._too_large())
                return

            async def replay() -> Any:
                return messages.pop(0) if messages else await receive()

            await self.app(scope, replay, reply)

        refusal = self._refusal(path, headers)
        try:
            if refusal is not None:
                await _asgi_json(reply, *refusal)
            else:
                await asyncio.wait_for(guarded(), self.timeout)
        except TimeoutError:
            await _asgi_json(reply, 504, {"detail": f"timed out after {self.timeout:g}s"})
        finally:
            self._done(scope, path, status[0], rid, t0)

    def _refusal(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
        if self.key is not None and path not in OPEN_PATHS:
            sent = headers.get("x-api-key") or headers.get("authorization", "").removeprefix(
                "Bearer "
            )
            if not hmac.compare_digest(sent.encode(), self.key.encode()):
                return 401, {"detail": f"missing or wrong API key ({API_KEY_ENV})"}
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return 413, self._too_large()
        return None

    async def _body(self, receive: Any) -> list[dict[str, Any]] | None:
        """The request's body messages, or None once they pass ``serve.max_body_bytes``."""
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            size += len(message.get("body", b""))
            if size > self.max_body:
                return None
            if not message.get("more_body", False):
                return messages

    def _too_large(self) -> dict[str, Any]:
        return {"detail": f"request body over {self.max_body:,} bytes (serve.max_body_bytes)"}

    def _done(self, scope: Scope, path: str, status: int, rid: str, t0: float) -> None:
        import orjson

        secs = time.perf_counter() - t0
        route = scope.get("route")
        # A path no route matched (refused before routing, or 404) is "other": a client
        # must not be able to add a metric series per made-up path.
        endpoint = getattr(route, "path", None) or (path if path in self.paths else "other")
        m = self.metrics
        m.requests.labels(endpoint, str(status)).inc()
        m.latency.labels(endpoint).observe(secs)
        if status >= 400:
            m.errors.labels(str(status)).inc()
        if access.isEnabledFor(logging.INFO):
            client = scope.get("client") or ("", 0)
            line = {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "request_id": rid,
                "method": scope.get("method"),
                "path": path,
                "status": status,
                "duration_ms": round(secs * 1000, 3),
                "rows": scope["state"].get("rows"),
                "client": client[0],
            }
            access.info("%s", orjson.dumps(line).decode())


async def _asgi_json(send: Any, status: int, body: dict[str, Any]) -> None:
    import orjson

    raw = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(raw)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})


def access_log() -> None:
    """Access log lines (one JSON object each) go to standard output, off the event loop."""
    from logging.handlers import QueueHandler, QueueListener

    if access.handlers:
        return
    lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(logging.Formatter("%(message)s"))
    listener = QueueListener(lines, out)
    listener.start()
    atexit.register(listener.stop)  # writes what is queued before the process exits
    access.addHandler(QueueHandler(lines))
    access.setLevel(logging.INFO)
    access.propagate = False
