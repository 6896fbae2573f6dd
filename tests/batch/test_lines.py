"""The line rules: the DuckDB SQL and the Python specification must agree, line for line.

The Spark engine classifies with ``cds.batch.lines.classify``; the DuckDB engine with SQL.
This corpus holds the awkward lines real exports contain (a byte order mark, CRLF, blank
lines, truncated JSON, NaN, non-objects, wrong types, absolute and versioned references,
invalid UTF-8), and both must classify each the same way and number it the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds.batch.duck import DuckReader, newline_count
from cds.batch.files import discover, type_from_name
from cds.batch.lines import Line, classify, decode

CORPUS: list[bytes] = [
    b'\xef\xbb\xbf{"resourceType":"Patient","id":"p1"}',
    b'{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/p1"}}',
    b"not json",
    b"",
    b"   ",
    b"42",
    b"[1,2]",
    b'"str"',
    b"null",
    b'{"a":1} trailing',
    b'{"a":1}{"b":2}',
    b'{"resourceType":"Observation","id":"n","subject":{"reference":"Patient/p1"},'
    b'"valueQuantity":{"value":NaN}}',
    b'{"resourceType":"Observation","id":"i","subject":{"reference":"Patient/p1"},'
    b'"valueQuantity":{"value":-Infinity}}',
    b'{"resourceType":"Observation","subject":{"reference":"Patient/\xff"}}',
    b'{"resourceType":"Observation","id":"o3","subject":{"reference":"Patient/p1"},'
    b'"x":"caf\xc3\xa9 \\u00e9"}',
    b'{"resourceType":5}',
    b'{"resourceType":""}',
    b'{"id":"x"}',
    b'{"resourceType":"Claim","id":"c"}',
    b'{"resourceType":"Patient"}',
    b'{"resourceType":"Patient","id":""}',
    b'{"resourceType":"Patient","id":7}',
    b'{"resourceType":"Medication","code":{}}',
    b'{"resourceType":"Medication","id":"m1"}',
    b'{"resourceType":"Observation","id":"o5"}',
    b'{"resourceType":"Observation","id":"o6","subject":{"reference":"Group/g"}}',
    b'{"resourceType":"Observation","id":"o7","subject":"Patient/p1"}',
    b'{"resourceType":"Observation","id":"o8","subject":{"reference":5},'
    b'"patient":{"reference":"Patient/p2"}}',
    b'{"resourceType":"Observation","id":"o9","subject":'
    b'{"reference":"https://ehr.example/fhir/Patient/p3/_history/2"}}',
    b'{"resourceType":"MedicationRequest","id":"r1","subject":{"reference":"Patient/p1"},'
    b'"medicationReference":{"reference":"Medication/m1"}}',
    b'{"resourceType":"MedicationStatement","id":"s1","subject":{"reference":"Patient/p1"},'
    b'"medication":{"reference":{"reference":"Medication/m1"}}}',
    b'{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p 1"}}',
    b'{"resourceType":"Observation","id":"o10","subject":[{"reference":"Patient/p1"}]}',
    b'\t{"resourceType":"Patient","id":"p4"}  ',
    b'{"resourceType":"AllergyIntolerance","id":"a1","patient":{"reference":"Patient/p1"}}',
    b'{"resourceType":"Encounter","id":"e1","subject":{"reference":"Patient/p1"},'
    b'"note":"a line with the \x1f\x1e separator bytes"}',
    b'{"resourceType":"Procedure","id":"pr1","subject":{"reference":"Patient/p1"}}\r',
]


def _status(line: Line) -> str:
    if line.kind == "bad":
        return str(line.reason)
    if line.kind == "skip":
        return "blank" if line.resource_type is None else "skip"
    return "ok"


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "Mixed.ndjson").write_bytes(b"\n".join(CORPUS) + b"\n")
    return folder


def test_duckdb_sql_and_python_classify_every_line_alike(corpus_dir: Path, tmp_path: Path) -> None:
    files, _ = discover(corpus_dir)
    reader = DuckReader(files, tmp_path / "work", threads=2, memory_limit="512MB")
    try:
        stats = reader.load()
        sql_bad = {line: reason for _, line, reason in stats.bad}
        python_bad = {}
        python_keys: dict[str, set[int]] = {}
        for n, raw in enumerate(CORPUS, start=1):
            line = classify(raw.decode("utf-8", errors="replace"))
            if line.kind == "bad":
                python_bad[n] = line.reason
            elif line.kind == "patient":
                python_keys.setdefault(str(line.key), set()).add(n)
        assert sql_bad == python_bad
        assert stats.lines == len(CORPUS)
        assert stats.skipped_types == {"Claim": 1, "AllergyIntolerance": 1}
        assert stats.blank == 2
        assert stats.reread_in_python == [0]  # the separator bytes and the lone CR
        sql_keys: dict[str, set[int]] = {}
        for key, rows in reader.patients(reader.patient_keys()):
            sql_keys[key] = {n for _, n, _ in rows}
        medication_line = 24
        python_keys["p1"].add(medication_line)  # joined to the orders that reference it
        assert sql_keys == python_keys
    finally:
        reader.close()
    assert not (tmp_path / "work").exists()


def test_decode_refuses_what_the_hook_route_refuses() -> None:
    ok = '{"resourceType":"Patient","id":"p1"}'
    assert decode(ok, latin1=False)[0] == {"resourceType": "Patient", "id": "p1"}
    assert decode("\ufeff" + ok, latin1=False)[0] is not None
    assert decode('{"a":NaN}', latin1=False) == (None, "invalid-json")
    assert decode("[1]", latin1=False) == (None, "not-an-object")
    assert decode('{"a":"\ufffd"}', latin1=False) == (None, "not-utf8")
    utf8 = json.dumps({"x": "café"}, ensure_ascii=False).encode().decode("latin-1")
    assert decode(utf8, latin1=True)[0] == {"x": "café"}
    assert decode(b'{"x":"caf\xe9"}'.decode("latin-1"), latin1=True) == (None, "not-utf8")
    bom = (b"\xef\xbb\xbf" + ok.encode()).decode("latin-1")
    assert decode(bom, latin1=True)[0] is not None


@pytest.mark.parametrize(
    ("name", "rtype"),
    [
        ("Patient.ndjson", "Patient"),
        ("Observation.000.ndjson", "Observation"),
        ("1.Observation.ndjson", "Observation"),
        ("MedicationRequest-2.ndjson", "MedicationRequest"),
        ("ExplanationOfBenefit.000.ndjson", "ExplanationOfBenefit"),
        ("export-1.ndjson", None),
        ("Mixed.ndjson", None),
    ],
)
def test_type_from_file_name(name: str, rtype: str | None) -> None:
    assert type_from_name(name) == rtype


def test_files_of_types_not_read_are_listed_not_opened(tmp_path: Path) -> None:
    (tmp_path / "Claim.000.ndjson").write_text('{"resourceType":"Claim"}\n')
    (tmp_path / "Patient.ndjson").write_text('{"resourceType":"Patient","id":"p"}\n')
    (tmp_path / "notes.txt").write_text("not an export file")
    files, skipped = discover(tmp_path)
    assert [Path(f.path).name for f in files] == ["Patient.ndjson"]
    assert skipped == ["Claim.000.ndjson"]
    assert files[0].resource_type == "Patient" and len(files[0].sha256) == 64


def test_newline_count_counts_a_last_line_without_newline(tmp_path: Path) -> None:
    f = tmp_path / "x.ndjson"
    f.write_bytes(b"a\nb\n\nc")
    assert newline_count(f) == 4
    f.write_bytes(b"")
    assert newline_count(f) == 0
