"""Redis: one view of the state for several processes or hosts.

Counters are updated on the server (``HINCRBY`` / ``HINCRBYFLOAT`` in one Lua
script), so there is no read-modify-write race, and each addition carries a token the
script applies once, so an addition re-sent after a lost reply never counts twice.
Each counter hash is keyed by its period and expires some time after the period ends.
A status change bumps a global sequence and lands in a sorted set, which every
instance polls by score; a standby with a recovery time also sets a cooldown key
that expires on the server at that time. Needs the ``redis`` package
(``pip install "modelmesh-lite[redis]"``).
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

from .._config import StorageConfig
from ._base import PersistedState, StateStore, StateStoreError, UsageCounters

_STORAGE = StorageConfig()
"""The configuration's defaults, which this store's are (written once, there)."""

__all__ = ["RedisStore"]

_KEEP_AFTER_PERIOD = 40 * 86400  # counters outlive their period by this much (seconds)
_APPLIED_TTL = 86400
"""How long an addition's token is remembered (a re-send comes within seconds or minutes)."""

# One addition, applied once per token (KEYS[3], empty: no token), atomically: a reply
# lost to a timeout does not make the re-sent addition count twice.
_ADD_ONCE = f"""
if KEYS[3] == '' or redis.call('SET', KEYS[3], '1', 'NX', 'EX', {_APPLIED_TTL}) then
    redis.call('HINCRBY', KEYS[1], 'requests', ARGV[1])
    redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[2])
    redis.call('HINCRBYFLOAT', KEYS[2], 'cost', ARGV[3])
    redis.call('EXPIREAT', KEYS[1], ARGV[4])
    redis.call('EXPIREAT', KEYS[2], ARGV[4])
end
return {{
    redis.call('HGET', KEYS[1], 'requests') or '0',
    redis.call('HGET', KEYS[1], 'tokens') or '0',
    redis.call('HGET', KEYS[2], 'cost') or '0',
}}
"""


class RedisStore(StateStore):
    shared = True
    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = _STORAGE.key_prefix,
        timeout: float = _STORAGE.timeout,
    ) -> None:
        """``timeout``: the socket timeout of one operation. Failures are retried once on a
        fresh connection, no more: the mesh does its own backoff and never waits long."""
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:  # pragma: no cover - depends on the extra
            raise StateStoreError(
                "the redis store needs the 'redis' package: pip install \"modelmesh-lite[redis]\"",
                details={"where": "storage.url"},
            ) from None
        self._redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        )
        self._p = key_prefix
        self._add = self._redis.register_script(_ADD_ONCE)
        self._where = _safe_url(url)
        try:
            self._redis.ping()
        except redis.RedisError as exc:
            raise StateStoreError(
                f"{self._where}: cannot reach Redis ({_safe_error(exc, url)})",
                details={"where": self._where, "unavailable": True},
            ) from None

    def __repr__(self) -> str:
        return f"RedisStore({self._where!r}, key_prefix={self._p!r})"

    def _k(self, *parts: object) -> str:
        return self._p + ":".join(str(p) for p in parts)

    # --- snapshot ---------------------------------------------------------------
    def load(self) -> PersistedState | None:
        try:
            # decode_responses=True: str keys and values (redis's own types say bytes | str)
            models = cast("dict[str, str]", self._redis.hgetall(self._k("models")))
            pools = cast("dict[str, str]", self._redis.hgetall(self._k("pools")))
            if not models and not pools:
                return None
            return PersistedState(
                models={mid: json.loads(v) for mid, v in models.items()},
                pools={pid: json.loads(v) for pid, v in pools.items()},
            )
        except ValueError as exc:
            raise StateStoreError(
                f"{self._where}: stored state is not JSON ({exc})", details={"where": self._where}
            ) from None

    def save(self, state: PersistedState) -> None:
        pipe = self._redis.pipeline(transaction=True)
        if state.models:
            pipe.hset(
                self._k("models"), mapping={m: json.dumps(d) for m, d in state.models.items()}
            )
        if state.pools:
            pipe.hset(self._k("pools"), mapping={p: json.dumps(d) for p, d in state.pools.items()})
        pipe.execute()

    def close(self) -> None:
        self._redis.close()

    # --- shared -------------------------------------------------------------------
    def add_usage(
        self,
        model_id: str,
        quota_period: float,
        budget_period: float,
        requests: int,
        tokens: int,
        cost: float,
        *,
        token: str | None = None,
    ) -> UsageCounters:
        qk = self._k("usage", model_id, "quota", int(quota_period))
        bk = self._k("usage", model_id, "budget", int(budget_period))
        applied = self._k("applied", token) if token else ""
        expire = int(time.time()) + _KEEP_AFTER_PERIOD
        n_requests, n_tokens, spent = self._add(
            keys=[qk, bk, applied], args=[requests, tokens, repr(float(cost)), expire]
        )
        return UsageCounters(int(n_requests), int(n_tokens), float(spent))

    def get_usage(self, model_id: str, quota_period: float, budget_period: float) -> UsageCounters:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hmget(self._k("usage", model_id, "quota", int(quota_period)), "requests", "tokens")
        pipe.hget(self._k("usage", model_id, "budget", int(budget_period)), "cost")
        (requests, tokens), cost = pipe.execute()
        return UsageCounters(int(requests or 0), int(tokens or 0), float(cost or 0.0))

    def publish_status(self, model_id: str, status: dict[str, Any]) -> int:
        seq = int(self._redis.incr(self._k("seq")))
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._k("status"), model_id, json.dumps(status | {"seq": seq}))
        pipe.zadd(self._k("status_seq"), {model_id: seq})
        cooldown = self._k("cooldown", model_id)
        recover_at = status.get("recover_at")
        if status.get("status") == "standby" and recover_at:
            pipe.set(
                cooldown,
                status.get("deactivation_reason") or "standby",
                pxat=max(int(recover_at * 1000), int(time.time() * 1000) + 1),
            )
        else:
            pipe.delete(cooldown)
        pipe.execute()
        return seq

    def statuses_since(self, seq: int) -> list[tuple[str, dict[str, Any], int]]:
        changed = cast(
            "list[tuple[str, float]]",
            self._redis.zrangebyscore(self._k("status_seq"), f"({seq}", "+inf", withscores=True),
        )
        if not changed:
            return []
        raw = cast(
            "list[str | None]", self._redis.hmget(self._k("status"), [m for m, _ in changed])
        )
        out: list[tuple[str, dict[str, Any], int]] = []
        for (mid, _score), data in zip(changed, raw):
            if data:
                status = json.loads(data)
                out.append((mid, status, int(status.pop("seq", _score))))
        return sorted(out, key=lambda row: row[2])

    def cooldown_remaining(self, model_id: str) -> float:
        """Seconds until the server-side cooldown of ``model_id`` expires (0: none)."""
        ms = self._redis.pttl(self._k("cooldown", model_id))
        return max(0.0, ms / 1000.0) if ms and ms > 0 else 0.0


def _safe_error(exc: BaseException, url: str) -> str:
    """An error's text, with the URL's password replaced should the client quote it."""
    text = str(exc)
    if "@" in url and "://" in url:
        userinfo = url.split("://", 1)[1].split("@", 1)[0]
        password = userinfo.split(":", 1)[1] if ":" in userinfo else userinfo
        if password:
            text = text.replace(password, "***")
    return text


def _safe_url(url: str) -> str:
    """The URL without its password (it never goes into a message)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
