"""The admin endpoint: the node's inspector socket, served by the root's last child.

A Unix socket at ``[admin] socket`` (default ``DATA/admin.sock``), created with mode 0600 under
a umask of 0177 (so it is never reachable by others, not even for an instant), and optionally a
TCP port on 127.0.0.1 (``[admin] tcp_port``) where every request must carry ``[admin] token``
(compared in constant time) and destructive ops need ``[admin] allow_destructive``.

Each client is served by its own task: requests are handled one after another, in order; a bad
request gets a ``bad_request`` reply and the connection stays usable. A streamed op (``top``,
``trace``) holds its connection until it ends or the client disconnects (lines sent meanwhile
are discarded). Bounds: ``MAX_CLIENTS`` clients at once (more are closed at once), requests of
``MAX_LINE`` bytes, ``IDLE_TIMEOUT`` seconds without a request, ``MAX_UNAUTHORIZED`` failed
tokens per connection. The wire format is in ``_admin_protocol`` and docs/inspector.md.

The endpoint is not essential to chat: when its socket or port cannot be bound it logs
``admin_bind_failed`` and retries every ``BIND_RETRY`` seconds.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import os
import socket as stdsocket
from pathlib import Path
from typing import Any, Final

import structlog
import trio

from actors import Context, NoProcError, Ref

from . import _admin_ops as ops
from ._admin_chaos import answer_chaos
from ._admin_protocol import (
    MAX_LINE,
    AdminRequestError,
    LineBuffer,
    Request,
    done,
    error,
    event,
    ok,
    parse_request,
)
from ._services import Services

log = structlog.get_logger("gateway")

#: Clients served at once.
MAX_CLIENTS: Final = 16
#: Seconds a client may stay without sending a request (not counting a running stream).
IDLE_TIMEOUT: Final = 600.0
#: Unauthorized requests a TCP connection may make before it is closed.
MAX_UNAUTHORIZED: Final = 3
#: Seconds between attempts to bind a busy socket or port.
BIND_RETRY: Final = 10.0
#: Seconds a reply may take to be written before the client is dropped.
SEND_TIMEOUT: Final = 10.0
#: Streams of ``top`` running at once (each keeps a few samples of every actor).
MAX_TOPS: Final = 4


class _Disconnected(Exception):
    pass


class Endpoint:
    """The admin endpoint's shared state: the node, its root, the admin actor's own ref, the
    loop monitor behind ``stats``, and the client slots."""

    def __init__(self, ctx: Context, root: Ref, services: Services) -> None:
        self.node = ctx.node
        self.root = root
        self.self_ref = ctx.ref
        self.services = services
        settings = services.settings.admin
        self.token = settings.token.get_secret_value().encode() if settings.token else None
        self.allow_destructive = settings.allow_destructive
        self.slots = trio.Semaphore(MAX_CLIENTS)
        self.tops = trio.Semaphore(MAX_TOPS)
        self.monitor = ops.Monitor(self.node, root, services)

    # -- one client --

    async def handle(self, stream: trio.abc.Stream, *, tcp: bool) -> None:
        """Serve one client until it disconnects, idles out or misbehaves. Never raises for a
        client's fault."""
        try:
            self.slots.acquire_nowait()
        except trio.WouldBlock:
            await trio.aclose_forcefully(stream)
            return
        try:
            await self._serve_client(stream, tcp=tcp)
        except* (_Disconnected, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away (also from inside a stream's nursery)
        finally:
            self.slots.release()
            await trio.aclose_forcefully(stream)

    async def _serve_client(self, stream: trio.abc.Stream, *, tcp: bool) -> None:
        lines = LineBuffer(MAX_LINE)
        pending: list[bytes | None] = []
        unauthorized = 0
        while True:
            if not pending:
                with trio.move_on_after(IDLE_TIMEOUT) as idle:
                    data = await stream.receive_some(65_536)
                if idle.cancelled_caught or not data:
                    return
                pending.extend(lines.feed(data))
                continue
            line = pending.pop(0)
            if line is None:
                await _send(stream, error(None, "bad_request", f"line longer than {MAX_LINE}"))
                continue
            if not line.strip():
                continue
            try:
                request = parse_request(line)
                self._authorize(request, tcp=tcp)
            except AdminRequestError as exc:
                await _send(stream, error(exc.id, exc.code, exc.message))
                if exc.code == "unauthorized":
                    unauthorized += 1
                    if unauthorized >= MAX_UNAUTHORIZED:
                        return
                continue
            if request.op in ("top", "trace"):
                await self._stream(stream, request, lines)
                pending.clear()  # lines sent during a stream are discarded
                continue
            try:
                result = await self.answer(request)
            except AdminRequestError as exc:
                await _send(stream, error(request.id, exc.code, exc.message))
            except Exception as exc:
                # A fault of the endpoint, not the client's: say so, keep serving everyone.
                log.exception("admin_op_failed", op=request.op)
                await _send(stream, error(request.id, "refused", f"internal error: {exc!r}"))
            else:
                await _send(stream, ok(request.id, result))

    def _authorize(self, request: Request, *, tcp: bool) -> None:
        if not tcp:
            return
        given = (request.token or "").encode()
        if self.token is None or not hmac.compare_digest(given, self.token):
            raise AdminRequestError("unauthorized", "a valid token is required", request.id)
        if request.destructive and not self.allow_destructive:
            raise AdminRequestError(
                "refused",
                f"{request.op} is not allowed over TCP ([admin] allow_destructive is off)",
                request.id,
            )

    # -- ops --

    def resolve(self, ref: int | str) -> Context:
        """A wire ref's live actor; ``root`` names the root supervisor unless an actor is
        registered under that name. Raises AdminRequestError(``not_found``)."""
        if ref == "root" and self.node.whereis("root") is None:
            ref = self.root.pid
        return ops.resolve(self.node, ref)

    async def answer(self, request: Request) -> Any:
        """The result of a non-streamed op. Checkpoints.

        Raises:
            AdminRequestError: ``not_found`` or ``refused``.
        """
        node, args = self.node, request.args
        op = request.op
        if op == "tree":
            return ops.tree_of(node, self.root, args["depth"], args["top"])
        if op == "stats":
            return await ops.stats_of(node, self.root, self.services, self.monitor)
        if op == "restart":
            sup = self.resolve(args["supervisor"])
            return await ops.restart(node, sup, args["child"], self.self_ref)
        if op.startswith("chaos."):
            return await answer_chaos(self.services, self.resolve, request)
        ctx = self.resolve(args["ref"])
        if op == "info":
            return ops.info_of(node, ctx)
        if op == "kill":
            return ops.kill(node, ctx, args["reason"], self.self_ref)
        if op in ("suspend", "resume"):
            return ops.suspend(ctx, self.self_ref, on=op == "suspend")
        raise AdminRequestError("bad_request", f"unknown op {op!r}", request.id)

    async def _stream(self, stream: trio.abc.Stream, request: Request, lines: LineBuffer) -> None:
        """Run a streamed op until it ends or the client disconnects."""
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                # Only to notice the client leaving: what it sends meanwhile is dropped.
                while await stream.receive_some(65_536):
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            try:
                if request.op == "top":
                    await self._top(stream, request)
                else:
                    await self._trace(stream, request)
            except AdminRequestError as exc:
                await _send(stream, error(request.id, exc.code, exc.message))
            except (_Disconnected, trio.BrokenResourceError, trio.ClosedResourceError):
                raise
            except Exception as exc:
                log.exception("admin_op_failed", op=request.op)
                await _send(stream, error(request.id, "refused", f"internal error: {exc!r}"))
            else:
                await _send(stream, done(request.id))
            nursery.cancel_scope.cancel()

    async def _top(self, stream: trio.abc.Stream, request: Request) -> None:
        args = request.args
        try:
            self.tops.acquire_nowait()
        except trio.WouldBlock:
            raise AdminRequestError("refused", f"at most {MAX_TOPS} top streams at once") from None
        try:
            sampler = ops.TopSampler(
                self.node,
                self.root,
                sort=args["sort"],
                interval=args["interval"],
                window=args["window"],
            )
            frames = 0
            while args["count"] is None or frames < args["count"]:
                started = trio.current_time()
                frame = await sampler.sample(args["n"])
                await _send(stream, event(request.id, frame))
                frames += 1
                if args["count"] is not None and frames >= args["count"]:
                    break
                await trio.sleep_until(started + args["interval"])
        finally:
            self.tops.release()

    async def _trace(self, stream: trio.abc.Stream, request: Request) -> None:
        args = request.args
        ctx = self.resolve(args["ref"])
        if ctx.ref == self.self_ref:
            raise AdminRequestError("refused", "the admin endpoint does not trace itself")
        try:
            trace = self.node.trace(ctx.ref, count=args["count"], rate=args["rate"])
            events = await trace.__aenter__()
        except NoProcError as exc:
            raise AdminRequestError("not_found", str(exc)) from None
        except ValueError as exc:
            raise AdminRequestError("refused", str(exc)) from None
        try:
            async for item in events:
                payload = {
                    "pid": item.ref.pid,
                    "kind": item.kind,
                    "message": ops.short(item.message),
                    "at": round(item.at, 6),
                }
                await _send(stream, event(request.id, payload))
        finally:
            await trace.__aexit__(None, None, None)


async def _send(stream: trio.abc.Stream, data: bytes) -> None:
    with trio.move_on_after(SEND_TIMEOUT) as scope:
        await stream.send_all(data)
    if scope.cancelled_caught:
        raise _Disconnected


# -- listening ----------------------------------------------------------------------------------


def bind_unix(path: Path) -> trio.socket.SocketType:
    """A listening Unix socket at ``path``, mode 0600 from the moment it exists (bound under a
    0177 umask). A stale socket file (nothing accepting on it) is replaced.

    Raises:
        OSError: the path is taken by a live socket (``EADDRINUSE``) or cannot be bound.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        probe = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)  # stale: its node is gone
        else:
            raise OSError(errno.EADDRINUSE, f"{path} is served by a running node")
        finally:
            probe.close()
    sock = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    try:
        # The umask is the process's: files other threads create meanwhile (a database
        # driver's) come out owner-only too, which is harmless. Nothing awaits in between.
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(MAX_CLIENTS)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return trio.socket.from_stdlib_socket(sock)


async def _serve_unix(endpoint: Endpoint, path: Path) -> None:
    while True:
        try:
            sock = bind_unix(path)
        except OSError as exc:
            log.error("admin_bind_failed", socket=str(path), error=str(exc))
            await trio.sleep(BIND_RETRY)
            continue
        log.info(f"admin on {path}", socket=str(path))
        try:
            listener = trio.SocketListener(sock)

            async def handler(stream: trio.SocketStream) -> None:
                await endpoint.handle(stream, tcp=False)

            await trio.serve_listeners(handler, [listener])
        finally:
            _remove_socket(path)


def _remove_socket(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_socket():
            path.unlink()


async def _serve_tcp(endpoint: Endpoint, port: int) -> None:
    while True:
        try:
            listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        except OSError as exc:
            log.error("admin_bind_failed", host="127.0.0.1", port=port, error=str(exc))
            await trio.sleep(BIND_RETRY)
            continue
        log.info(f"admin on tcp://127.0.0.1:{port}", host="127.0.0.1", port=port)

        async def handler(stream: trio.SocketStream) -> None:
            await endpoint.handle(stream, tcp=True)

        await trio.serve_listeners(handler, listeners)


async def admin_actor(ctx: Context, services: Services) -> None:
    """Serve the admin endpoint on ``[admin] socket`` (and ``tcp_port``) until stopped."""
    settings = services.settings.admin
    root = ctx.parent
    assert isinstance(root, Ref)
    endpoint = Endpoint(ctx, root, services)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(endpoint.monitor.run)
        nursery.start_soon(_serve_unix, endpoint, Path(settings.socket))
        if settings.tcp_port is not None:
            nursery.start_soon(_serve_tcp, endpoint, settings.tcp_port)
        while True:
            await ctx.receive()  # nothing is asked of it; exit signals stop it
