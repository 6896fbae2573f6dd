"""``CDS_PACKS=baclofen,gabapentin cds serve``: both drugs over real HTTP (uvicorn), one
medication-safety service per hook running every pack, the prefetch their union, each card
naming its pack, and the baclofen-gabapentin pair one card (the baclofen pack's)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx

from cds.cards import card_extension
from tests.conftest import REPO
from tests.server import ServeProcess
from tests.web.test_sandbox_replay import shifted

VIGNETTES = REPO / "rules" / "gabapentin" / "vignettes" / "requests"
WRITTEN_ON = date(2026, 12, 15)  # the day the gabapentin cases describe


def _request(stem: str) -> dict:
    """The case moved by whole days to today (the server's clock is real)."""
    body = json.loads((VIGNETTES / f"{stem}.json").read_text())
    return shifted(body, timedelta(days=(datetime.now(UTC).date() - WRITTEN_ON).days))


def _cards(server: ServeProcess, body: dict) -> list[tuple[str, str, str]]:
    url = f"{server.base}/cds-services/medication-safety-{body['hook']}"
    r = httpx.post(url, json=body, timeout=20)
    assert r.status_code == 200, r.text
    return sorted(
        (c["source"]["topic"]["code"], c["indicator"], card_extension(c)["packId"])
        for c in r.json()["cards"]
    )


def test_two_packs_answer_both_drugs_over_http(tmp_path: Path) -> None:
    env = {
        "CDS_PACKS": "baclofen,gabapentin",
        "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'two.db'}",
        "CDS_AUTH": "off",
        "TMPDIR": str(tmp_path),
    }
    with ServeProcess(env, cwd=tmp_path) as server:
        services = httpx.get(f"{server.base}/cds-services").json()["services"]
        ids = sorted(s["id"] for s in services)
        assert ids == [
            "medication-safety-order-select",
            "medication-safety-order-sign",
            "medication-safety-patient-view",
        ]
        sign = next(s for s in services if s["id"] == "medication-safety-order-sign")
        # the prefetch is the union of what the packs read: the gabapentin pack's
        # suicide-risk screens beside the baclofen pack's vitals
        assert "screens" in sign["prefetch"] and "vitals" in sign["prefetch"]
        assert "44260-8" in sign["prefetch"]["screens"]

        # a gabapentin case (D6: CrCl 40, 600 mg TID) answered by the gabapentin pack
        assert _cards(server, _request("g007-d06-crcl40-600tid")) == [
            ("renal-adjustment", "warning", "gabapentin")
        ]
        # a baclofen example answered by the baclofen pack
        body = json.loads(
            (REPO / "fhir" / "examples" / "order-sign-above-ceiling.json").read_text()
        )
        packs = {p for _c, _i, p in _cards(server, body)}
        assert packs == {"baclofen"}
        # the pair: chronic gabapentin and a new baclofen start give exactly one card, the
        # baclofen pack's (the gabapentin pack's own rule for the pair stays silent)
        assert _cards(server, _request("g026-d17-baclofen-pair")) == [
            ("interaction", "warning", "baclofen")
        ]
