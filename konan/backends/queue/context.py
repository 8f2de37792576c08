"""What a task needs from its process (settings, a session factory), set once by the worker.

Tasks receive ids and open their own unit of work from here, so a retried or redelivered task
starts from the database's current state.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from konan.core.settings import Settings


@dataclass(frozen=True)
class TaskContext:
    settings: Settings
    session_factory: sessionmaker[Session]


_context: TaskContext | None = None


def set_task_context(context: TaskContext | None) -> None:
    global _context
    _context = context


def task_context() -> TaskContext:
    if _context is None:
        # First task in this process: build from the environment (the worker's own settings).
        from konan.core.settings import load_settings
        from konan.db.engine import make_engine, make_session_factory

        settings = load_settings()
        engine = make_engine(settings.database_url, settings)
        set_task_context(TaskContext(settings, make_session_factory(engine)))
    assert _context is not None
    return _context
