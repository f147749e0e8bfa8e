"""Erlang-style actors on anyio (trio and asyncio).

Spawn actors on a :class:`Node` (``async with open_node() as node``); talk to them through a
:class:`Ref` (``cast``, ``send``, ``call``); write them as :class:`Actor` subclasses (gen_server
callbacks) or as async functions with a selective ``receive``. Links, monitors, ``trap_exit``,
named registration, timers, hibernation, dead letters and introspection follow Erlang/OTP; see
docs/actors.md for the mapping.
"""

from ._actor import NOREPLY as NOREPLY
from ._actor import Actor as Actor
from ._actor import From as From
from ._errors import ActorsError as ActorsError
from ._errors import CallError as CallError
from ._errors import CallTimeoutError as CallTimeoutError
from ._errors import NameTakenError as NameTakenError
from ._errors import NodeClosedError as NodeClosedError
from ._errors import NoProcError as NoProcError
from ._errors import ReceiveTimeoutError as ReceiveTimeoutError
from ._errors import SpawnError as SpawnError
from ._errors import WouldBlock as WouldBlock
from ._node import DEFAULT_MAILBOX_SIZE as DEFAULT_MAILBOX_SIZE
from ._node import Node as Node
from ._node import open_node as open_node
from ._process import BUDGET as BUDGET
from ._process import Context as Context
from ._ref import DEFAULT_CALL_TIMEOUT as DEFAULT_CALL_TIMEOUT
from ._ref import Ref as Ref
from ._timers import Timer as Timer
from ._types import KILL as KILL
from ._types import KILLED as KILLED
from ._types import MAILBOX_OVERFLOW as MAILBOX_OVERFLOW
from ._types import NOPROC as NOPROC
from ._types import NORMAL as NORMAL
from ._types import SHUTDOWN as SHUTDOWN
from ._types import ActorInfo as ActorInfo
from ._types import Call as Call
from ._types import DeadLetter as DeadLetter
from ._types import Down as Down
from ._types import Exit as Exit
from ._types import MailboxStatistics as MailboxStatistics
from ._types import MonitorRef as MonitorRef
from ._types import NodeStatistics as NodeStatistics
from ._types import Overflow as Overflow
from ._types import Status as Status
from ._types import TraceEvent as TraceEvent
from ._types import is_clean_exit as is_clean_exit
