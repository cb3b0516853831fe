"""Per-endpoint admission control: adaptive concurrency, requests/min and tokens/min buckets.

One `EndpointLimiter` exists per endpoint per process and is shared by every shard running in
that process, whichever thread and event loop the shard runs on; so its state is guarded by a
threading lock and waiters are woken with `call_soon_threadsafe` on their own loop.

Adaptive concurrency follows TCP's AIMD: a 429 halves the allowed in-flight requests and pauses
the endpoint for `Retry-After`; each run of successes adds one slot back, up to the configured max.

`set_gate` puts an outside admission step in front (flows/rate_limits.py: a Prefect global rate
limit shared by every worker), so moaa/ stays free of Prefect.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable

Gate = Callable[[], Awaitable[None]]  # awaited before each request's own admission (see set_gate)


class TokenBucket:
    """A bucket refilled at `rate` units per second, holding at most `capacity` (thread-safe)."""

    def __init__(self, per_minute: float, burst_seconds: float = 1.0):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, amount: float, now: float) -> float:
        """Take `amount` if available; else return seconds to wait (nothing taken)."""
        self._refill(now)
        amount = min(amount, self.capacity)  # a request larger than the bucket waits for a full one
        if self.level >= amount:
            self.level -= amount
            return 0.0
        return (amount - self.level) / self.rate

    def charge(self, amount: float) -> None:
        """Correct an earlier estimate (may go negative: later requests then wait)."""
        self.level -= amount


class EndpointLimiter:
    def __init__(
        self,
        max_concurrency: int,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        recover_after: int = 20,
    ):
        self.max_concurrency = max_concurrency
        self.limit = max_concurrency
        self.in_flight = 0
        self.recover_after = recover_after
        self._successes = 0
        self._paused_until = 0.0
        self._rpm = TokenBucket(requests_per_minute) if requests_per_minute else None
        self._tpm = TokenBucket(tokens_per_minute) if tokens_per_minute else None
        self._lock = threading.Lock()
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()
        self.gate: Gate | None = None

    def set_gate(self, gate: Gate | None) -> None:
        """Make every `acquire` await `gate()` first (before taking a slot), or stop doing so (None)."""
        self.gate = gate

    async def acquire(self, tokens: float = 0.0) -> None:
        """Wait for the gate if one is set, then for a slot, for the pause to end, and for room in both buckets."""
        gate = self.gate
        if gate is not None:
            await gate()
        await self._acquire_slot()
        try:
            while True:
                with self._lock:
                    wait = self._bucket_wait(tokens)
                if wait <= 0:
                    return
                await asyncio.sleep(wait)
        except BaseException:
            self.release()
            raise

    def _bucket_wait(self, tokens: float) -> float:
        now = time.monotonic()
        if now < self._paused_until:
            return self._paused_until - now
        if self._rpm and (wait := self._rpm.take(1, now)) > 0:
            return wait
        if self._tpm and tokens and (wait := self._tpm.take(tokens, now)) > 0:
            if self._rpm:
                self._rpm.charge(-1)  # give back the request we took above
            return wait
        return 0.0

    async def _acquire_slot(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.in_flight < self.limit and not self._waiters:
                self.in_flight += 1
                return
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, fut))
        try:
            await fut  # the releaser counted us in before waking us
        except asyncio.CancelledError:
            with self._lock:
                try:
                    self._waiters.remove((loop, fut))
                    return_slot = False
                except ValueError:
                    return_slot = True  # woken and cancelled at once: hand the slot on
            if return_slot:
                self.release()
            raise

    def release(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self._wake_locked()

    def _wake_locked(self) -> None:
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        # A waiter on this thread's own loop is woken with call_soon (no self-pipe write).
        while self._waiters and self.in_flight < self.limit:
            loop, fut = self._waiters.popleft()
            if fut.done():
                continue
            self.in_flight += 1
            (loop.call_soon if loop is here else loop.call_soon_threadsafe)(_resolve, fut)

    def charge_tokens(self, estimated: float, actual: float) -> None:
        if self._tpm:
            with self._lock:
                self._tpm.charge(actual - estimated)

    def on_success(self) -> None:
        with self._lock:
            self._successes += 1
            if self.limit < self.max_concurrency and self._successes >= self.recover_after:
                self.limit += 1
                self._successes = 0
                self._wake_locked()

    def on_rate_limited(self, retry_after: float | None) -> None:
        """Cut concurrency in half and pause the endpoint for Retry-After seconds (the caller caps them)."""
        with self._lock:
            self.limit = max(1, self.limit // 2)
            self._successes = 0
            if retry_after:
                self._paused_until = max(self._paused_until, time.monotonic() + min(retry_after, 300))


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


_registry: dict[tuple, EndpointLimiter] = {}
_registry_lock = threading.Lock()


def shared_limiter(key: tuple, max_concurrency: int, rpm: float | None, tpm: float | None) -> EndpointLimiter:
    """The process-wide limiter for an endpoint (same key, same limiter, across shards)."""
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None:
            limiter = _registry[key] = EndpointLimiter(max_concurrency, rpm, tpm)
        return limiter
