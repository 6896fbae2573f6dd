"""The embedded reader: DuckDB numbers, classifies and groups the export's lines by patient.

Why DuckDB: an export is gigabytes of NDJSON in files per type, and a patient's records are
spread over all of them. DuckDB reads the files in parallel, keeps each line as JSON text,
pulls out the few fields the grouping needs with its JSON functions, and sorts by patient
on disk (its database file lives in a work folder, so memory stays bounded). Python then
fetches whole patients in key ranges and hands them to the pool.

Every line keeps its file and line number, so a bad one is reported where it is. The
files are read as Latin-1 (one character per byte: no line can fail to decode, so no line
is lost and the numbering is exact); ``cds.batch.lines.decode`` re-decodes UTF-8 in the
worker. The rules the SQL applies are ``cds.batch.lines``' (the tests hold them equal). A
file whose row count disagrees with its newline count (a line holding the separator
bytes ``0x1F 0x1E``, never seen in real JSON) is re-read line by line in Python instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cds.batch.evaluate import Row
from cds.batch.files import ExportFile
from cds.batch.lines import MEDICATION_REF, PATIENT_REF, READ_TYPES

log = logging.getLogger("cds.batch")

_DELIM = "\x1f\x1e"
_NAN = r"[:,\[]\s*-?(NaN|Infinity)\s*[,\]}]"
_MAX_LINE = 32 * 1024 * 1024  # longer lines are read by the Python fallback
_BOM = "\u00ef\u00bb\u00bf"  # the UTF-8 byte order mark read as Latin-1


def _sql_list(values: frozenset[str] | list[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in sorted(values))


_CLASSIFY = f"""
CREATE TABLE cls AS
WITH src AS (
  SELECT file_id, lineno,
         CASE WHEN lineno = 1 AND starts_with(text, '{_BOM}') THEN substr(text, 4)
              ELSE text END AS t
  FROM raw
), valid AS (
  -- j: the text when it is one JSON value, else NULL (JSON functions raise on bad text,
  -- and DuckDB may evaluate both sides of an AND, so nothing below reads t as JSON)
  SELECT *, t IS NULL OR trim(t) = '' AS blank,
         CASE WHEN t IS NOT NULL AND trim(t) <> '' AND json_valid(t)
                   AND NOT regexp_matches(t, '{_NAN}') THEN t END AS j
  FROM src
), obj AS (
  SELECT *, coalesce(json_type(j), '') = 'OBJECT' AS is_obj FROM valid
), typed AS (
  SELECT *,
    CASE WHEN json_type(o, '$.resourceType') = 'VARCHAR'
         THEN json_extract_string(o, '$.resourceType') END AS rtype,
    CASE WHEN json_type(o, '$.id') = 'VARCHAR' THEN json_extract_string(o, '$.id') END AS rid,
    CASE WHEN json_type(o, '$.subject.reference') = 'VARCHAR'
           THEN json_extract_string(o, '$.subject.reference')
         WHEN json_type(o, '$.patient.reference') = 'VARCHAR'
           THEN json_extract_string(o, '$.patient.reference') END AS pref,
    CASE WHEN json_type(o, '$.medicationReference.reference') = 'VARCHAR'
           THEN json_extract_string(o, '$.medicationReference.reference')
         WHEN json_type(o, '$.medication.reference.reference') = 'VARCHAR'
           THEN json_extract_string(o, '$.medication.reference.reference') END AS mref
  FROM (SELECT *, CASE WHEN is_obj THEN j END AS o FROM obj)
)
SELECT file_id, lineno, t AS text, rtype,
  CASE
    WHEN blank THEN 'blank'
    WHEN j IS NULL THEN 'invalid-json'
    WHEN NOT is_obj THEN 'not-an-object'
    WHEN rtype IS NULL OR rtype = '' THEN 'no-resource-type'
    WHEN rtype NOT IN ({_sql_list(READ_TYPES)}) THEN 'skip'
    WHEN rtype IN ('Patient', 'Medication') AND (rid IS NULL OR rid = '')
      THEN lower(rtype) || '-without-id'
    WHEN rtype NOT IN ('Patient', 'Medication')
         AND coalesce(regexp_extract(pref, '{PATIENT_REF}', 1), '') = ''
      THEN 'no-patient-reference'
    ELSE 'ok' END AS status,
  CASE WHEN rtype IN ('Patient', 'Medication') THEN rid
       ELSE nullif(regexp_extract(pref, '{PATIENT_REF}', 1), '') END AS key,
  CASE WHEN rtype IN ('MedicationRequest', 'MedicationStatement')
       THEN nullif(regexp_extract(mref, '{MEDICATION_REF}', 1), '') END AS medref
