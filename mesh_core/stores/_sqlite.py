"""SQLite: the embedded persistent store, safe for several processes on one host.

WAL mode lets readers and a writer work at once; every write is one short
``BEGIN IMMEDIATE`` transaction, so a process killed mid-write leaves the
database as it was before that transaction. Usage counters live in a ledger
keyed by model and period and are added with ``INSERT ... ON CONFLICT DO UPDATE
... RETURNING``: an atomic increment that also hands back the new totals.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from .._config import StorageConfig
from ._base import FORMAT, PersistedState, StateStore, StateStoreError, UsageCounters

_STORAGE = StorageConfig()
"""The configuration's defaults, which this store's are (written once, there)."""

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (model_id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pools (pool_id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS statuses (
    model_id TEXT PRIMARY KEY, data TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS usage (
    model_id TEXT NOT NULL, scope TEXT NOT NULL, period REAL NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0, tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0, PRIMARY KEY (model_id, scope, period));
INSERT OR IGNORE INTO meta (key, value) VALUES ('format', '1'), ('seq', '0');
"""

_ADD = """
INSERT INTO usage (model_id, scope, period, requests, tokens, cost) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (model_id, scope, period) DO UPDATE SET
    requests = requests + excluded.requests, tokens = tokens + excluded.tokens,
    cost = cost + excluded.cost
RETURNING requests, tokens, cost
"""


class SqliteStore(StateStore):
    shared = True
    name = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = _STORAGE.timeout) -> None:
        """``timeout``: how long one operation waits for another process's write
        transaction (SQLite's busy timeout) before it fails."""
        self.path = Path(path)
        self.timeout = timeout
        self._lock = threading.Lock()
        self.reopen()

    def reopen(self) -> None:
        """(Re)connect to the database file, creating its tables if needed."""
        where = str(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            self._db.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._tx():
                self._create()
            fmt = self._db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        except (sqlite3.OperationalError, OSError) as exc:  # locked, unreadable, no disk
            raise StateStoreError(
                f"{where}: cannot open the SQLite database ({exc})",
                details={"where": where, "unavailable": True},
            ) from None
        except sqlite3.DatabaseError as exc:
            raise StateStoreError(
                f"{where}: not a usable SQLite database ({exc})", details={"where": where}
            ) from None
        if fmt is None or int(fmt[0]) != FORMAT:
            raise StateStoreError(
                f"{where}: unknown state format {fmt!r}", details={"where": where}
            )

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    def _create(self) -> None:
        for statement in _SCHEMA.strip().split(";"):
            if statement.strip():
                self._db.execute(statement)

    class _Tx:
        def __init__(self, store: SqliteStore) -> None:
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            self.store._lock.acquire()
            try:  # BEGIN waits out the busy timeout when another process writes
                self.store._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.store._lock.release()
                raise
            return self.store._db

        def __exit__(self, exc_type: Any, *rest: Any) -> None:
            db = self.store._db
            try:
                if exc_type is None:
                    try:
                        db.execute("COMMIT")
                        return
                    except BaseException:
                        if db.in_transaction:
                            db.execute("ROLLBACK")
                        raise
                if db.in_transaction:
                    db.execute("ROLLBACK")
            finally:
                self.store._lock.release()

    def _tx(self) -> SqliteStore._Tx:
        return SqliteStore._Tx(self)

    # --- snapshot ---------------------------------------------------------------
    def load(self) -> PersistedState | None:
        where = str(self.path)
        try:
            with self._lock:
                models = self._db.execute("SELECT model_id, data FROM models").fetchall()
                pools = self._db.execute("SELECT pool_id, data FROM pools").fetchall()
            if not models and not pools:
                return None
            return PersistedState(
                models={mid: json.loads(data) for mid, data in models},
                pools={pid: json.loads(data) for pid, data in pools},
            )
        except sqlite3.OperationalError as exc:  # locked or unreadable: not corrupt
            raise StateStoreError(
                f"{where}: cannot read state ({exc})",
                details={"where": where, "unavailable": True},
            ) from None
        except (sqlite3.DatabaseError, ValueError, RecursionError) as exc:
            raise StateStoreError(
                f"{where}: cannot read state ({exc})", details={"where": where}
            ) from None

    def save(self, state: PersistedState) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT INTO models (model_id, data) VALUES (?, ?) "
                "ON CONFLICT (model_id) DO UPDATE SET data = excluded.data",
                [(mid, json.dumps(d)) for mid, d in state.models.items()],
            )
            db.executemany(
                "INSERT INTO pools (pool_id, data) VALUES (?, ?) "
                "ON CONFLICT (pool_id) DO UPDATE SET data = excluded.data",
                [(pid, json.dumps(d)) for pid, d in state.pools.items()],
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

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
        # ``token`` needs no bookkeeping here: a transaction whose COMMIT did not return
        # success was rolled back, so a failed addition was never applied.
        with self._tx() as db:
            q = db.execute(
                _ADD, (model_id, "quota", quota_period, requests, tokens, 0.0)
            ).fetchone()
            b = db.execute(_ADD, (model_id, "budget", budget_period, 0, 0, cost)).fetchone()
        return UsageCounters(q[0], q[1], b[2])

    def get_usage(self, model_id: str, quota_period: float, budget_period: float) -> UsageCounters:
        with self._lock:
            q = self._db.execute(
                "SELECT requests, tokens FROM usage "
                "WHERE model_id=? AND scope='quota' AND period=?",
                (model_id, quota_period),
            ).fetchone()
            b = self._db.execute(
                "SELECT cost FROM usage WHERE model_id=? AND scope='budget' AND period=?",
                (model_id, budget_period),
            ).fetchone()
        return UsageCounters(q[0] if q else 0, q[1] if q else 0, b[0] if b else 0.0)

    def publish_status(self, model_id: str, status: dict[str, Any]) -> int:
        with self._tx() as db:
            (seq,) = db.execute(
                "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='seq' RETURNING value"
            ).fetchone()
            db.execute(
                "INSERT INTO statuses (model_id, data, seq) VALUES (?, ?, ?) ON CONFLICT "
                "(model_id) DO UPDATE SET data = excluded.data, seq = excluded.seq",
                (model_id, json.dumps(status), int(seq)),
            )
        return int(seq)

    def statuses_since(self, seq: int) -> list[tuple[str, dict[str, Any], int]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT model_id, data, seq FROM statuses WHERE seq > ? ORDER BY seq", (seq,)
            ).fetchall()
        return [(mid, json.loads(data), s) for mid, data, s in rows]
