"""Response models (the OpenAPI schemas). Times are RFC 3339 strings in UTC, ``…Z``."""

from __future__ import annotations

from pydantic import BaseModel, Field


class DeviceOut(BaseModel):
    device_id: str
    kind: str
    region: str
    registered: bool = Field(description="listed in the fleet file")
    site: str | None
    fraction: str | None
    lat: float | None
    lon: float | None
    capacity_l: float | None
    online: bool | None = Field(description="null: never heard since the service started")
    last_seen: str | None = Field(description="device time of the latest reading")
    fill_pct: float | None = Field(description="eco-box: the robust current level")
    battery_pct: float | None
    battery_v: float | None
    faults: list[str]
    alerts: list[str] = Field(description="alerts firing now")
    completeness_pct_today: float | None = Field(
        description="messages received / expected today (UTC), from seq"
    )


class Devices(BaseModel):
    items: list[DeviceOut]


class FillLevel(BaseModel):
    device_id: str
    fill_pct: float = Field(description="the robust current level, %")
    forecast_full_at: str | None = Field(description="when it reaches its threshold (or null)")
    fill_rate_pct_per_h: float | None
    last_seen: str
    lat: float | None
    lon: float | None
    site: str | None
    fraction: str | None
    capacity_l: float | None


class FillLevels(BaseModel):
    items: list[FillLevel]


class HistoryPoint(BaseModel):
    time: str = Field(description="start of the interval")
    fill_pct: float = Field(description="mean of the interval")
    min_pct: float
    max_pct: float
    readings: int
    anomalies: list[str] = Field(description="anomaly kinds flagged in the interval")


class AnomalyOut(BaseModel):
    time: str
    anomaly: str
    value: float


class History(BaseModel):
    device_id: str
    measurement: str = Field(description="fill (eco-box) or rvm_bin (RVM: the fullest bin)")
    start: str = Field(serialization_alias="from")
    end: str = Field(serialization_alias="to")
    every: str = Field(description="the interval used (coarser than asked beyond 5000 points)")
    points: list[HistoryPoint]
    anomalies: list[AnomalyOut]


class ForecastOut(BaseModel):
    rate_pct_per_h: float
    full_at: str | None
    threshold_pct: float
    points: int


class AlertOut(BaseModel):
    alert: str
    state: str
    device_id: str
    region: str
    kind: str
    severity: str
    value: float
    threshold: float | None
    since: str
    episode: str
    cause: str
    site: str | None
    fraction: str | None
    lat: float | None
    lon: float | None
    forecast: ForecastOut | None


class Alerts(BaseModel):
    items: list[AlertOut]


class AlertEvent(BaseModel):
    time: str
    alert: str
    state: str
    device_id: str
    region: str
    kind: str | None
    severity: str | None
    value: float | None
    episode: str | None
    cause: str | None
    site: str | None
    fraction: str | None


class AlertHistory(BaseModel):
    items: list[AlertEvent]
    truncated: bool = Field(description="more events than `limit` in the range: the newest kept")


class CollectionOut(BaseModel):
    time: str
    device_id: str
    region: str
    site: str | None
    fraction: str | None
    fill_before_pct: float
    fill_after_pct: float
    litres: float | None = Field(description="capacity × (before − after), when known")


class Collections(BaseModel):
    items: list[CollectionOut]
    truncated: bool


class RvmDevice(BaseModel):
    device_id: str
    region: str
    containers: int
    transactions: int
    rejected: int
    refund_minor: int


class RvmSummary(BaseModel):
    region: str | None
    start: str = Field(serialization_alias="from")
    end: str = Field(serialization_alias="to")
    containers: int
    containers_by_material: dict[str, int]
    transactions: int
    rejected: int
    refund_minor: int
    devices: list[RvmDevice]