FROM typed
"""

_GROUPED = """
CREATE TABLE grouped AS
SELECT key, file_id, lineno, text FROM (
  SELECT key, file_id, lineno, text FROM cls WHERE status = 'ok' AND rtype <> 'Medication'
  UNION
  SELECT DISTINCT g.key, m.file_id, m.lineno, m.text
  FROM cls g JOIN cls m ON g.medref = m.key
  WHERE g.status = 'ok' AND g.medref IS NOT NULL AND m.status = 'ok' AND m.rtype = 'Medication'
) ORDER BY key, file_id, lineno
"""


@dataclass
class ReadStats:
    """What the reader saw, for the run record and the summary."""

    lines: int = 0
    blank: int = 0
    usable: int = 0
    skipped_types: dict[str, int] = field(default_factory=dict)
    bad: list[tuple[int, int, str]] = field(default_factory=list)  # (file, line, reason)
    reread_in_python: list[int] = field(default_factory=list)  # file indexes


def newline_count(path: Path, chunk: int = 1 << 22) -> int:
    """Lines as a reader splitting on ``\\n`` sees them (a last line without one counts)."""
    count, last = 0, b"\n"
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (0 if last == b"\n" else 1)


class DuckReader:
    """Reads an export into a DuckDB work database and serves whole patients in key order."""

    def __init__(
        self, files: list[ExportFile], work_dir: Path, *, threads: int, memory_limit: str
    ) -> None:
        import duckdb

        self.files = files
        self.work_dir = work_dir
        self._made_dir = not work_dir.exists()
        work_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = work_dir / "sweep.duckdb"
        for stale in (self.db_path, Path(f"{self.db_path}.wal")):
            stale.unlink(missing_ok=True)
        self.con = duckdb.connect(str(self.db_path))
        self.con.execute(f"SET threads = {max(1, int(threads))}")
        self.con.execute(f"SET memory_limit = '{memory_limit}'")
        self.con.execute(f"SET temp_directory = '{work_dir / 'spill'}'")
        self.con.execute("SET preserve_insertion_order = true")
        self.con.execute("SET enable_progress_bar = false")  # the CLI draws its own

    def close(self) -> None:
        import shutil

        self.con.close()
        for path in (self.db_path, Path(f"{self.db_path}.wal")):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.work_dir / "spill", ignore_errors=True)
        if self._made_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def load(self) -> ReadStats:
        """Read, number and classify every line; group the usable ones by patient."""
        import duckdb

        con = self.con
        con.execute("CREATE TABLE files (file_id INTEGER, path VARCHAR)")
        con.executemany(
            "INSERT INTO files VALUES (?, ?)", list(enumerate(f.path for f in self.files))
        )
        con.execute("CREATE TABLE raw (file_id INTEGER, lineno BIGINT, text VARCHAR)")
        stats = ReadStats()
        try:
            self._read(list(range(len(self.files))))
        except duckdb.Error:  # a line over the size cap, an unreadable file: one at a time
            con.execute("DELETE FROM raw")
            for i, f in enumerate(self.files):
                try:
                    self._read([i])
                except duckdb.Error:
                    self._reread(i, Path(f.path))
                    stats.reread_in_python.append(i)
        counted = dict(con.execute("SELECT file_id, count(*) FROM raw GROUP BY file_id").fetchall())
        for i, f in enumerate(self.files):
            if i in stats.reread_in_python:
                continue
            if counted.get(i, 0) != newline_count(Path(f.path)):
                self._reread(i, Path(f.path))
                stats.reread_in_python.append(i)
        con.execute(_CLASSIFY)
        con.execute("DROP TABLE raw")
        for status, rtype, n in con.execute(
            "SELECT status, rtype, count(*) FROM cls GROUP BY ALL"
        ).fetchall():
            stats.lines += n
            if status == "blank":
                stats.blank += n
            elif status == "ok":
                stats.usable += n
            elif status == "skip":
                stats.skipped_types[str(rtype)] = stats.skipped_types.get(str(rtype), 0) + n
        stats.bad = [
            (int(f), int(n), str(s))
            for f, n, s in con.execute(
                "SELECT file_id, lineno, status FROM cls "
                "WHERE status NOT IN ('ok', 'skip', 'blank') ORDER BY file_id, lineno"
            ).fetchall()
        ]
        con.execute(_GROUPED)
        con.execute("DROP TABLE cls")
        return stats

    def _read(self, file_ids: list[int]) -> None:
        if not file_ids:
            return
        paths = "[" + _sql_list([self.files[i].path for i in file_ids]) + "]"
        self.con.execute(
            f"""
            INSERT INTO raw
            SELECT f.file_id, r.ordinality - min(r.ordinality) OVER (PARTITION BY r.filename) + 1,
                   r.line
            FROM read_csv({paths}, columns = {{'line': 'VARCHAR'}}, delim = '{_DELIM}',
                          quote = '', escape = '', header = false, auto_detect = false,
                          filename = true, strict_mode = false, null_padding = false,
                          max_line_size = {_MAX_LINE}, encoding = 'latin-1')
                 WITH ORDINALITY r
            JOIN files f ON f.path = r.filename
            """
        )

    def _reread(self, file_id: int, path: Path) -> None:
        """Exact line numbering for a file DuckDB's line splitting disagreed with."""
        log.warning(
            "input file #%d re-read line by line in Python (DuckDB split it otherwise)", file_id
        )
        self.con.execute("DELETE FROM raw WHERE file_id = ?", [file_id])
        batch: list[tuple[int, int, str | None]] = []
        with path.open("rb") as fh:
            for n, raw in enumerate(fh, start=1):
                text = raw.rstrip(b"\n").rstrip(b"\r").decode("latin-1")
                batch.append((file_id, n, text or None))
                if len(batch) >= 10_000:
                    self.con.executemany("INSERT INTO raw VALUES (?, ?, ?)", batch)
                    batch = []
        if batch:
            self.con.executemany("INSERT INTO raw VALUES (?, ?, ?)", batch)

    def patient_keys(self) -> list[str]:
        """Every patient (a Patient line, or resources referencing one), in key order."""
        rows = self.con.execute("SELECT DISTINCT key FROM grouped ORDER BY key").fetchall()
        return [k for (k,) in rows]

    def patients(self, keys: list[str]) -> Iterator[tuple[str, list[Row]]]:
        """Whole patients for ``keys`` (sorted, contiguous in key order), one range query."""
        if not keys:
            return
        wanted = set(keys)
        rows: Any = self.con.execute(
            "SELECT key, file_id, lineno, text FROM grouped WHERE key BETWEEN ? AND ? "
            "ORDER BY key, file_id, lineno",
            [keys[0], keys[-1]],
        ).fetchall()
        current: str | None = None
        group: list[Row] = []
        for key, file_id, lineno, text in rows:
            if key != current:
                if current is not None and current in wanted:
                    yield current, group
                current, group = key, []
            group.append((int(file_id), int(lineno), text))
        if current is not None and current in wanted:
            yield current, group
