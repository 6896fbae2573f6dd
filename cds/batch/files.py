"""The files of a Bulk Data export: which to read, their type and their SHA-256.

``$export`` writes one or more NDJSON files per resource type (``Patient.ndjson``,
``Observation.000.ndjson``, ``Observation-2.ndjson``, ``1.Observation.ndjson``...). A file
whose name names a type the sweep does not read (``Claim``, ``ExplanationOfBenefit``: often
the largest files of an export) is listed but not opened; any other ``*.ndjson`` file is
read and each line's own ``resourceType`` decides. The hashes go into the run record, so
a resumed run can prove it reads the same export.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cds.batch.lines import READ_TYPES

_TYPE_IN_NAME = re.compile(r"(?:^|[._-])([A-Z][A-Za-z]+)(?=[._-]|$)")
_SUFFIXES = (".ndjson", ".ndjson.txt", ".jsonl")


@dataclass(frozen=True)
class ExportFile:
    path: str
    resource_type: str | None  # from the file name; None: mixed or unknown
    bytes: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@cache
def is_resource_type(name: str) -> bool:
    """A FHIR R4 resource type (fhir.resources ships one module per type)."""
    if name in READ_TYPES:
        return True
    try:
        return importlib.util.find_spec(f"fhir.resources.R4B.{name.lower()}") is not None
    except (ImportError, ValueError):
        return False


def type_from_name(name: str) -> str | None:
    """The FHIR resource type a file name names (``Observation.001.ndjson``), if any."""
    stem = name
    for suffix in _SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    for m in _TYPE_IN_NAME.finditer(stem):
        if is_resource_type(m.group(1)):
            return m.group(1)
    return None


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def discover(export_dir: Path) -> tuple[list[ExportFile], list[str]]:
    """(files to read, hashed; names of files skipped by their type), in name order."""
    if not export_dir.is_dir():
        raise FileNotFoundError(f"{export_dir} is not a folder")
    read: list[ExportFile] = []
    skipped: list[str] = []
    for path in sorted(p for p in export_dir.iterdir() if p.is_file()):
        if not path.name.lower().endswith(_SUFFIXES):
            continue
        rtype = type_from_name(path.name)
        if rtype is not None and rtype not in READ_TYPES:
            skipped.append(path.name)
            continue
        read.append(ExportFile(str(path.resolve()), rtype, path.stat().st_size, sha256_of(path)))
    return read, skipped
