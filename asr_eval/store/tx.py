"""The one way the store is written: ``transaction(con)`` commits on success and rolls back on
any exception, so a caller's connection is never left inside an open transaction, and
``replace_rows`` swaps a key range of a table for new rows atomically (re-analysis is idempotent).

Every writer in the library (corpus/model/hypothesis loaders, scoring, slice metrics,
comparisons, gates, training logs, alerts, migrations) goes through these two functions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
import pyarrow as pa


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """``with transaction(con): …`` — BEGIN, then COMMIT, or ROLLBACK and re-raise."""
    con.execute("BEGIN")
    try:
        yield con
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:  # the transaction may already be aborted by the failing statement
            pass
        raise
    con.execute("COMMIT")


def insert_arrow(con: duckdb.DuckDBPyConnection, table: str, data: pa.Table, mode: str = "INSERT") -> None:
    """``INSERT [OR REPLACE] INTO table (cols of data) SELECT … FROM data`` (call inside a transaction)."""
    name = f"_ins_{table}"
    con.register(name, data)
    try:
        cols = ", ".join(data.column_names)
        con.execute(f"{mode} INTO {table} ({cols}) SELECT {cols} FROM {name}")
    finally:
        con.unregister(name)


def replace_rows(con: duckdb.DuckDBPyConnection, table: str, where: str, params: Sequence[Any],
                 rows: list[dict[str, Any]] | pa.Table) -> int:
    """Delete ``table``'s rows matching ``where`` and insert ``rows``, in one transaction."""
    data = rows if isinstance(rows, pa.Table) else (pa.Table.from_pylist(rows) if rows else None)
    with transaction(con):
        con.execute(f"DELETE FROM {table} WHERE {where}", list(params))
        if data is not None and data.num_rows:
            insert_arrow(con, table, data)
    return 0 if data is None else data.num_rows
