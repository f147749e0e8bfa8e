"""call: replies, deferred replies, timeouts, dead servers, cancellation."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from actors import (
    DEFAULT_CALL_TIMEOUT,
    NOREPLY,
    Actor,
    Call,
    CallError,
    CallTimeoutError,
    From,
    NoProcError,
    Overflow,
    open_node,
)

from ._support import Boom, Recorder, settle

pytestmark = pytest.mark.anyio


class Deferring(Actor):
    """Answers ``("after", seconds, value)`` later from a timer; ``"never"`` never."""

    def init(self) -> None:
        self.pending: list[From] = []
        self.replied: list[bool] = []

    def handle_call(self, request: Any, from_: From) -> Any:
        if request == "never":
            self.pending.append(from_)
            return NOREPLY
        if request == "results":
            return list(self.replied)
        _, seconds, value = request
        self.ctx.send_after(seconds, self.ref, ("reply", from_, value))
        return NOREPLY

    def handle_info(self, message: Any) -> None:
        _, from_, value = message
        self.replied.append(from_.reply(value))


class AsyncServer(Actor):
    async def handle_call(self, request: Any, from_: From) -> Any:
        await anyio.sleep(request)
        return request * 2


async def test_call_returns_the_reply() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder)
        assert await ref.call("ping") == "pong"
        assert await ref.call(3) == ("echo", 3)


async def test_async_handle_call() -> None:
    async with open_node() as node:
        ref = node.spawn(AsyncServer)
        assert await ref.call(1.5) == 3.0


async def test_call_to_a_dead_actor_fails_at_once_with_noproc() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder)
        node.exit(ref, "kill")
        before = node.now()
        with pytest.raises(NoProcError):
            await ref.call("ping", timeout=None)
        assert node.now() == before
        assert node.statistics().dead_letters == {"noproc": 1}


async def test_server_crashing_in_handle_call_fails_the_call_with_its_reason() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder)
        with pytest.raises(CallError) as info:
            await ref.call(("crash", "in call"), timeout=None)
        assert isinstance(info.value.reason, Boom)
        assert not ref.alive


async def test_server_dying_with_a_deferred_reply_fails_the_call_promptly() -> None:
    async with open_node() as node:
        ref = node.spawn(Deferring)
        node.send_after(1.0, ref, "not a reply tuple")  # handle_info crashes on it
        before = node.now()
        with pytest.raises(CallError) as info:
            await ref.call("never", timeout=None)
        assert isinstance(info.value.reason, ValueError)
        assert node.now() - before == pytest.approx(1.0, abs=0.01)


async def test_killed_server_fails_queued_and_current_calls_promptly() -> None:
    async with open_node() as node:
        ref = node.spawn(AsyncServer)
        errors: list[object] = []

        async def caller(seconds: float) -> None:
            try:
                await ref.call(seconds, timeout=None)
            except CallError as exc:
                errors.append(exc.reason)

        async with anyio.create_task_group() as tg:
            tg.start_soon(caller, 10)
            tg.start_soon(caller, 10)
            await settle()
            node.exit(ref, "kill")
        assert errors == ["killed", "killed"]
        assert node.now() < 1


async def test_call_times_out_after_its_timeout() -> None:
    async with open_node() as node:
        ref = node.spawn(Deferring)
        before = node.now()
        with pytest.raises(CallTimeoutError) as info:
            await ref.call("never", timeout=2.5)
        assert isinstance(info.value, TimeoutError)
        assert info.value.reason == "timeout"
        assert node.now() - before == pytest.approx(2.5, abs=0.002)
        assert ref.alive


async def test_default_timeout_is_five_seconds_and_none_waits_forever() -> None:
    assert DEFAULT_CALL_TIMEOUT == 5.0
    async with open_node() as node:
        ref = node.spawn(Deferring)
        before = node.now()
        with pytest.raises(CallTimeoutError):
            await ref.call("never")
        assert node.now() - before == pytest.approx(5.0, abs=0.002)
        assert await ref.call(("after", 100.0, "late"), timeout=None) == "late"


async def test_deferred_reply_just_before_the_timeout_wins() -> None:
    async with open_node() as node:
        ref = node.spawn(Deferring)
        assert await ref.call(("after", 0.99, "v"), timeout=1.0) == "v"
        assert await ref.call("results") == [True]


async def test_deferred_reply_after_the_timeout_is_ignored() -> None:
    async with open_node() as node:
        ref = node.spawn(Deferring)
        with pytest.raises(CallTimeoutError):
            await ref.call(("after", 1.01, "late"), timeout=1.0)
        await anyio.sleep(1)
        assert await ref.call("results") == [False]  # the late reply went nowhere
        assert ref.alive


async def test_call_honours_the_callers_cancel_scope() -> None:
    async with open_node() as node:
        ref = node.spawn(Deferring)
        with anyio.move_on_after(0.5) as scope:
            await ref.call(("after", 2.0, "v"), timeout=None)
        assert scope.cancelled_caught
        await anyio.sleep(2)
        assert await ref.call("results") == [False]
        assert node.statistics().timers == 0


async def test_cancelled_caller_before_the_server_ran_is_cancelled_not_answered() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await ref.call("ping")
        assert scope.cancelled_caught
        assert await ref.call("ping") == "pong"


async def test_call_into_a_full_mailbox_fails_with_mailbox_full() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder, mailbox_size=2)
        node.context(ref).suspend()
        ref.cast(1)
        ref.cast(2)
        with pytest.raises(CallError) as info:
            await ref.call("ping")
        assert info.value.reason == "mailbox_full"


async def test_call_waits_for_room_under_backpressure() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder, mailbox_size=1, overflow=Overflow.BACKPRESSURE)
        ctx = node.context(ref)
        ctx.suspend()
        ref.cast(1)
        node.send_after(3.0, ref, "wake")  # dropped (full), but resume below drains
        async with anyio.create_task_group() as tg:

            async def resume_later() -> None:
                await anyio.sleep(2)
                ctx.resume()

            tg.start_soon(resume_later)
            before = node.now()
            assert await ref.call("got") == [1]
            assert node.now() - before == pytest.approx(2.0, abs=0.01)


async def test_reply_from_another_task() -> None:
    async with open_node() as node:
        ref = node.spawn(Deferring)
        actor = ref._ctx._behaviour
        async with anyio.create_task_group() as tg:

            async def answer() -> None:
                await anyio.sleep(1)
                assert actor.pending[0].reply("from elsewhere") is True
                assert actor.pending[0].reply("twice") is False

            tg.start_soon(answer)
            assert await ref.call("never", timeout=None) == "from elsewhere"


async def test_function_actor_exiting_without_replying_fails_the_call_promptly() -> None:
    async def takes_calls_and_dies(ctx: Any) -> None:
        message = await ctx.receive(lambda m: isinstance(m, Call))
        assert message.request == "hello"
        raise Boom("forgot to reply")

    async with open_node() as node:
        ref = node.spawn(takes_calls_and_dies)
        with pytest.raises(CallError) as info:
            await ref.call("hello", timeout=10)
        assert isinstance(info.value.reason, Boom)


async def test_inbox_closing_with_an_unanswered_call_fails_the_call() -> None:
    async with open_node() as node:
        inbox = node.inbox()
        async with anyio.create_task_group() as tg:
            result: list[object] = []

            async def caller() -> None:
                try:
                    await inbox.ref.call("q", timeout=10)
                except CallError as exc:
                    result.append(exc.reason)

            tg.start_soon(caller)
            request = await inbox.receive()
            assert isinstance(request, Call)
            inbox.close()
        assert result == ["normal"]
