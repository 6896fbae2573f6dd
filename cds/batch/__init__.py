"""Population sweeps: the hook pipeline over a whole FHIR Bulk Data export.

A hook catches a problem when a clinician touches an order; a sweep finds the patients
nobody is touching (a year on 60 mg/day while their kidney function fell, an intrathecal
refill that slipped) and puts them on the pharmacists' worklist. ``cds sweep EXPORT_DIR``
reads the NDJSON files, groups them by patient, builds for each patient exactly the
``patient-view`` input a hook call would carry and runs the same pipeline
(``cds.hooks.pipeline.evaluate``); the cards are stored as alerts in the review console,
deduplicated against the open alerts.

Modules, one job each:

- ``files``: which export files to read, their type and SHA-256;
- ``lines``: what makes a line usable, and for which patient (the specification);
- ``duck``: the embedded reader (DuckDB): number, classify, group by patient;
- ``chart``: a patient's records -> the patient-view input (date windows only);
- ``evaluate``: the one evaluation path, run in worker processes;
- ``spark``: the Spark engine (the only importer of pyspark, imported lazily);
- ``run``: one run: the run record, an engine, batch commits, interruption, resume;
- ``output``: the worklist as CSV or Parquet, bad lines as CSV;
- ``population``: a synthetic export built with the testing kit (tests, benchmarks).
"""
