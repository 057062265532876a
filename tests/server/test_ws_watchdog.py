"""The send watchdog (one timer per connection instead of an ``asyncio.timeout`` per
frame) gives up on a send that waits ``limit`` seconds, and on nothing else."""

from __future__ import annotations

import asyncio

import pytest

from omninudge_server.ws_socket import SendWatchdog, SlowConsumer


async def _send(watchdog: SendWatchdog, takes_s: float) -> None:
    """A send (as ``SocketIO.send_text`` makes) that takes ``takes_s``."""
    await watchdog.guard(asyncio.sleep(takes_s))


async def test_quick_sends_are_never_cancelled_even_across_many_timer_periods() -> None:
    watchdog = SendWatchdog(asyncio.get_running_loop(), 0.05)
    for _ in range(40):  # 0.2 s of sends, each far below the limit
        await _send(watchdog, 0.005)
    watchdog.close()


async def test_a_send_that_waits_past_the_limit_raises_slow_consumer() -> None:
    watchdog = SendWatchdog(asyncio.get_running_loop(), 0.05)
    await _send(watchdog, 0.01)  # arms the timer early: the slow send starts later
    await asyncio.sleep(0.03)
    with pytest.raises(SlowConsumer):
        await _send(watchdog, 5.0)
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0  # the watchdog's cancellation was undone
    watchdog.close()


async def test_a_cancel_from_outside_still_cancels() -> None:
    watchdog = SendWatchdog(asyncio.get_running_loop(), 0.05)
    sender = asyncio.create_task(_send(watchdog, 5.0))
    await asyncio.sleep(0.01)
    sender.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sender
    watchdog.close()


async def test_a_cancel_from_outside_wins_over_an_expired_send() -> None:
    watchdog = SendWatchdog(asyncio.get_running_loop(), 10.0)
    sender = asyncio.create_task(_send(watchdog, 5.0))
    await asyncio.sleep(0)  # the send has begun
    assert watchdog.since is not None
    watchdog.since -= 11.0  # as if it had waited past the limit
    watchdog._check()  # the watchdog cancels it...
    sender.cancel()  # ...and so does someone else (shutdown) before it runs: that stands
    with pytest.raises(asyncio.CancelledError):
        await sender
    watchdog.close()
