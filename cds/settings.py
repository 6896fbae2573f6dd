"""One ``Settings`` object, read from ``CDS_*`` environment variables.

Precedence: explicit keyword arguments (tests) > environment > defaults. Nothing reads
the environment at import time: ``Settings()`` is built by the CLI or by the test that
needs it and handed to ``create_app``. The variable names are a contract with
deployments (documented in the README); keep them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CDS_", extra="ignore")

    database_url: str = Field(
        default_factory=lambda: f"sqlite:///{Path.cwd() / 'cds.db'}",
        description="SQLAlchemy URL; default a SQLite file in the working directory",
    )
    auth: Literal["jwt", "off"] = "jwt"
    trusted_issuers: Path | None = None  # JSON list of {iss, jwks_file|jwks_url, tenant?}
    public_base_url: str | None = None  # base URL the EHR calls (for the aud check)
    fhir_allowlist: str = ""  # comma-separated FHIR base URLs the service may call
    profile: Literal["US", "UK"] = "US"
    cors_origins: str = ""  # comma-separated origins
    redis_url: str | None = None  # shared jti cache and pack reload signal
    max_body_bytes: int = 5_000_000
    fetch_deadline_seconds: float = 2.0
    serve_unaudited: bool = False  # opt-in: return cards when the audit store is down
    packs: str = "baclofen"  # comma-separated pack ids under rules/
    rules_dir: Path | None = None  # override the shipped rules/ folder (rule authors)
    session_secret: str | None = None  # console cookie signing; generated if unset
    secure_cookies: bool = True

    @field_validator("profile", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @property
    def allowlist(self) -> list[str]:
        return [u.strip() for u in self.fhir_allowlist.split(",") if u.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [u.strip() for u in self.cors_origins.split(",") if u.strip()]

    @property
    def pack_ids(self) -> list[str]:
        return [p.strip() for p in self.packs.split(",") if p.strip()]
