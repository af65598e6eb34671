"""Settings: one frozen object, loaded once at start and passed down.

Precedence, lowest first: the defaults below, `GATEWAY_<NAME>` environment variables, the TOML file
given with `--config`, and the command-line flags `--host`, `--port`, `--data-dir`. Every setting
is documented in `config/gateway.example.toml`.
"""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class GroupConfig(BaseModel):
    """A trading group accounts belong to; its currency fixes the digits of money amounts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=64)]
    currency: Annotated[str, Field(min_length=3, max_length=3)] = "USD"
    digits: Annotated[int, Field(ge=0, le=8)] = 2
    default_leverage: Annotated[int, Field(ge=1, le=10_000)] = 100

    @property
    def quantum(self) -> Decimal:
        return Decimal(1).scaleb(-self.digits)

    def to_wire(self) -> dict[str, object]:
        return {
            "group": self.name,
            "currency": self.currency,
            "digits": self.digits,
            "default_leverage": self.default_leverage,
        }


DEFAULT_GROUPS = (GroupConfig(name="demo", currency="USD", digits=2),)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", frozen=True, extra="forbid")

    # Where to listen and where to keep state.
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    data_dir: Path = Path("var")
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    # Limits and flow control (docs/protocol.md section 8).
    max_frame_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024
    max_inflight: Annotated[int, Field(ge=1)] = 1024
    max_outbound_bytes: Annotated[int, Field(ge=64 * 1024)] = 8 * 1024 * 1024
    max_auth_failures: Annotated[int, Field(ge=1)] = 10
    # After a connection is closed for max_auth_failures, new ones from its address are refused
    # for auth_penalty_s, doubling with each further closure up to auth_penalty_max_s.
    auth_penalty_s: Annotated[float, Field(ge=0)] = 1.0
    auth_penalty_max_s: Annotated[float, Field(ge=0)] = 60.0
    auth_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    frame_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    max_connections: Annotated[int, Field(ge=1)] = 20_000

    # Sync commands and retries (sections 6 and 7).
    sync_timeout_ms: Annotated[int, Field(ge=1)] = 5000
    idempotency_ttl_s: Annotated[int, Field(ge=1)] = 24 * 3600

    # Runtime and ledger.
    # Empty: the embedded SQLite ledger in data_dir. `postgresql://user:pass@host/db`: PostgreSQL
    # (docs/scaling.md); the ledger_* SQLite settings then do not apply.
    ledger_url: str = ""
    ledger_synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    # How long a commit waits for a write lock held by another process before it fails (500).
    ledger_busy_timeout_ms: Annotated[int, Field(ge=0, le=3_600_000)] = 5000
    max_batch: Annotated[int, Field(ge=1)] = 4096
    # Records, idempotency keys and settlement journal rows held in memory, each: the newest.
    # Older ones are read from the ledger when needed, so memory does not grow with history.
    history_window: Annotated[int, Field(ge=1)] = 50_000
    shutdown_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    jwt_secret: str | None = None
    groups: tuple[GroupConfig, ...] = DEFAULT_GROUPS

    # Prometheus metrics over HTTP; 0 = off. Not an API port: keep it off the public network.
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
    metrics_host: str = "127.0.0.1"

    # External Settlement: the platform's wallet webhooks over HTTP (docs/settlement.md).
    settlement_host: str = "127.0.0.1"
    settlement_port: Annotated[int, Field(ge=0, le=65535)] = 8081  # 0 = off
    settlement_tls_cert_file: Path | None = None
    settlement_tls_key_file: Path | None = None
    settlement_path_prefix: Annotated[str, Field(pattern=r"^(/[A-Za-z0-9._~-]+)*$")] = "/api"
    # Who may call: CIDRs. The platform's spec has no authentication; it advises an IP list.
    settlement_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    settlement_company_ids: tuple[int, ...] = ()  # empty: any companyId
    settlement_token: str | None = None  # when set: "Authorization: Bearer <token>" required
    settlement_max_skew_s: Annotated[float, Field(gt=0)] = 300.0
    # Answer within this or say SERVICE_UNAVAILABLE: inside the platform's 3 s timeout.
    settlement_answer_budget_ms: Annotated[int, Field(ge=1, le=60_000)] = 2500
    settlement_groups: tuple[str, ...] = ("*",)  # group masks open to settlement
    settlement_field: Literal["credit", "balance"] = "credit"
    settlement_overtrading: Literal["deduct_available", "deduct", "ignore"] = "deduct_available"
    settlement_retention_days: Annotated[float, Field(gt=0)] = 120.0

    # Logs.
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("ledger_url")
    @classmethod
    def _ledger_url(cls, value: str) -> str:
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "ledger_url is empty (the embedded SQLite ledger) or a postgresql:// URL"
            )
        return value

    @field_validator("settlement_allow")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)  # a ValueError names the bad one
        return value

    @model_validator(mode="after")
    def _settlement_not_open_by_accident(self) -> Settings:
        """A listener on a public address that admits every caller must be meant: the list then
        names 0.0.0.0/0 (or ::/0) itself, rather than covering everything piece by piece."""
        if self.settlement_port == 0 or _is_loopback(self.settlement_host):
            return self
        if {"0.0.0.0/0", "::/0"} & set(self.settlement_allow):
            return self
        networks = self.settlement_networks()
        v4 = list(ipaddress.collapse_addresses(n for n in networks if n.version == 4))
        v6 = list(ipaddress.collapse_addresses(n for n in networks if n.version == 6))
        if v4 == [ipaddress.ip_network("0.0.0.0/0")] or v6 == [ipaddress.ip_network("::/0")]:
            raise ValueError(
                "settlement_allow admits every address on a non-loopback settlement_host; "
                "name 0.0.0.0/0 (or ::/0) in it if that is meant"
            )
        return self

    @model_validator(mode="after")
    def _tls_in_pairs(self) -> Settings:
        """A certificate without its key (or the reverse) would silently serve plain text."""
        for prefix in ("", "settlement_"):
            cert = getattr(self, f"{prefix}tls_cert_file")
            key = getattr(self, f"{prefix}tls_key_file")
            if (cert is None) != (key is None):
                raise ValueError(f"{prefix}tls_cert_file and {prefix}tls_key_file go together")
        return self

    def settlement_networks(self) -> tuple[IPNetwork, ...]:
        return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in self.settlement_allow)

    def groups_by_name(self) -> dict[str, GroupConfig]:
        return {group.name: group for group in self.groups}


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Defaults < environment < `config_file` (TOML) < `overrides` (command-line flags)."""
    if config_file is not None and not config_file.is_file():
        raise FileNotFoundError(f"config file not found: {config_file}")

    class _Settings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings]
            if config_file is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
            sources.append(env_settings)
            return tuple(sources)

    given = {name: value for name, value in overrides.items() if value is not None}
    return _Settings(**given)  # type: ignore[arg-type]
