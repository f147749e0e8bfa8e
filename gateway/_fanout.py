"""Pushing a server event to users' online devices through their session actors."""

from __future__ import annotations

from collections.abc import Iterable

from actors import Node
from storage import Message

from ._frames import Msg, ServerEvent
from ._messages import Deliver
from ._services import session_name


def to_users(
    node: Node,
    users: Iterable[str],
    event: ServerEvent,
    *,
    skip_user: str | None = None,
    skip_device: tuple[str, str] | None = None,
) -> None:
    """Cast ``event`` to each user's session (users without one are offline: they catch up
    through sync). ``skip_user`` gets nothing; ``skip_device`` (user, device) is left out of that
    user's devices. Never blocks."""
    for user in users:
        if user == skip_user:
            continue
        session = node.whereis(session_name(user))
        if session is None:
            continue
        exclude = skip_device[1] if skip_device is not None and skip_device[0] == user else None
        session.cast(Deliver(event, exclude))


def msg_event(message: Message) -> Msg:
    """The ``msg`` frame of a stored message."""
    return Msg(
        conv=message.conv,
        id=message.id,
        seq=message.seq,
        from_user=message.sender,
        cmid=message.cmid,
        body=message.body,
        kind=message.kind,
        ts=message.ts,
    )
