"""uvicorn entry point (``factory=True``): each worker process builds its own app."""

from __future__ import annotations

import gc

from fastapi import FastAPI

from cds.settings import Settings
from cds.web.app import create_app

#: Allocations between young-generation collections (CPython's default is 700). A hook call
#: allocates some 20,000 containers (decoded JSON, FHIR models, facts), so the default ran
#: ~30 collections per call, each walking everything the call still held.
GC_YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    """The garbage collector for a long-running server (measured by ``bench/account.py``:
    0.2-0.6 ms of CPU per typical call before).

    Everything loaded at start (the FHIR models, the compiled packs, SQLAlchemy, FastAPI)
    lives as long as the process: ``gc.freeze`` moves it out of every collection, so a
    full collection walks only what calls allocated since. Young collections run less
    often (``GC_YOUNG_THRESHOLD``); reference counting still frees everything that holds
    no cycle at once, so memory does not grow with it.
    """
    import fhir.resources.R4B.medicationrequest  # noqa: F401 - loaded before the freeze
    import fhir.resources.R4B.patient  # noqa: F401

    gc.collect()
    gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, g1, g2)


def app() -> FastAPI:
    application = create_app(Settings())
    tune_gc()
    return application
