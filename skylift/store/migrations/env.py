"""Alembic environment: runs on the connection handed over by :func:`skylift.store.migrate`.

Also usable from the ``alembic`` CLI for writing new revisions, with
``-x url=sqlite:///path/to/skylift.db``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from skylift.store.tables import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite can only ALTER by copying the table
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("give the database with: alembic -x url=sqlite:///path/skylift.db ...")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


_main()
