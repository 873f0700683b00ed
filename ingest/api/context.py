"""Everything the routes read, handed to :func:`ingest.api.build_app` once."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from prometheus_client import CollectorRegistry

from devices.registry import DeviceInfo
from ingest.api.auth import Authenticator
from ingest.api.errors import HistoryUnsupported, Unavailable
from ingest.api.influx import InfluxReader
from ingest.api.view import FleetView
from ingest.config import Settings
from ingest.errors import ConfigError
from ingest.fleet import Forecast
from ingest.metrics import Metrics
from ingest.plan import PlanPool, PlanSettings
from ingest.tokens import TokenFileError

ReadyCheck = Callable[[], tuple[bool, dict[str, object]]]
HealthCheck = Callable[[], tuple[bool, dict[str, dict[str, object]]]]

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
"""The fleet page (``index.html`` and its files), served at ``/`` and ``/static/``."""


@dataclass
class ApiContext:
    metrics: Metrics
    ready: ReadyCheck
    health: HealthCheck
    fleet: FleetView | None = None
    registry: Mapping[str, DeviceInfo] | None = None
    influx: InfluxReader | None = None
    history_unsupported: str | None = None
    """Why history is not served (set with the v2 writer), or None."""
    plan_settings: PlanSettings | None = None
    plan_pool: PlanPool | None = None
    """The collection planner (its solver processes start on the first plan asked)."""
    web_dir: Path = WEB_DIR
    tile_url: str | None = None
    """The page's base-map tiles (``TAZA_PAGE_TILE_URL``); None: no base map (offline)."""
    auth: Authenticator | None = None
    """Bearer tokens (``TAZA_API_TOKENS_FILE``); None: the API is open (development)."""
    metrics_public: bool = True
    health_public: bool = True
    """With tokens: whether ``/metrics``, ``/healthz`` + ``/readyz`` answer without one."""
    forecasts: dict[str, tuple[int, Forecast | None]] = field(default_factory=dict)
    """device → (level time, forecast): a forecast is computed once per new reading."""

    def need_fleet(self) -> FleetView:
        if self.fleet is None:
            raise Unavailable("the fleet state is not running in this service", reason="no_fleet")
        return self.fleet

    def need_influx(self) -> InfluxReader:
        if self.influx is None:
            raise HistoryUnsupported(self.history_unsupported or "no database to read history")
        return self.influx


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


def influx_for(settings: Settings) -> tuple[InfluxReader | None, str | None]:
    """The history reader for these settings, or why there is none."""
    if settings.influx_api != "v1":
        return None, (
            "history is read with InfluxQL from InfluxDB 1.x; this service writes with "
            "TAZA_INFLUX_API=v2 (InfluxDB 2.x / VictoriaMetrics): query that database directly"
        )
    password = settings.influx_password.get_secret_value() if settings.influx_password else None
    reader = InfluxReader(
        settings.influx_url,
        settings.influx_db,
        rp=settings.influx_rp,
        user=settings.influx_user,
        password=password,
        timeout_s=settings.influx_timeout_s,
        ca_file=settings.influx_ca_file,
    )
    return reader, None


def auth_for(settings: Settings, registry: CollectorRegistry) -> Authenticator | None:
    """The token check for these settings (ConfigError if the tokens file cannot be read)."""
    if settings.api_tokens_file is None:
        return None
    try:
        return Authenticator(settings.api_tokens_file, registry)
    except (OSError, TokenFileError) as exc:
        raise ConfigError(
            f"TAZA_API_TOKENS_FILE: {exc} (create it with `taza tokens add`)"
        ) from None
