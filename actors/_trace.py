"""Rate-limited message traces on one actor (recon_trace's rule: a limit is mandatory)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._ref import CALL, CAST
from ._types import TraceEvent

if TYPE_CHECKING:
    from ._process import Context

_KINDS = {CAST: "cast", CALL: "call"}


class Tracer:
    """Receives every message its actor takes; forwards at most ``count`` of them, at most
    ``rate`` per second (a token bucket with a burst of ``rate``), dropping the rest."""

    def __init__(self, ctx: Context, count: int, rate: float, buffer: int = 256) -> None:
        if count < 1:
            raise ValueError("count must be >= 1 (a trace needs a limit)")
        if rate <= 0:
            raise ValueError("rate must be > 0 messages per second")
        self._ctx = ctx
        self._now = ctx._node._backend.now
        self.remaining = count
        self.rate = rate
        self._tokens = rate
        self._last = self._now()
        self.dropped = 0
        self._send: MemoryObjectSendStream[TraceEvent]
        self._receive: MemoryObjectReceiveStream[TraceEvent]
        self._send, self._receive = anyio.create_memory_object_stream[TraceEvent](buffer)

    def offer(self, entry: tuple[Any, ...]) -> None:
        now = self._now()
        self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            self.dropped += 1
            return
        message = entry[1]
        event = TraceEvent(self._ctx._ref, _KINDS.get(entry[0], "info"), message, now)
        try:
            self._send.send_nowait(event)
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.dropped += 1
            return
        self._tokens -= 1
        self.remaining -= 1
        if self.remaining <= 0:
            self.close()

    def close(self) -> None:
        """Stop tracing: detach from the actor and end the event stream."""
        if self._ctx._tracer is self:
            self._ctx._tracer = None
        self._send.close()

    def release(self) -> None:
        """Stop tracing and drop the events nobody read (when the trace block is left)."""
        self.close()
        self._receive.close()

    def events(self) -> AsyncIterator[TraceEvent]:
        """The traced messages, until the count is reached, the actor exits, or ``close``.

        The stream itself, not an async generator: a caller may stop iterating at any point
        and leave nothing to finalise."""
        return self._receive
