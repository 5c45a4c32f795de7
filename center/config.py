"""The center's YAML configuration (center.yaml): strict, every number bounded and described."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator

from edge.config import MqttConfig, Strict, readable_file


class DatabaseConfig(Strict):
    url: str | None = Field(
        None,
        description="SQLAlchemy URL: postgresql+psycopg://user:${PW}@host/db for several instances; "
        "empty for SQLite (WAL) at <data_dir>/center.db.",
    )

    sqlite_busy_s: float = Field(
        30.0, gt=0.0, le=600.0, description="SQLite: how long a writer waits for another's lock before retrying."
    )

    @field_validator("url")
    @classmethod
    def _known(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("sqlite:///", "postgresql+psycopg://", "postgresql://")):
            raise ValueError("only sqlite:///PATH and postgresql+psycopg://... are supported")
        return url


class CenterMqtt(MqttConfig):
    """The node's MQTT settings (edge.config.MqttConfig) plus the center's own."""

    share_group: str = Field(
        "center", pattern=r"^[A-Za-z0-9_-]{1,32}$", description="Instances in one $share group split the load."
    )
    max_chunk_set_mib: int = Field(
        512, ge=16, le=16384, description="Unfinished clip chunks held in the database, all nodes together."
    )
    chunk_set_idle_min: float = Field(
        15.0, ge=1.0, le=1440.0, description="An unfinished clip with no chunk for this long is dropped."
    )


class DedupConfig(Strict):
    window_s: float = Field(1.0, ge=0.0, le=30.0, description="Alerts this close in time may be one throw.")
    floors: int = Field(1, ge=0, le=10, description="... if their origin floors differ by at most this.")


class RetryConfig(Strict):
    first_s: float = Field(5.0, gt=0.0, le=3600.0, description="Wait before the first retry of a notice.")
    cap_s: float = Field(600.0, gt=0.0, le=86400.0, description="Longest wait between retries.")
    max_attempts: int = Field(12, ge=1, le=1000, description="After this many failures a notice is 'failed'.")


class WebhookConfig(Strict):
    url: AnyHttpUrl
    secret: SecretStr = Field(description="HMAC-SHA256 key; the receiver checks X-Edge-Signature with it.")


class WecomConfig(Strict):
    url: AnyHttpUrl = Field(description="The group robot's webhook URL (with its key=...).")
    send_still: bool = Field(True, description="Send the trajectory still as a second (image) message.")


class SmtpConfig(Strict):
    host: str
    port: int = Field(587, ge=1, le=65535, description="587 for STARTTLS; 465 with implicit_tls.")
    starttls: bool = Field(True, description="Upgrade to TLS before logging in.")
    implicit_tls: bool = Field(
        False,
        description="TLS from the first byte (SMTPS, usually port 465, as QQ Mail and NetEase 163 offer); "
        "starttls is then not used.",
    )
    ca_file: Path | None = Field(
        None, description="CA that signed the server's certificate (an office's own); the system's CAs when empty."
    )
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", description="The From: address.")
    timeout_s: float = Field(20.0, gt=0.0, le=300.0)

    @field_validator("ca_file")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        return readable_file(path)

    @model_validator(mode="after")
    def _one_kind_of_tls(self) -> SmtpConfig:
        # starttls defaults to on: only a starttls the file sets itself clashes with implicit TLS.
        if self.implicit_tls and self.starttls and "starttls" in self.model_fields_set:
            raise ValueError("implicit_tls and starttls exclude each other: the connection is TLS from the start")
        return self


class NotifyConfig(Strict):
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    wecom: list[WecomConfig] = Field(default_factory=list)
    smtp: SmtpConfig | None = None
    retry: RetryConfig = Field(default_factory=RetryConfig)
    timeout_s: float = Field(10.0, gt=0.0, le=120.0, description="HTTP timeout of one webhook call.")


class ApiConfig(Strict):
    enabled: bool = True
    host: str = Field("127.0.0.1", description="Listen address; put a TLS reverse proxy in front off the LAN.")
    port: int = Field(8080, ge=1, le=65535)


class RetentionConfig(Strict):
    """How long the center keeps a closed case's evidence files (the database keeps the case for ever)."""

    evidence_days: int | None = Field(
        180,
        ge=1,
        le=3650,
        description="A resolved (or dismissed) case's stills, clips and photos are deleted this many days after "
        "it was closed, never while it is held; its rows, history and signed manifests stay. null: kept for ever.",
    )
    disk_warn_free_share: float = Field(
        0.1,
        ge=0.0,
        le=0.9,
        description="A warning is logged while data_dir's disk has less than this share free; 0: never.",
    )


class CenterConfig(Strict):
    version: Literal[1] = 1
    instance: str = Field(
        "center-1", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="This instance's name (several may run)."
    )
    data_dir: Path = Field(Path("/var/lib/edge-center"), description="Evidence files and the SQLite database.")
    roster: Path = Field(description="The roster YAML (buildings, grids, workers, office).")
    timezone: str = Field("Asia/Shanghai", description="Duty hours and statistics by hour are in this zone.")
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    mqtt: CenterMqtt = Field(default_factory=CenterMqtt)
    escalate_after_min: float = Field(
        10.0,
        gt=0.0,
        le=1440.0,
        description="Unacknowledged (a suspected alert: unreviewed) this long: to the grid leader, then the "
        "office.",
    )
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}") from None
        return name

    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'center.db'}"


def load_center_config(path: str | Path) -> CenterConfig:
    """center.yaml, with `roster:` and relative paths taken relative to the file's folder."""
    from center.yamlfile import load_model

    cfg = load_model(path, CenterConfig)
    base = Path(path).resolve().parent
    if not cfg.roster.is_absolute():
        cfg.roster = base / cfg.roster
    if not cfg.data_dir.is_absolute():
        cfg.data_dir = base / cfg.data_dir
    return cfg
