"""Files a sweep writes: the worklist (CSV or Parquet, by extension) and the bad lines (CSV).

Cells a spreadsheet would run as formulas are quoted, as the console's CSV export does:
a summary is text, never a formula. Parquet goes through DuckDB (already loaded for the
read), so no Arrow dependency is needed.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class OutputError(ValueError):
    """An output path the sweep cannot write (unknown extension)."""


def _cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows([_cell(r.get(c)) for c in columns] for r in rows)


def write_parquet(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    import duckdb

    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        cols = ", ".join(f'"{c}" VARCHAR' for c in columns)
        con.execute(f"CREATE TABLE t ({cols})")
        if rows:
            marks = ", ".join("?" for _ in columns)
            con.executemany(
                f"INSERT INTO t VALUES ({marks})",
                [[None if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows],
            )
        target = str(path).replace("'", "''")
        con.execute(f"COPY t TO '{target}' (FORMAT parquet)")
    finally:
        con.close()


def check_table_path(path: Path) -> str:
    """``csv`` or ``parquet`` from the extension; anything else is refused up front."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise OutputError(f"{path.name}: write the worklist as .csv or .parquet")


def write_table(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    if check_table_path(path) == "csv":
        write_csv(path, columns, rows)
    else:
        write_parquet(path, columns, rows)
