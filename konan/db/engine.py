"""Engine and session factory built once per process from settings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from konan.core.settings import Settings


def dumps_json(value: Any) -> str:
    """JSON text for JSON/JSONB parameters: orjson (several times faster than the stdlib, which
    psycopg and SQLite otherwise run once per JSON value), with the stdlib's results kept where
    the two differ. orjson refuses non-string keys and integers beyond 64 bits, which the stdlib
    accepts; and see `json_text`."""
    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value)
    return json_text(value, encoded)


def json_text(value: Any, encoded: bytes) -> str:
    """``encoded`` (``orjson.dumps(value)``) as text, or the stdlib's text when ``value`` holds
    NaN or +/-inf: orjson writes those as null, the stdlib as NaN/Infinity, which PostgreSQL
    refuses and SQLite stores; a value must not silently turn into null."""
    # A non-finite float comes out as null: only then is the slower check worth running.
    if b"null" in encoded and not _all_finite(value):
        return json.dumps(value)
    return encoded.decode()


def _all_finite(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    except TypeError:  # a type only orjson serializes (datetime, UUID): keep orjson's text
        return True
    return True


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy issue BEGIN itself (see _sqlite_begin): pysqlite's own implicit BEGIN
    # comes only before the first write, which lets a transaction read stale rows first.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    # WAL lets the server read while the worker and monitor write; busy_timeout waits on a lock
    # instead of failing at once; foreign keys are off by default in SQLite.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


WRITE_OPTION = "konan_write"


def _sqlite_begin(conn: Any) -> None:
    # A writing transaction takes SQLite's write lock at BEGIN, so its reads see the state it
    # will write over (lock-then-read, like SELECT … FOR UPDATE on PostgreSQL). Readers stay
    # deferred and never wait on writers (WAL).
    write = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def make_engine(url: str, settings: Settings | None = None) -> Engine:
    db = settings.database if settings is not None else None
    kwargs: dict[str, Any] = {
        "echo": db.echo if db else False,
        "future": True,
        "json_serializer": dumps_json,
    }
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
        if ":memory:" in url or url in ("sqlite://", "sqlite:///"):
            kwargs["poolclass"] = StaticPool
        engine = sa.create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.update(
        pool_pre_ping=True,  # a restarted PostgreSQL costs one failed ping, not a failed request
        pool_size=db.pool_size if db else 5,
        max_overflow=db.max_overflow if db else 10,
        pool_timeout=db.pool_timeout if db else 5.0,
    )
    if url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": 5}
    return sa.create_engine(url, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    # Every domain's mappings must be loaded before the first flush: a foreign key names a table
    # of another domain that this process may not have imported yet.
    import konan.db.metadata  # noqa: F401

    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)


def begin_write(session: Session) -> None:
    """Make the session's transactions writers (see above). Lazy: each begins at its first
    statement, so a request that commits early (before slow work) holds no lock during it."""
    bind = session.get_bind()
    if isinstance(bind, Engine) and bind.dialect.name == "sqlite":
        session.bind = bind.execution_options(**{WRITE_OPTION: True})


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One writing transaction: commit when the block ends normally, roll back on any error."""
    session = factory()
    begin_write(session)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
