"""``create_app(settings)``: the FastAPI application, built explicitly (never at import).

Everything a request needs hangs off ``app.state``: settings, the database sessionmaker,
the pack registry, the JWT verifier (``None`` in development mode), a shared HTTP client
for the FHIR fallback, and the clock (tests pin it to replay a fixed instant).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from cds import __version__
from cds.engine.registry import PackRegistry
from cds.errors import ConfigError
from cds.hooks.shadow import start_sidecar
from cds.paths import data_dir
from cds.settings import Settings
from cds.store.audit import AuditWriter, RejectionLog
from cds.store.db import make_engine, make_sessionmaker
from cds.web.console.throttle import HashExecutor, RateLimiter
from cds.web.errors import OperationOutcome, install_error_handlers
from cds.web.hooks_api import router as hooks_router
from cds.web.middleware import SecurityHeaders
from cds.web.preflight import PreflightLogger
from cds.web.reload import start_reload

log = logging.getLogger("cds.web")
THREADS_PER_WORKER = 4
# httpx logs every request URL (with patient ids) at INFO: keep PHI out of the logs.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

DEV_WARNING = (
    "\n" + "!" * 78 + "\n"
    "!!  CDS_AUTH=off: DEVELOPMENT MODE. JWT authentication is DISABLED.             !!\n"
    "!!  Any caller can invoke the CDS services. Never run this way in production.   !!\n"
    + "!"
    * 78
)


def check_settings(settings: Settings, *, workers: int = 1) -> None:
    """Raise ``ConfigError`` (saying what to set) if these settings cannot work.

    Called by ``cds serve`` before any worker starts (a message and exit status 2, no
    traceback) and by ``create_app`` itself.
    """
    hooks_served = settings.console != "only"
    if settings.auth == "jwt" and hooks_served:
        if settings.trusted_issuers is None:
            raise ConfigError(
                "CDS_AUTH=jwt needs CDS_TRUSTED_ISSUERS (a JSON file of trusted issuers and "
                "their JWKS); for local development set CDS_AUTH=off"
            )
        if not settings.public_base_url:
            raise ConfigError(
                "CDS_AUTH=jwt needs CDS_PUBLIC_BASE_URL: the base URL the EHR calls, e.g. "
                "https://cds.hospital.example (the JWT 'aud' is checked against it, never "
                "against the Host header)"
            )
        check_public_base_url(settings.public_base_url)
        if workers > 1 and not settings.redis_url:
            raise ConfigError(
                f"CDS_AUTH=jwt with {workers} workers needs CDS_REDIS_URL: each worker would "
                "otherwise keep its own JWT replay cache and accept a replayed token once per "
                "worker (set CDS_REDIS_URL, or run one worker)"
            )
    if settings.api_docs and settings.console == "on" and settings.auth == "jwt":
        log.warning(
            "CDS_API_DOCS=true: /docs and /redoc load JavaScript from a CDN on the console's "
            "origin; serve the console on its own port (cds serve --console-port)"
        )


def check_public_base_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"CDS_PUBLIC_BASE_URL must be an absolute http(s) URL, e.g. "
            f"https://cds.hospital.example (got {url[:200]!r})"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError("CDS_PUBLIC_BASE_URL must have no query, fragment or credentials")


def make_verifier(settings: Settings) -> Any:
    if settings.auth == "off" or settings.console == "only":
        return None
    from cds.web.auth import JwksCache, TokenVerifier, load_trusted_issuers
    from cds.web.replay import make_replay_cache

    assert settings.trusted_issuers is not None  # check_settings
    try:
        issuers = load_trusted_issuers(settings.trusted_issuers)
    except ValueError as exc:
        raise ConfigError(f"CDS_TRUSTED_ISSUERS: {exc}") from None
    return TokenVerifier(issuers, JwksCache(), make_replay_cache(settings.redis_url))


def create_app(
    settings: Settings | None = None,
    *,
    registry: PackRegistry | None = None,
    clock: Callable[[], datetime] | None = None,
    maker: Any = None,
    announce_dev_mode: bool = True,
) -> FastAPI:
    settings = settings or Settings()
    check_settings(settings)
    if registry is None:
        registry = PackRegistry(
            rules_dir=settings.rules_dir or data_dir("rules"),
            pack_ids=settings.pack_ids,
            profile=settings.profile,
        )
        registry.load()
    verifier = make_verifier(settings)
    if verifier is None and announce_dev_mode and settings.console != "only":
        log.warning(DEV_WARNING)
    engine = None
    if maker is None:
        engine = make_engine(settings.database_url)
        maker = make_sessionmaker(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # CPU-bound work under one GIL: a few threads per worker beat anyio's default 40
        # (measured: CPU per call grew from 10 to 15 ms at 64 connections); scale with
        # processes (cds serve --workers) instead.
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS_PER_WORKER
        app.state.http = httpx.AsyncClient(follow_redirects=False)
        reloader = start_reload(app.state.registry, settings.redis_url)
        # kept requests purged past retention; the sidecar (kept requests, shadow packs)
        app.state.sidecar = await anyio.to_thread.run_sync(
            lambda: start_sidecar(settings, maker, in_process=engine is None, registry=registry)
        )
        try:
            yield
        finally:
            if app.state.sidecar is not None:
                await anyio.to_thread.run_sync(app.state.sidecar.stop)
            reloader.stop()
            await app.state.http.aclose()
            app.state.hash_executor.shutdown()
            app.state.rejections.flush()
            if engine is not None:
                engine.dispose()

    app = FastAPI(
        title="CDS Hooks service",
        version=__version__,
        description=(
            "CDS Hooks 2.0 service (with CDS Hooks 3.0 additions) answering order-select, "
            "order-sign and patient-view with cards from versioned rule packs. Every error "
            "body is a FHIR OperationOutcome."
        ),
        lifespan=lifespan,
        separate_input_output_schemas=False,
        # Off unless asked for: their pages load JavaScript from a CDN (hardening #17).
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
    )
    app.state.settings = settings
    app.state.maker = maker
    app.state.audit = AuditWriter(maker)  # group commit of the hook calls' audit records
    app.state.registry = registry
    app.state.verifier = verifier
    app.state.clock = clock
    app.state.http = None
    app.state.sidecar = None  # started with the app (lifespan); see cds.hooks.shadow
    app.state.session_secret = settings.session_secret_value() or secrets.token_urlsafe(32)
    app.state.rejections = RejectionLog(
        maker,
        aggregate_seconds=settings.rejection_aggregate_seconds,
        retention_days=settings.rejection_retention_days,
    )
    app.state.login_limiter = RateLimiter(
        per_key_per_minute=settings.login_rate_per_client,
        global_per_second=settings.login_rate_global,
    )
    app.state.hash_executor = HashExecutor(settings.hash_threads, settings.hash_queue)
    install_error_handlers(app)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(SecurityHeaders)
    # outermost: sees the final answer to every preflight, CORS configured or not
    app.add_middleware(PreflightLogger, allowed=settings.cors_origin_list)
    if settings.console != "only":
        app.include_router(hooks_router)
    if settings.console != "off":
        _include_console(app)
    _document_operation_outcome(app)
    return app


def _include_console(app: FastAPI) -> None:
    try:
        from cds.web.console import STATIC_DIR, console_router
    except ImportError:  # the console is optional at import time in early builds
        return
    from fastapi.staticfiles import StaticFiles

    app.include_router(console_router())
    app.mount("/review/static", StaticFiles(directory=str(STATIC_DIR)), name="review-static")


def _document_operation_outcome(app: FastAPI) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        comps.setdefault(
            "OperationOutcome",
            OperationOutcome.model_json_schema(ref_template="#/components/schemas/{model}"),
        )
        for name, sub in (
            OperationOutcome.model_json_schema(ref_template="#/components/schemas/{model}")
            .get("$defs", {})
            .items()
        ):
            comps.setdefault(name, sub)
        comps["OperationOutcome"].pop("$defs", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
