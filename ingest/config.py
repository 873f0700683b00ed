"""Settings of ``taza-ingest``: ``TAZA_*`` environment variables over an optional TOML file.

Validated once at start so that a typo is a clear message and exit code 2, not a
traceback an hour later. Defaults work against the local demo servers.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from devices import INTAKE_FILTER
from devices.broker import BrokerURL
from ingest.errors import ConfigError
from ingest.fleet.errors import FleetConfigError
from ingest.fleet.settings import FleetSettings
from ingest.inflight import InflightBound, inflight_bound
from ingest.plan.settings import PlanSettings

ENV_PREFIX = "TAZA_"


BrokerAddress = BrokerURL
"""The broker the service connects to (the contract package's parser: one set of URL rules)."""
parse_mqtt_url = BrokerURL.parse


def parse_host_port(addr: str) -> tuple[str, int]:
    host, sep, port_s = addr.rpartition(":")
    if not sep or not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {addr!r}")
    host = host.strip("[]") or "127.0.0.1"
    if host != "localhost":
        ipaddress.ip_address(host)
    return host, int(port_s)


class Settings(BaseSettings):
    """Every field is ``TAZA_<NAME>`` in the environment and ``<name>`` in the TOML file."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", case_sensitive=False, validate_default=True
    )

    mqtt_url: str = Field(
        "mqtt://127.0.0.1:1883", description="broker, mqtt://user:pass@host:port or mqtts://"
    )
    mqtt_client_id: str = Field(
        "taza-ingest", description="stable client id: the persistent session is keyed on it"
    )
    mqtt_share_group: str | None = Field(
        None, description="shared-subscription group: replicas split the load"
    )
    mqtt_topic: str = Field(
        INTAKE_FILTER, description="intake topic filter (taza's own namespaces are ignored)"
    )
    mqtt_session_expiry_s: int = Field(
        7 * 86400, ge=1, description="how long the broker keeps our session while we are down"
    )
    mqtt_keepalive_s: int = Field(30, ge=5, le=300, description="MQTT keepalive")
    mqtt_receive_maximum: int = Field(
        20000, ge=100, le=65535, description="unacknowledged messages in flight: bounds memory"
    )
    mqtt_ca_file: Path | None = Field(None, description="CA bundle for mqtts://")
    mqtt_client: Literal["lean", "paho"] = Field(
        "lean", description="intake client: lean (taza's own MQTT 5 codec) or paho (paho-mqtt)"
    )

    influx_api: Literal["v1", "v2"] = Field(
        "v1",
        description="v1: InfluxDB 1.x /write; v2: influxdb-client (2.x/3.x/1.8+/VictoriaMetrics)",
    )
    influx_url: str = Field("http://127.0.0.1:8086", description="database base URL")
    influx_db: str = Field("taza", description="v1 database")
    influx_rp: str | None = Field(None, description="v1 retention policy (default: the database's)")
    influx_user: str | None = Field(None, description="v1 user")
    influx_password: SecretStr | None = Field(None, description="v1 password")
    influx_bucket: str = Field("taza", description="v2 bucket")
    influx_org: str = Field("taza", description="v2 organisation")
    influx_token: SecretStr | None = Field(None, description="v2 API token")
    influx_timeout_s: float = Field(10.0, gt=0, le=300, description="one write attempt")
    influx_create_db: bool = Field(True, description="v1: CREATE DATABASE at start if allowed")

    registry: Path | None = Field(None, description="fleet file (CSV or JSON) for enrichment")
    reject_unregistered: bool = Field(False, description="reject devices missing from the registry")
    strict: bool = Field(False, description="reject unknown payload fields")
    max_payload_bytes: int = Field(
        4096, ge=64, le=262144, description="larger payloads are rejected"
    )
    max_age_s: int = Field(7 * 86400, ge=60, description="older device timestamps are rejected")

    data_dir: Path = Field(Path("var/ingest"), description="spool and dead-letter store")
    spool_max_bytes: int = Field(1 << 30, ge=1 << 20, description="when full, stop acknowledging")
    deadletter_file_bytes: int = Field(
        64 << 20, ge=1 << 16, description="rotate a dead-letter file at this size"
    )
    deadletter_keep_files: int = Field(20, ge=1, description="rotated dead-letter files kept")
    deadletter_republish: bool = Field(
        False, description="also publish rejects to taza/v1/_deadletter/{reason}"
    )

    batch_max_lines: int = Field(
        5000, ge=1, le=100000, description="flush a batch at this many lines"
    )
    batch_max_age_ms: int = Field(
        200, ge=1, le=60000, description="or when its oldest message is this old"
    )
    write_attempts: int = Field(
        3, ge=1, le=20, description="attempts before a batch goes to the spool"
    )

    http_addr: str = Field(
        "127.0.0.1:8080", description="/metrics, /healthz, /readyz, /api/v1, the fleet page"
    )
    page_tile_url: str | None = Field(
        None,
        description="XYZ tile URL for the fleet page's base map, e.g. "
        "https://tile.openstreetmap.org/{z}/{x}/{y}.png (default: none, works offline)",
        pattern=r"^https?://\S+$",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text for people, json for collectors"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    stats_interval_s: float = Field(
        60.0, ge=0, description="a summary log line this often (0: never)"
    )
    stall_timeout_s: float = Field(
        120.0, gt=0, description="a stage with work and no progress this long: /healthz 503"
    )
    drain_timeout_s: float = Field(
        30.0, gt=0, description="on SIGTERM, how long to store and ack what is in flight"
    )

    alerts_enabled: bool = Field(
        True, description="the fleet-state / alert stage (collections, anomalies, crew alerts)"
    )
    alerts: dict[str, Any] = Field(
        default_factory=dict,
        description="the TOML [alerts] table: thresholds, [alerts.fraction.*], [alerts.site.*]",
    )
    alert_notify_max_age_s: float | None = Field(
        None,
        ge=0,
        description="older alert transitions (a drained backlog) go to history only "
        "[default: alerts.notify_max_age_s, else 3600]",
    )
    alert_tick_interval_s: float = Field(
        10.0, gt=0, le=300, description="how often offline-by-silence is judged (wall clock)"
    )
    alert_snapshot_interval_s: float = Field(
        30.0, gt=0, le=3600, description="fleet-state snapshot at most this often"
    )
    plan: dict[str, Any] = Field(
        default_factory=dict,
        description="the TOML [plan] table (collection plans); TAZA_PLAN_<NAME> over it",
    )

    # -- device feedback, per-device rate limit, in-flight memory bound (issue 12) ------------
    feedback_enabled: bool = Field(
        True, description="publish each rejection to taza/v1/_feedback/{device_id} (QoS 0)"
    )
    feedback_rate_per_s: float = Field(
        0.2, gt=0, le=1000, description="feedback messages per device and second, sustained"
    )
    feedback_burst: int = Field(
        5, ge=1, le=10000, description="feedback messages one device may get at once"
    )
    feedback_total_per_s: float = Field(
        500.0, gt=0, le=100000, description="feedback messages per second, all devices together"
    )
    rate_limit_per_s: float = Field(
        100.0, ge=0, description="messages per device and second (token bucket); 0: no limit"
    )
    rate_limit_burst: int = Field(
        1000, ge=1, description="messages one device may send at once above its rate"
    )
    rate_limit_max_devices: int = Field(
        250_000, ge=1000, description="devices the rate limit tracks at most (bounds its memory)"
    )
    max_inflight_bytes: int = Field(
        1 << 30,
        ge=16 << 20,
        description="refuse to start if messages in flight could hold more (docs/ingest.md)",
    )

    @model_validator(mode="after")
    def _check_inflight_bound(self) -> Settings:
        """The bound of ingest/inflight.py, refused at start rather than found out of memory."""
        bound = self.inflight
        if bound.bytes > self.max_inflight_bytes:
            raise ValueError(
                f"messages in flight could hold {bound.describe()}, above "
                f"TAZA_MAX_INFLIGHT_BYTES={self.max_inflight_bytes}: lower "
                "TAZA_MQTT_RECEIVE_MAXIMUM, TAZA_MAX_PAYLOAD_BYTES or TAZA_BATCH_MAX_LINES, "
                "or raise TAZA_MAX_INFLIGHT_BYTES if the memory is there"
            )
        return self

    @property
    def inflight(self) -> InflightBound:
        """What messages in flight can hold at most (stated in the start line)."""
        return inflight_bound(
            self.mqtt_receive_maximum, self.max_payload_bytes, self.batch_max_lines
        )

    # -- end of issue 12's block --------------------------------------------------------------

    # -- API tokens, production mode, TLS to InfluxDB, broker client cert (issue 12) ----------
    api_tokens_file: Path | None = Field(
        None,
        description="tokens file (`taza tokens add`): the API and page need a bearer token "
        "(default: none, the API is open, for development)",
    )
    api_metrics_public: bool = Field(
        False, description="with a tokens file: /metrics answers without a token"
    )
    api_health_public: bool = Field(
        True, description="with a tokens file: /healthz and /readyz answer without a token"
    )
    influx_ca_file: Path | None = Field(
        None, description="CA bundle to verify an https:// InfluxDB (default: the system's)"
    )
    mqtt_cert_file: Path | None = Field(
        None, description="client certificate (PEM) for mqtts:// mutual TLS"
    )
    mqtt_key_file: Path | None = Field(
        None, description="its private key (PEM; default: in the certificate file)"
    )
    production: bool = Field(
        False,
        description="refuse to start with anonymous or plain-text broker access, an open API "
        "or plain-http InfluxDB",
    )

    @field_validator("api_tokens_file", "influx_ca_file", "mqtt_cert_file", "mqtt_key_file")
    @classmethod
    def _check_file(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"{v} is not a file")
        return v

    @field_validator("mqtt_key_file")
    @classmethod
    def _check_key(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if v is not None and info.data.get("mqtt_cert_file") is None:
            raise ValueError("a key without TAZA_MQTT_CERT_FILE")
        return v

    @field_validator("production")
    @classmethod
    def _check_production(cls, v: bool, info: ValidationInfo) -> bool:
        if v:
            problems = production_problems(info.data)
            if problems:
                raise ValueError(
                    "refusing to start in production mode:"
                    + "".join(f"\n    - {p}" for p in problems)
                )
        return v

    # -- end of the API tokens / production / TLS block ---------------------------------------

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt_url(cls, v: str) -> str:
        parse_mqtt_url(v)
        return v

    @field_validator("influx_url")
    @classmethod
    def _check_influx_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected http(s)://host:port, got {v!r}")
        return v.rstrip("/")

    @field_validator("http_addr")
    @classmethod
    def _check_http_addr(cls, v: str) -> str:
        parse_host_port(v)
        return v

    @field_validator("mqtt_share_group")
    @classmethod
    def _check_group(cls, v: str | None) -> str | None:
        if v is not None and (not v or any(c in v for c in "/+#")):
            raise ValueError("a share group name must be non-empty without '/', '+' or '#'")
        return v

    @model_validator(mode="after")
    def _check_api(self) -> Settings:
        if self.influx_api == "v2" and self.influx_token is None:
            self.influx_token = SecretStr("")
        return self

    @field_validator("alerts")
    @classmethod
    def _check_alerts(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            FleetSettings.from_mapping(v)
        except FleetConfigError as exc:
            raise ValueError(str(exc)) from None
        return v

    @property
    def fleet_settings(self) -> FleetSettings:
        """The ``[alerts]`` table with ``TAZA_ALERT_NOTIFY_MAX_AGE_S`` over its
        ``notify_max_age_s``."""
        fleet = FleetSettings.from_mapping(self.alerts)
        if self.alert_notify_max_age_s is not None:
            fleet = dataclasses.replace(fleet, notify_max_age_s=self.alert_notify_max_age_s)
        return fleet

    def plan_settings(self) -> PlanSettings:
        """``[plan]`` with ``TAZA_PLAN_<NAME>`` environment variables over it (ConfigError)."""
        try:
            return _PlanFromEnv(**self.plan)
        except ValidationError as exc:
            problems = "; ".join(
                f"TAZA_PLAN_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                for e in exc.errors()
            )
            raise ConfigError(f"invalid collection-plan settings: {problems}") from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        toml = settings_cls.model_config.get("toml_file")
        if toml:
            sources += (TomlConfigSettingsSource(settings_cls),)
        return sources

    @property
    def broker(self) -> BrokerAddress:
        return parse_mqtt_url(self.mqtt_url)

    @property
    def subscription(self) -> str:
        if self.mqtt_share_group:
            return f"$share/{self.mqtt_share_group}/{self.mqtt_topic}"
        return self.mqtt_topic

    def summary(self) -> dict[str, Any]:
        """What the start-up line says: where we read and write, never a secret."""
        target = (
            f"{self.influx_url} db={self.influx_db}"
            + (f" rp={self.influx_rp}" if self.influx_rp else "")
            if self.influx_api == "v1"
            else f"{self.influx_url} org={self.influx_org} bucket={self.influx_bucket}"
        )
        return {
            "broker": self.broker.redacted(),
            "client_id": self.mqtt_client_id,
            "subscription": self.subscription,
            "database": f"{self.influx_api} {target}",
            "registry": str(self.registry) if self.registry else None,
            "data_dir": str(self.data_dir),
            "http": self.http_addr,
            "alerts": self.alerts_enabled,
            "api_auth": "tokens" if self.api_tokens_file else "open",
            "production": self.production,
        }


class _PlanFromEnv(BaseSettings, PlanSettings):
    """PlanSettings read from ``TAZA_PLAN_*``, over the TOML table given as keywords."""

    model_config = SettingsConfigDict(env_prefix="TAZA_PLAN_", extra="forbid", case_sensitive=False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Environment over TOML over defaults; raises ConfigError with every problem listed."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=config_file)

    try:
        return _FromFile(**overrides) if config_file else Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"  {ENV_PREFIX}{name.upper()} ({name}): {msg}")
        raise ConfigError("invalid configuration:\n" + "\n".join(problems)) from None
    except ValueError as exc:  # TOML syntax
        raise ConfigError(f"cannot read {config_file}: {exc}") from None


def describe_settings() -> str:
    """The environment variables with defaults, for ``--help``."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "" if default is None or default == {} else f" [default: {default}]"
        rows.append(f"  {ENV_PREFIX}{name.upper():<28} {field.description or ''}{shown}")
    return "\n".join(rows)


def production_problems(data: dict[str, Any]) -> list[str]:
    """What production mode refuses, from the fields validated so far (issue 12; each choice is
    in docs/operators.md): the broker in plain text or without an identity, the API without
    tokens, InfluxDB over plain http. Plain text is refused on loopback too: production means
    the same rules on every host."""
    problems = []
    url = data.get("mqtt_url")
    if url is not None:
        broker = parse_mqtt_url(url)
        if not broker.tls:
            problems.append("TAZA_MQTT_URL is not mqtts:// (the broker must be reached over TLS)")
        if broker.username is None and data.get("mqtt_cert_file") is None:
            problems.append(
                "anonymous broker access: give a user in TAZA_MQTT_URL "
                "(mqtts://user:pass@host) or a client certificate (TAZA_MQTT_CERT_FILE)"
            )
    if data.get("api_tokens_file") is None:
        problems.append("the API is open: set TAZA_API_TOKENS_FILE (`taza tokens add`)")
    influx = data.get("influx_url")
    if influx is not None and not str(influx).startswith("https://"):
        problems.append("TAZA_INFLUX_URL is plain http: use https:// (TAZA_INFLUX_CA_FILE)")
    return problems
