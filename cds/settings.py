"""One ``Settings`` object, read from ``CDS_*`` environment variables.

Precedence: explicit keyword arguments (tests) > environment > defaults. Nothing reads
the environment at import time: ``Settings()`` is built by the CLI or by the test that
needs it and handed to ``create_app``. The variable names are a contract with
deployments (documented in the README); keep them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, field_validator
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
    packs: str = "*"  # comma-separated pack ids under rules/; "*": every pack found there
    rules_dir: Path | None = None  # override the shipped rules/ folder (rule authors)
    # console cookie signing; generated if unset. SecretStr: never shown by repr or logs.
    session_secret: SecretStr | None = None
    secure_cookies: bool = True
    # The review console shows times and counts days in this IANA zone (stored: UTC).
    site_timezone: str = "UTC"

    # --- hardening (see the README's configuration table) ---
    # "on": hook API and console on one listener; "off": hook API only; "only": console only
    # (``cds serve --console-port`` runs both, each in its own process and port).
    console: Literal["on", "off", "only"] = "on"
    api_docs: bool = False  # /docs and /redoc (they load JavaScript from a CDN)
    max_header_bytes: int = Field(default=32_768, ge=1024)  # request line + headers
    max_console_body_bytes: int = Field(default=65_536, ge=1024)
    login_rate_per_client: int = Field(default=10, ge=1)  # sign-in attempts per minute per IP
    login_rate_global: float = Field(default=5.0, gt=0)  # sign-in attempts per second, all
    hash_threads: int = Field(default=1, ge=1, le=16)  # password hashing threads
    hash_queue: int = Field(default=4, ge=0)  # attempts waiting for a hashing thread
    max_feedback_items: int = Field(default=100, ge=1)  # items per feedback request
    max_feedback_per_card: int = Field(default=20, ge=1)  # feedback items stored per card
    max_prefetch_resources: int = Field(default=5_000, ge=1)  # per prefetch key
    evaluation_budget_seconds: float = Field(default=5.0, gt=0)  # one hook call's evaluation
    rejection_retention_days: int = Field(default=90, ge=1)
    rejection_aggregate_seconds: float = Field(default=60.0, ge=0)  # 401 rows per window

    # --- replay and shadow packs (see the README's "Rule changes" section) ---
    # Days the input of each hook call is kept for ``cds rules replay``; 0 keeps none (and
    # purges any kept before). Patient data: purged at start-up, hourly and by
    # ``cds requests purge``.
    keep_requests_days: int = Field(default=0, ge=0, le=3650)
    # "pack=folder,...": a pack version evaluated on live calls, audited apart, never answered
    shadow_packs: str = ""
    sidecar_queue: int = Field(default=1000, ge=1, le=100_000)  # calls awaiting the sidecar

    @field_validator("session_secret", mode="before")
    @classmethod
    def _empty_secret(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("site_timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"CDS_SITE_TIMEZONE: {v[:64]!r} is not an IANA time zone "
                "(e.g. Europe/London, America/New_York, UTC)"
            ) from None
        return v

    @property
    def site_zone(self) -> ZoneInfo:
        from zoneinfo import ZoneInfo

        return ZoneInfo(self.site_timezone)

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

    def session_secret_value(self) -> str | None:
        return self.session_secret.get_secret_value() if self.session_secret else None

    @field_validator("shadow_packs")
    @classmethod
    def _shadow_format(cls, v: str) -> str:
        parse_shadow_packs(v)
        return v

    @property
    def shadow_pack_dirs(self) -> dict[str, Path]:
        """``CDS_SHADOW_PACKS`` as pack id -> folder of the shadow version."""
        return parse_shadow_packs(self.shadow_packs)

    @property
    def pack_ids(self) -> list[str]:
        return [p.strip() for p in self.packs.split(",") if p.strip()]


def parse_shadow_packs(text: str) -> dict[str, Path]:
    """``"pack-a=/path/to/pack,pack-b=/other"`` -> {pack id: folder}; ValueError on a
    malformed entry (the message names it; ``cds serve`` prints it as a configuration error).
    """
    out: dict[str, Path] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        pack_id, sep, folder = (p.strip() for p in entry.partition("="))
        if not sep or not pack_id or not folder:
            raise ValueError(
                f"CDS_SHADOW_PACKS entry {entry[:200]!r} is not pack=folder "
                "(e.g. mypack=/srv/packs/mypack-1.2.0)"
            )
        if pack_id in out:
            raise ValueError(f"CDS_SHADOW_PACKS names pack {pack_id!r} twice")
        out[pack_id] = Path(folder)
    return out
