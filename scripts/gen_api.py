"""Regenerate api/openapi.json and api/examples/ from the app (tests fail on drift)."""

from __future__ import annotations

import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def openapi() -> dict:
    from cds.settings import Settings
    from cds.store.db import make_memory_sessionmaker
    from cds.web.app import create_app

    app = create_app(
        Settings(auth="off", database_url="sqlite://"),
        maker=make_memory_sessionmaker(),
        announce_dev_mode=False,
    )
    return app.openapi()


def main() -> int:
    sys.path.insert(0, str(REPO))
    from cds.evaluate_file import evaluate_request

    api = REPO / "api"
    (api / "openapi.json").write_text(json.dumps(openapi(), indent=2, sort_keys=True) + "\n")
    out = api / "examples"
    out.mkdir(exist_ok=True)
    for src in sorted((REPO / "fhir" / "examples").glob("*.json")):
        body = json.loads(src.read_text())
        shutil.copy(src, out / src.name.replace(".json", ".request.json"))
        status, resp = evaluate_request(
            body, rules_dir=REPO / "rules", pack_ids=["baclofen"], profile="US", now=NOW
        )
        (out / src.name.replace(".json", f".response-{status}.json")).write_text(
            json.dumps(resp, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
