"""Bounded async fan-out over a lazily consumed iterable: the hot loop of every stage."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def fan_out(
    items: Iterable[T],
    handle: Callable[[T], Awaitable[R]],
    on_result: Callable[[R], None],
    max_in_flight: int,
) -> None:
    """Run `handle` on every item with at most `max_in_flight` in flight; `on_result` as each ends.

    The iterable is consumed lazily, so memory stays flat however many items there are. The first
    exception (from `handle`, `on_result` or the iterable) cancels the rest and propagates.
    """
    source = iter(items)

    async def worker() -> None:
        # Workers share one iterator: next() never awaits, so each item goes to exactly one worker.
        for item in source:
            on_result(await handle(item))

    workers = [asyncio.create_task(worker()) for _ in range(max(1, max_in_flight))]
    try:
        done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
