"""The observability endpoint: ``GET /metrics`` (Prometheus text format) and ``GET /healthz``
on a separate, loopback-by-default port, served by a small actor of the node's tree.

HTTP/1.1 through h11: one request per connection (``Connection: close``), headers at most
``MAX_REQUEST`` bytes, ``REQUEST_TIMEOUT`` seconds to send them, at most ``MAX_CLIENTS``
connections at once (more are closed at once). The endpoint is not essential to chat: when its
port cannot be bound the node logs ``metrics_bind_failed``, serves clients anyway and retries
every ``BIND_RETRY`` seconds.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import urlsplit

import h11
import structlog
import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from actors import Context, NoProcError, Ref

from ._metrics import NodeCollector, _records
from ._services import CONNECTIONS, CONVERSATIONS, SESSIONS, Services

log = structlog.get_logger("gateway")

#: Bytes of request line and headers accepted (more: 431).
MAX_REQUEST: Final = 8192
#: Seconds a client has to send its request.
REQUEST_TIMEOUT: Final = 10.0
#: Connections served at once.
MAX_CLIENTS: Final = 16
#: Seconds between attempts to bind a busy port.
BIND_RETRY: Final = 10.0
#: Seconds between samples of restarts and commit timings (besides each scrape).
SAMPLE_EVERY: Final = 5.0


def health(collector: NodeCollector, services: Services) -> tuple[bool, dict[str, Any]]:
    """Whether the node is healthy, and why: every child of the root running, every storage
    shard running with its circuit breaker closed, and not draining."""
    node = collector.node
    tree: dict[str, str] = {}
    try:
        records = _records(node.context(collector.root).behaviour) or []
    except NoProcError:
        records = []
    for child_id, record in records:
        tree[str(child_id)] = "running" if record.ref is not None else record.status
    storage: dict[str, str] = {}
    for name, ref, stats in collector.shards():
        if ref is None or stats is None:
            storage[name] = "down"
        else:
            storage[name] = (
                "ok" if stats.get("breaker") == "closed" else f"breaker_{stats['breaker']}"
            )
    ok = (
        bool(tree)
        and all(s == "running" for s in tree.values())
        and bool(storage)
        and all(s == "ok" for s in storage.values())
    )
    status = "draining" if services.draining else ("ok" if ok else "unavailable")
    body = {"status": status, "tree": tree, "storage": storage}
    return status == "ok", body


class _Endpoint:
    def __init__(self, collector: NodeCollector, services: Services) -> None:
        self.collector = collector
        self.services = services
        self.slots = trio.Semaphore(MAX_CLIENTS)

    def respond(self, method: str, target: str) -> tuple[int, list[tuple[str, str]], bytes]:
        path = urlsplit(target).path
        if path not in ("/metrics", "/healthz"):
            return 404, [("Content-Type", "text/plain; charset=utf-8")], b"not found\n"
        if method not in ("GET", "HEAD"):
            return 405, [("Allow", "GET, HEAD")], b""
        if path == "/metrics":
            self.collector.sample()  # before the histograms it feeds are written out
            body = generate_latest(self.services.metrics.registry)
            return 200, [("Content-Type", CONTENT_TYPE_LATEST)], body
        ok, report = health(self.collector, self.services)
        body = (json.dumps(report, sort_keys=True) + "\n").encode()
        return (200 if ok else 503), [("Content-Type", "application/json")], body

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            self.slots.acquire_nowait()
        except trio.WouldBlock:
            await stream.aclose()
            return
        try:
            await self._handle(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
            pass  # the client went away
        finally:
            self.slots.release()
            await stream.aclose()

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        request: h11.Request | None = None
        status: int | None = None
        with trio.move_on_after(REQUEST_TIMEOUT):
            while request is None and status is None:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    status = exc.error_status_hint
                    break
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(4096))
                elif isinstance(event, h11.Request):
                    request = event
                else:  # ConnectionClosed or PAUSED before a request
                    return
        if request is None and status is None:
            return  # timed out
        headers: list[tuple[str, str]]
        if request is not None:
            method, target = request.method.decode(), request.target.decode("ascii", "replace")
            status, headers, body = self.respond(method, target)
            if method == "HEAD":
                headers.append(("Content-Length", str(len(body))))
                body = b""
        else:
            assert status is not None
            headers, body = [("Content-Type", "text/plain; charset=utf-8")], b"bad request\n"
        headers.append(("Connection", "close"))
        if request is None or request.method != b"HEAD":
            headers.append(("Content-Length", str(len(body))))
        out = conn.send(h11.Response(status_code=status, headers=headers)) or b""
        if body:
            out += conn.send(h11.Data(data=body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(out)


async def metrics_actor(ctx: Context, services: Services) -> None:
    """Serve ``/metrics`` and ``/healthz`` on ``[metrics] host, port`` until stopped."""
    settings = services.settings.metrics
    root = ctx.parent
    assert isinstance(root, Ref)
    collector = NodeCollector(
        ctx.node,
        root,
        services.metrics,
        {"connections": CONNECTIONS, "sessions": SESSIONS, "conversations": CONVERSATIONS},
    )
    registry = services.metrics.registry
    registry.register(collector)
    endpoint = _Endpoint(collector, services)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve, endpoint, settings.host, settings.port)
            nursery.start_soon(_sample, collector)
            while True:
                await ctx.receive()  # nothing is asked of it; exit signals stop it
    finally:
        registry.unregister(collector)


async def _sample(collector: NodeCollector) -> None:
    while True:
        await trio.sleep(SAMPLE_EVERY)
        collector.sample()


async def _serve(endpoint: _Endpoint, host: str, port: int) -> None:
    while True:
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            log.error("metrics_bind_failed", host=host, port=port, error=str(exc))
            await trio.sleep(BIND_RETRY)
            continue
        bound = listeners[0].socket.getsockname()
        url = f"http://{bound[0]}:{bound[1]}/metrics"
        log.info(f"metrics on {url}", url=url, host=bound[0], port=bound[1])
        await trio.serve_listeners(endpoint.handle, listeners)
