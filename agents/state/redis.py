"""The shared backend: Redis (redis://, rediss:// with TLS, or redis+sentinel:// for a Sentinel-managed
primary), through redis-py's asyncio client. Every key lives under `agentdesk:`.

A connection failure becomes StoreUnavailable, whose message tells the operator what to check; callers
turn it into a 503 (web: Slack and Teams redeliver) or a retry (worker).
"""
from __future__ import annotations

import functools
import json
import logging
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agents.state import StateStore, StoreUnavailable

log = logging.getLogger("agentdesk.state")

PREFIX = "agentdesk"
MAX_CONNECTIONS = 64  # per process; a blocking queue shares them
_EXTEND = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_INCR = ("local v = redis.call('INCRBY', KEYS[1], ARGV[1]) "
         "if ARGV[3] == '1' or redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end "
         "return v")
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)


def where(url: str) -> str:
    """host:port (or the Sentinel hosts) of a Redis URL, never its password."""
    return urlsplit(url).netloc.rpartition("@")[2]


def connect(url: str) -> aioredis.Redis:
    """A client for REDIS_URL; redis+sentinel://[:password@]host:port[,host:port]/service[/db] asks the
    Sentinels for the current primary (and again after a failover)."""
    options: dict[str, Any] = dict(socket_timeout=10, socket_connect_timeout=3, health_check_interval=15,
                                   decode_responses=True)
    if not url.startswith("redis+sentinel://"):
        # A burst waits for a free connection instead of failing ("Too many connections" at 100).
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=5, **options)
        return aioredis.Redis(connection_pool=pool)
    parts = urlsplit(url)
    auth, _, hosts = parts.netloc.rpartition("@")
    password = unquote(auth.partition(":")[2]) or None
    nodes = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":") if ":" in host else (host, "", "26379")
        nodes.append((name, int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("REDIS_URL redis+sentinel:// needs the service name: redis+sentinel://host:26379/mymaster")
    db = int(path[1]) if len(path) > 1 else 0
    query = parse_qs(parts.query)
    sentinel = Sentinel(nodes, sentinel_kwargs={"password": password} if "sentinel_auth" in query else {},
                        password=password, db=db, **options)
    return sentinel.master_for(path[0], max_connections=1000)


def _unavailable(method):
    @functools.wraps(method)
    async def wrapper(self: "RedisStore", *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except _TRANSIENT as exc:
            raise StoreUnavailable(self.down_message(exc)) from exc
        except RedisError as exc:
            if "LOADING" in str(exc) or "MASTERDOWN" in str(exc) or "No master" in str(exc):
                raise StoreUnavailable(self.down_message(exc)) from exc
            raise

    return wrapper


class RedisStore(StateStore):
    def __init__(self, url: str, client: aioredis.Redis | None = None) -> None:
        self.url = url
        self.description = f"Redis at {where(url)}"
        self.client = client or connect(url)

    def down_message(self, exc: BaseException) -> str:
        return (f"{self.description} is unreachable ({type(exc).__name__}): start Redis or fix REDIS_URL; "
                "webhooks are answered 503 meanwhile so Slack and Teams deliver them again")

    @staticmethod
    def _key(namespace: str, key: str) -> str:
        return f"{PREFIX}:{namespace}:{key}"

    @_unavailable
    async def put_record(self, namespace: str, key: str, value: dict, ttl_s: float | None = None) -> None:
        await self.client.set(self._key(namespace, key), json.dumps(value, default=str),
                              px=int(ttl_s * 1000) if ttl_s else None)

    @_unavailable
    async def add_record(self, namespace: str, key: str, value: dict, ttl_s: float | None = None) -> bool:
        return bool(await self.client.set(self._key(namespace, key), json.dumps(value, default=str), nx=True,
                                          px=int(ttl_s * 1000) if ttl_s else None))

    @_unavailable
    async def get_record(self, namespace: str, key: str) -> dict | None:
        raw = await self.client.get(self._key(namespace, key))
        return json.loads(raw) if raw else None

    @_unavailable
    async def delete_record(self, namespace: str, key: str) -> None:
        await self.client.delete(self._key(namespace, key))

    @_unavailable
    async def list_records(self, namespace: str, prefix: str = "") -> dict[str, dict]:
        base = self._key(namespace, "")
        pattern = base + "".join(f"[{c}]" if c in "*?[]\\" else c for c in prefix) + "*"
        keys = [k async for k in self.client.scan_iter(match=pattern, count=500)]
        if not keys:
            return {}
        values = await self.client.mget(keys)
        return {k[len(base):]: json.loads(v) for k, v in zip(keys, values) if v}

    @_unavailable
    async def incr(self, name: str, delta: int, ttl_s: float, *, refresh_ttl: bool = True) -> int:
        return int(await self.client.eval(_INCR, 1, self._key("counter", name), delta, int(ttl_s * 1000),
                                          "1" if refresh_ttl else "0"))

    @_unavailable
    async def acquire_lock(self, name: str, owner: str, lease_s: float) -> bool:
        return bool(await self.client.set(self._key("lock", name), owner, nx=True, px=int(lease_s * 1000)))

    @_unavailable
    async def extend_lock(self, name: str, owner: str, lease_s: float) -> bool:
        return bool(await self.client.eval(_EXTEND, 1, self._key("lock", name), owner, int(lease_s * 1000)))

    @_unavailable
    async def release_lock(self, name: str, owner: str) -> None:
        await self.client.eval(_RELEASE, 1, self._key("lock", name), owner)

    @_unavailable
    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()
