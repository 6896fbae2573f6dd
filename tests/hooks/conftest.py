"""Fixtures for the prefetch and fallback-fetch tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fhirserver.fixture import fhir_server  # noqa: F401  (session fixture, re-exported)
from tests.hooks.faultserver import FaultServer, fault_server


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[FaultServer]:
    """A second origin: where redirects and off-base next links point. It must see nothing."""
    with fault_server() as server:
        yield server


@pytest.fixture(scope="module")
def faults(elsewhere: FaultServer) -> Iterator[FaultServer]:
    """The misbehaving FHIR server; its redirects lead to ``elsewhere``."""
    with fault_server(redirect_to=f"http://127.0.0.1:{elsewhere.port}/ok") as server:
        yield server
