"""The Spark engine (``cds sweep --engine spark``): the only module that imports pyspark.

For exports too large for one machine. Each file is read as text lines numbered with
``zipWithIndex`` (so a bad line is reported with its file and line, as the DuckDB engine
does), every line is classified by ``cds.batch.lines.classify`` (the specification the
DuckDB SQL follows), the usable lines are joined with the Medications they reference,
**repartitioned by patient**, sorted within each partition, and whole partitions are
evaluated with ``mapInPandas``: each Python worker compiles the packs once and walks its
partition patient by patient through ``cds.batch.evaluate.evaluate_patient``, the same
function the process pool calls. (Grouping many tiny per-patient groups with
``groupByKey`` or ``groupBy().applyInPandas`` was measured far slower on this kind of
machine: 200k patients did not finish in 10 minutes, against 35 s this way.)

The evaluated partitions are persisted, then streamed to the driver, which commits them in
batches like the DuckDB engine. Spark needs Java 17 or later (``java`` on the PATH or
``JAVA_HOME``); pyspark is imported lazily, so the rest of ``cds`` works without it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cds.batch.evaluate import PackSpec, PatientResult, Row, evaluate_patient, worker_packs
from cds.batch.lines import classify

_LINE_SCHEMA = (
    "file_id INT, lineno LONG, text STRING, status STRING, rtype STRING, key STRING, medref STRING"
)
_OUT_SCHEMA = "key STRING, payload STRING, packs STRING"


class SparkUnavailable(RuntimeError):
    """pyspark or a Java 17+ runtime is missing (the message says how to install them)."""


def java_version() -> int | None:
    """The major version of the ``java`` Spark would start, or None when there is none."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.path.exists(java):
        return None
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def check_available() -> None:
    """Raise SparkUnavailable with the fix when Spark cannot run here."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise SparkUnavailable("pyspark is not installed: pip install 'posologic[spark]'") from None
    version = java_version()
    if version is None or version < 17:
        found = "no Java runtime" if version is None else f"Java {version}"
        raise SparkUnavailable(
            f"Spark needs Java 17 or later ({found} found): install one "
            "(Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )


_SESSIONS: dict[str, Any] = {}


def get_session(master: str) -> Any:
    """One SparkSession per master for the life of the process (tests share it)."""
    session = _SESSIONS.get(master)
    if session is not None:
        return session
    check_available()
    # Workers must run this interpreter (the one with cds and the packs installed).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master(master)
        .appName("posologic-sweep")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", os.environ.get("CDS_SPARK_DRIVER_MEMORY", "2g"))
        .config("spark.python.worker.reuse", "true")
        .config("spark.sql.execution.pyspark.udf.faulthandler.enabled", "true")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    _SESSIONS[master] = session
    return session


def stop_sessions() -> None:
    for session in _SESSIONS.values():
        session.stop()
    _SESSIONS.clear()


def _classify_row(file_id: int, item: tuple[str, int]) -> tuple[Any, ...]:
    text, index = item
    line = classify(text)
    if line.kind == "bad":
        status = line.reason
    elif line.kind == "skip":
        status = "blank" if line.resource_type is None else "skip"
    else:
        status = "ok"
    return (file_id, index + 1, text, status, line.resource_type, line.key, line.medication_ref)


def _evaluate_partitions(spec: PackSpec, now: datetime) -> Any:
    """The mapInPandas function: whole patients in key order, carried across Arrow batches."""

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        packs = worker_packs(spec)
        packs_json = json.dumps(
            [
                {"id": p.id, "version": p.version, "profile": p.profile, "digest": p.digest}
                for p in packs
            ]
        )
        out: list[tuple[str, str]] = []
        current: str | None = None
        rows: list[Row] = []

        def flush() -> None:
            if current is not None:
                result = evaluate_patient(current, rows, packs=packs, now=now, latin1=False)
                out.append((current, json.dumps(result.to_payload())))

        def frame() -> Any:
            data = pd.DataFrame(
                {
                    "key": [k for k, _ in out],
                    "payload": [p for _, p in out],
                    "packs": [packs_json] * len(out),
                }
            )
            out.clear()
            return data

        for pdf in batches:
            for key, file_id, lineno, text in zip(
                pdf["key"], pdf["file_id"], pdf["lineno"], pdf["text"], strict=True
            ):
                if key != current:
                    flush()
                    current, rows = key, []
                rows.append((int(file_id), int(lineno), text))
            if len(out) >= 200:
                yield frame()
        flush()
        if out:
            yield frame()

    return run


@dataclass
class SparkStats:
    lines: int = 0
    blank: int = 0
    usable: int = 0
    patients: int = 0
    skipped_types: dict[str, int] = field(default_factory=dict)
    bad: list[tuple[int, int, str]] = field(default_factory=list)


class SparkSweep:
    """Read, group and evaluate an export on Spark; results streamed to the driver."""

    def __init__(self, paths: list[str], *, spec: PackSpec, now: datetime, master: str) -> None:
        self.paths = paths
        self.spec = spec
        self.now = now
        self.spark = get_session(master)
        self._cached: list[Any] = []
        self._evaluated: Any = None

    def load(self, *, done: set[str]) -> SparkStats:
        from pyspark.sql import functions as F

        spark = self.spark
        sc = spark.sparkContext
        rdds = [
            sc.textFile(path, minPartitions=1)
            .zipWithIndex()
            .map(lambda item, f=i: _classify_row(f, item))
            for i, path in enumerate(self.paths)
        ]
        if not rdds:
            lines = spark.createDataFrame([], _LINE_SCHEMA)
        else:
            union = sc.union(rdds)
            if union.getNumPartitions() > 4 * sc.defaultParallelism:  # many small files
                union = union.coalesce(4 * sc.defaultParallelism)
            lines = spark.createDataFrame(union, _LINE_SCHEMA)
        lines = lines.persist()
        self._cached.append(lines)
        stats = SparkStats()
        for row in lines.groupBy("status", "rtype").count().collect():
            stats.lines += row["count"]
            if row["status"] == "blank":
                stats.blank += row["count"]
            elif row["status"] == "ok":
                stats.usable += row["count"]
            elif row["status"] == "skip":
                stats.skipped_types[str(row["rtype"])] = row["count"]
        stats.bad = [
            (r["file_id"], r["lineno"], r["status"])
            for r in lines.filter(~F.col("status").isin("ok", "skip", "blank"))
            .select("file_id", "lineno", "status")
            .orderBy("file_id", "lineno")
            .collect()
        ]
        good = lines.filter(F.col("status") == "ok")
        own = good.filter(F.col("rtype") != "Medication").select(
            "key", "file_id", "lineno", "text", "medref"
        )
        meds = good.filter(F.col("rtype") == "Medication").select(
            F.col("key").alias("med_id"),
            F.col("file_id").alias("m_file"),
            F.col("lineno").alias("m_line"),
            F.col("text").alias("m_text"),
        )
        links = own.filter(F.col("medref").isNotNull()).select("key", "medref").distinct()
        linked = (
            links.join(meds, links["medref"] == meds["med_id"])
            .select(
                "key",
                F.col("m_file").alias("file_id"),
                F.col("m_line").alias("lineno"),
                F.col("m_text").alias("text"),
            )
            .distinct()
        )
        rows = own.select("key", "file_id", "lineno", "text").unionByName(linked)
        if done:
            skip = spark.createDataFrame([(k,) for k in sorted(done)], "key STRING")
            rows = rows.join(F.broadcast(skip), on="key", how="left_anti")
        partitions = max(2, sc.defaultParallelism * 4)
        evaluated = (
            rows.repartition(partitions, "key")
            .sortWithinPartitions("key", "file_id", "lineno")
            .mapInPandas(_evaluate_partitions(self.spec, self.now), _OUT_SCHEMA)
            .persist()
        )
        self._cached.append(evaluated)
        stats.patients = evaluated.count()  # evaluates every partition, in parallel
        self._evaluated = evaluated
        return stats

    def results(
        self, batch_size: int
    ) -> Iterator[tuple[list[PatientResult], list[dict[str, str]]]]:
        """The evaluated patients in batches for the driver to commit."""
        batch: list[PatientResult] = []
        packs: list[dict[str, str]] = []
        for row in self._evaluated.toLocalIterator():
            packs = json.loads(row["packs"])
            batch.append(PatientResult.from_payload(json.loads(row["payload"])))
            if len(batch) >= batch_size:
                yield batch, packs
                batch = []
        if batch:
            yield batch, packs

    def close(self) -> None:
        for df in self._cached:
            df.unpersist()
        self._cached.clear()
