"""One conversation's delivery state in the client library (sans-IO: no sockets, no clock).

The server pushes a conversation's messages to a device in ``seq`` order, but a push can be lost
(its conversation actor died between the commit and the fan-out), so a device may see seq 6 after
seq 4. A :class:`ConvCursor` turns what arrives into what the application may see: each message
once, gaplessly and in ``seq`` order. It keeps:

- ``seq``: the contiguous prefix the application has (on ``events``, in a ``sync`` answer, or
  as an ``ack`` of its own message);
- ``known``: seqs above the prefix the application already has (its own acked messages, a
  ``sync`` answer's), passed over when the prefix reaches them;
- ``held``: messages the application does not have yet: above ``seq + 1`` (waiting for the gap
  below them to be filled), or collected for the application's own ``sync`` while it runs
  (handed over in its answer if it succeeds, on ``events`` if it fails);
- ``target``: the conversation's last seq as the server last reported it (``synced``).

There is a gap to fill while anything is held or known above the prefix, or the target is above
it. The client fills it with ``sync {conv: seq}``.
"""

from __future__ import annotations

from ._frames import Msg


class ConvCursor:
    """See the module docstring. ``based`` is False until the cursor has a starting point: the
    first message seen, a ``conv`` frame's ``last_seq``, or ``synced``'s last seq. A client that
    starts afresh thus begins where the server begins (the connect-time sync from the device's
    delivered watermark), not at seq 1."""

    __slots__ = ("based", "held", "known", "sending", "seq", "target")

    def __init__(self) -> None:
        self.seq = 0
        self.based = False
        self.known: set[int] = set()
        self.held: dict[int, Msg] = {}
        self.target = 0
        self.sending = 0  # own sends in flight: one of them may hold the missing seq

    def base(self, seq: int) -> None:
        """Start at ``seq`` (everything up to it counts as had) unless already started."""
        if not self.based:
            self.based = True
            self.seq = max(self.seq, seq)

    def is_duplicate(self, seq: int) -> bool:
        """Whether the message at ``seq`` was had or is held already."""
        return seq <= self.seq or seq in self.known or seq in self.held

    def hold(self, msg: Msg) -> None:
        """Keep a message that is not a duplicate, undelivered (:meth:`advance` releases it)."""
        self.base(msg.seq - 1)
        self.held[msg.seq] = msg

    def accept(self, msg: Msg) -> list[Msg]:
        """A pushed message that is not a duplicate: the messages to deliver now, in order
        (``msg`` and held ones it unblocks), or ``[]`` if ``msg`` is held behind a gap."""
        self.hold(msg)
        return self.advance(release=True)

    def skip_to(self, seq: int) -> None:
        """The application has everything up to ``seq`` (its own cursor, given to ``sync``):
        start there, or move the prefix up to it, forgetting what is held or known below."""
        self.base(seq)
        if seq > self.seq:
            self.seq = seq
            self.held = {s: m for s, m in self.held.items() if s > seq}
            self.known = {s for s in self.known if s > seq}
            self.advance(release=False)

    def had(self, seq: int, *, release: bool) -> list[Msg]:
        """The application got the message at ``seq`` by other means (its own ``ack``, a
        ``sync`` answer). Returns the held messages that are now deliverable in order (none
        unless ``release``)."""
        self.base(seq - 1)
        if seq <= self.seq:
            return []
        self.held.pop(seq, None)
        self.known.add(seq)
        return self.advance(release=release)

    def advance(self, *, release: bool) -> list[Msg]:
        """Move the prefix over known seqs (and, with ``release``, held messages, which are
        returned in order)."""
        out: list[Msg] = []
        known, held = self.known, self.held
        while True:
            following = self.seq + 1
            if following in known:
                known.discard(following)
            elif release and following in held:
                out.append(held.pop(following))
            else:
                return out
            self.seq = following

    def sync_to(self, last: int) -> None:
        """``synced`` says the conversation's last seq is ``last``."""
        self.base(last)
        self.target = max(self.target, last)

    @property
    def gap(self) -> bool:
        """Whether something is missing below what is held, known or reported."""
        return bool(self.held or self.known) or self.target > self.seq

    @property
    def gap_seen_pushed(self) -> bool:
        """Whether the gap shows in what the server pushed or reported (not only behind this
        device's own acks, which can overtake the push of an earlier message)."""
        return bool(self.held) or self.target > self.seq

    def drop_held(self) -> int:
        """Give up the gap (the server refuses to fill it): forget what is held and known
        above it; how many held messages were dropped."""
        dropped = len(self.held)
        top = max([*self.held, *self.known, self.target, self.seq])
        self.held.clear()
        self.known.clear()
        self.seq = self.target = top
        return dropped
