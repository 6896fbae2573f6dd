"""Faults of a real socket-level FHIR server: each must fail the required key, and fast.

The EHR waits on us while we wait on its FHIR server, so every failure below must become a
412 (``PrefetchUnavailable``) within the deadline plus a small margin, never a hang, a 500 or
a token in a log line. Servers are real sockets on 127.0.0.1 (see faultserver.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from datetime import UTC, datetime

import pytest

from cds.errors import PrefetchUnavailable
from cds.hooks.fetch import FetchLimits
from cds.hooks.prefetch import PrefetchKey, ResolvedData, resolve_prefetch
from tests.hooks.faultserver import FaultServer

TOKEN = "fault-test-token-9b2d77"
DEADLINE = 1.0
# Slack for a loaded machine (2 cores shared with other suites); the hang faults take 10 s
# or more, so a fetch that ignored the deadline still fails clearly.
MARGIN = 2.5
LIMITS = FetchLimits(deadline_seconds=DEADLINE, connect_timeout=0.5, max_bytes=100_000)
PATIENT_KEY = {"patient": PrefetchKey("Patient/{{context.patientId}}", required=True)}
MEDS_KEY = {
    "medications": PrefetchKey("MedicationRequest?patient={{context.patientId}}", required=True)
}
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def resolve(base: str, keys: dict[str, PrefetchKey]) -> ResolvedData:
    """Resolve with nothing prefetched; the allowlist is the fault server's origin."""
    origin = base.rsplit("/", 1)[0]
    return asyncio.run(
        resolve_prefetch(
            keys=keys,
            prefetch={},
            context={"userId": "Practitioner/prac-1", "patientId": "p1"},
            fhir_server=base,
            access_token=TOKEN,
            allowlist=[origin],
            now=NOW,
            limits=LIMITS,
        )
    )


FAULTS = [
    # (fault path, keys, expected reason in the 412 message)
    ("slow-headers", PATIENT_KEY, "FHIR server timed out"),
    ("trickle", PATIENT_KEY, "FHIR server timed out"),
    ("html", PATIENT_KEY, "FHIR server sent text/html, not FHIR JSON"),
    ("garbage", PATIENT_KEY, "FHIR server sent a body that is not JSON"),
    ("not-fhir", PATIENT_KEY, "FHIR server sent JSON that is not a FHIR resource"),
    ("outcome", PATIENT_KEY, "FHIR server returned an OperationOutcome (processing)"),
    ("unauthorized", PATIENT_KEY, "FHIR server refused the access token (HTTP 401)"),
    ("notfound", MEDS_KEY, "FHIR server answered HTTP 404"),
    ("error500", PATIENT_KEY, "FHIR server answered HTTP 500"),
    ("big", MEDS_KEY, "response larger than 100000 bytes"),
    ("big-stream", MEDS_KEY, "response larger than 100000 bytes"),
    ("redirect", PATIENT_KEY, "FHIR server redirected (HTTP 302); redirects are not followed"),
]


@pytest.mark.parametrize(("fault", "keys", "reason"), FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_gives_412_within_the_deadline(
    faults: FaultServer,
    elsewhere: FaultServer,
    fault: str,
    keys: dict[str, PrefetchKey],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    elsewhere_before = len(elsewhere.requests)
    started = time.monotonic()
    with pytest.raises(PrefetchUnavailable) as caught:
        resolve(faults.base(fault), keys)
    elapsed = time.monotonic() - started

    key = next(iter(keys))
    assert str(caught.value) == f"required prefetch '{key}' could not be obtained: {reason}"
    assert caught.value.status == 412
    assert elapsed < DEADLINE + MARGIN, f"{fault}: {elapsed:.3f} s"
    assert faults.requests[-1].authorization == f"Bearer {TOKEN}"
    assert len(elsewhere.requests) == elsewhere_before  # redirects are not followed
    assert TOKEN not in caplog.text


def test_server_down_gives_412_at_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    base = f"http://127.0.0.1:{closed_port()}/fhir"
    started = time.monotonic()
    with pytest.raises(PrefetchUnavailable) as caught:
        resolve(base, PATIENT_KEY)
    elapsed = time.monotonic() - started
    assert str(caught.value) == (
        "required prefetch 'patient' could not be obtained: FHIR server unreachable"
    )
    assert elapsed < DEADLINE + MARGIN
    assert TOKEN not in caplog.text


def test_optional_faults_are_notes_and_the_required_key_still_served(
    faults: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """One broken key must not sink the others: optional failures become notes."""
    caplog.set_level(logging.DEBUG)
    keys = {
        "patient": PrefetchKey("Patient/{{context.patientId}}", required=True),
        "slow": PrefetchKey("Patient/{{context.patientId}}?fault=slow-headers"),
        "vitals": PrefetchKey("Observation?patient={{context.patientId}}&fault=notfound"),
    }
    started = time.monotonic()
    data = resolve(faults.base("ok"), keys)
    elapsed = time.monotonic() - started
    assert [r["id"] for r in data.resources] == ["p1"]
    assert data.no_data == {"slow", "vitals"}
    assert data.problems == [
        "slow: FHIR server timed out",
        "vitals: FHIR server answered HTTP 404",
    ]
    assert elapsed < DEADLINE + MARGIN
    assert not any(TOKEN in p for p in data.problems)
    assert TOKEN not in caplog.text


def test_next_link_to_another_origin_is_not_followed(
    faults: FaultServer, elsewhere: FaultServer
) -> None:
    keys = {"meds": PrefetchKey("MedicationRequest?patient={{context.patientId}}")}
    before = len(elsewhere.requests)
    data = resolve(faults.base("offbase-next"), keys)
    assert [r["id"] for r in data.resources] == ["p1"]
    assert data.problems == ["meds: next page link leaves the FHIR server base; paging stopped"]
    assert len(elsewhere.requests) == before


def test_deadline_is_shared_by_parallel_keys(faults: FaultServer) -> None:
    """Three stalled keys cost one deadline, not three."""
    keys = {
        f"k{i}": PrefetchKey(f"Patient/{{{{context.patientId}}}}?n={i}", required=(i == 0))
        for i in range(3)
    }
    started = time.monotonic()
    with pytest.raises(PrefetchUnavailable, match="'k0'.*timed out"):
        resolve(faults.base("slow-headers"), keys)
    assert time.monotonic() - started < DEADLINE + MARGIN
