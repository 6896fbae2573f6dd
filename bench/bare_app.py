"""The baseline: a bare FastAPI endpoint that reads the body and answers ``{"cards": []}``.

Same framework, server and load as the real service, none of the work: the ratio of our
throughput to this one's is what the benchmark reports.

    uvicorn bench.bare_app:app --workers N
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI(title="bare baseline")


@app.post("/cds-services/{service_id}")
async def call(service_id: str, request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"cards": []})


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
