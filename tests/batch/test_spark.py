"""The Spark engine against the default engine, on the same export, item for item.

A real local Spark (``local[2]``, one SparkSession for the whole test process). Spark needs
Java 17+: without it this skips and says how to enable it, except under CI=true, where
``scripts/test.sh`` installs a headless JRE and a missing one is a failure. Everything is
in one test so that only one JVM starts per test run.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from cds.batch.run import run_sweep
from cds.store import sweeps
from cds.store.models import Card
from cds.testing.population import SyntheticPatient, generate, write_export
from tests.batch.conftest import broken_export, make_maker, options
from tests.conftest import FIXED_NOW, skip_or_fail


def _spark_or_skip() -> None:
    from cds.batch.spark import SparkUnavailable, check_available

    try:
        check_available()
    except SparkUnavailable as exc:
        skip_or_fail(f"{exc}; then rerun to test the Spark engine")


def _worklist(maker, run_id: str) -> list[tuple[str, ...]]:  # type: ignore[no-untyped-def]
    with maker() as s:
        rows = sweeps.worklist(session=s, run_id=run_id)
    return sorted(
        (r["patient"], r["order_id"], r["rule"], r["category"], r["indicator"], r["status"],
         r["summary"])
        for r in rows
    )  # fmt: skip


def test_spark_and_duckdb_give_the_same_worklist(
    population: list[SyntheticPatient], tmp_path: Path
) -> None:
    _spark_or_skip()
    # the shared population with the bad lines, plus a few hundred more patients
    folder, _ = broken_export(tmp_path, population)
    more = list(generate(200, now=FIXED_NOW, seed=11, prefix="sp"))
    write_export(tmp_path / "more", more, lines_per_file=250)
    for f in (tmp_path / "more").iterdir():
        if not f.name.startswith("Medication."):
            f.rename(folder / f"x-{f.name}")

    duck_maker = make_maker(f"sqlite:///{tmp_path / 'duck.db'}")
    duck = run_sweep(options(folder, tmp_path, batch_size=50), maker=duck_maker)
    spark_maker = make_maker(f"sqlite:///{tmp_path / 'spark.db'}")
    spark = run_sweep(
        options(folder, tmp_path, engine="spark", batch_size=50, spark_master="local[2]"),
        maker=spark_maker,
    )
    assert duck.status == spark.status == "completed"
    assert spark.patients == duck.patients == 12 + 2 + 200
    assert spark.resources == duck.resources
    assert spark.lines == duck.lines
    assert spark.skipped_types == duck.skipped_types
    assert spark.alerts_new == duck.alerts_new > 40
    assert sorted((b.path, b.line, b.reason) for b in spark.bad) == sorted(
        (b.path, b.line, b.reason) for b in duck.bad
    )
    assert _worklist(spark_maker, spark.run_id) == _worklist(duck_maker, duck.run_id)
    with spark_maker() as s:
        engines = {c.source for c in s.scalars(select(Card))}
        assert engines == {"sweep"}
    with spark_maker() as s:
        run = sweeps.get_run(session=s, run_id=spark.run_id)
        assert run is not None and run.engine == "spark" and run.status == "completed"
