"""Token-bucket rate limits for the public surface (/api/chat and the Meta webhooks).

`InMemoryRateLimiter` serves one process; `RedisRateLimiter` (used when REDIS_URL is set) keeps the
buckets in Redis so several processes share one budget. A bucket holds `per_minute` tokens (the
burst) and refills at `per_minute / 60` tokens a second; each request takes one. A denied request
learns how long until a token is back (the `Retry-After` header).

If Redis is unreachable the limiter lets requests through and logs a warning: a broken rate limiter
must not take the salon's inbox down with it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_s: float = 0.0

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after_s)))


class RateLimiter(Protocol):
    async def hit(self, key: str, per_minute: int) -> Decision: ...

    async def refund(self, key: str, per_minute: int) -> None:
        """Give back the token an allowed `hit` took, for a request that turned out not to count
        (a redelivered webhook event, or one the database never stored)."""
        ...

    async def close(self) -> None: ...


class InMemoryRateLimiter:
    def __init__(self, *, max_keys: int = 100_000, clock: Any = time.monotonic) -> None:
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_keys = max_keys
        self._clock = clock

    async def hit(self, key: str, per_minute: int) -> Decision:
        now = self._clock()
        rate = per_minute / 60.0
        tokens, stamp = self._buckets.pop(key, (float(per_minute), now))
        tokens = min(float(per_minute), tokens + (now - stamp) * rate)
        if tokens >= 1.0:
            decision = Decision(True)
            tokens -= 1.0
        else:
            decision = Decision(False, (1.0 - tokens) / rate)
        self._buckets[key] = (tokens, now)  # most recently used last
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)  # the least recently seen bucket is (nearly) full again
        return decision

    async def refund(self, key: str, per_minute: int) -> None:
        if (bucket := self._buckets.get(key)) is not None:
            tokens, stamp = bucket
            self._buckets[key] = (min(float(per_minute), tokens + 1.0), stamp)

    async def close(self) -> None:
        self._buckets.clear()


# KEYS[1] bucket; ARGV: capacity, refill per ms, now ms. Returns {allowed, retry_after_ms}.
_TOKEN_BUCKET_LUA = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 't', 's')
local tokens = tonumber(state[1])
local stamp = tonumber(state[2])
if tokens == nil then tokens = capacity; stamp = now end
if now > stamp then tokens = math.min(capacity, tokens + (now - stamp) * rate) end
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 's', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate) + 1000)
return {allowed, wait}
"""


# KEYS[1] bucket; ARGV: capacity. One token back, never above the capacity; no bucket, nothing to do.
_REFUND_LUA = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 't'))
if tokens ~= nil then
  redis.call('HSET', KEYS[1], 't', tostring(math.min(tonumber(ARGV[1]), tokens + 1)))
end
return 1
"""


class RedisRateLimiter:
    """Buckets in Redis, updated atomically by one Lua script (time from the caller's clock)."""

    def __init__(self, url: str, *, prefix: str = "cheshire:rl:") -> None:
        import redis.asyncio as redis_asyncio  # only loaded when REDIS_URL is set

        self._redis: Any = redis_asyncio.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script: Any = self._redis.register_script(_TOKEN_BUCKET_LUA)
        self._refund: Any = self._redis.register_script(_REFUND_LUA)
        self._prefix = prefix
        self._warned = False

    async def hit(self, key: str, per_minute: int) -> Decision:
        rate_per_ms = per_minute / 60_000.0
        try:
            allowed, wait_ms = await self._script(
                keys=[self._prefix + key], args=[per_minute, rate_per_ms, int(time.time() * 1000)]
            )
        except (RedisError, OSError) as exc:
            if not self._warned:
                log.warning(
                    "rate limiter: redis unavailable, letting requests through (%s)", type(exc).__name__
                )
                self._warned = True
            return Decision(True)
        self._warned = False
        return Decision(bool(int(allowed)), int(wait_ms) / 1000.0)

    async def refund(self, key: str, per_minute: int) -> None:
        try:
            await self._refund(keys=[self._prefix + key], args=[per_minute])
        except (RedisError, OSError) as exc:
            log.warning("rate limiter: redis unavailable, token not refunded (%s)", type(exc).__name__)

    async def close(self) -> None:
        await self._redis.aclose()


def build_rate_limiter(redis_url: str | None) -> RateLimiter:
    return RedisRateLimiter(redis_url) if redis_url else InMemoryRateLimiter()
