"""Schemathesis against the app's own OpenAPI document, in process (ASGI).

Every generated request must get a documented, non-5xx answer whose body matches the schema
(the errors are OperationOutcomes, documented per status). The app runs on a migrated
SQLite file in a temporary folder, built when this module is collected. The longer CLI run
against a live server is in bench/README.md.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from cds.settings import Settings
from cds.store.db import upgrade
from cds.web.app import create_app
from tests.conftest import FIXED_NOW

_FOLDER = Path(tempfile.mkdtemp(prefix="cds-schemathesis-"))
atexit.register(shutil.rmtree, _FOLDER, True)
_URL = f"sqlite:///{_FOLDER / 'cds.db'}"
upgrade(_URL)
APP = create_app(Settings(auth="off", database_url=_URL), clock=lambda: FIXED_NOW)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_documented_operation(case: schemathesis.Case) -> None:
    response = case.call_and_validate()
    assert response.status_code < 500
