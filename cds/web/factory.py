"""uvicorn entry point (``factory=True``): each worker process builds its own app."""

from __future__ import annotations

from fastapi import FastAPI

from cds.settings import Settings
from cds.web.app import create_app


def app() -> FastAPI:
    return create_app(Settings())
