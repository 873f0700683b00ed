"""Events → InfluxDB line protocol (``collection``, ``anomaly``, ``alert``) and MQTT messages.

Pure functions. Escaping is ``devices.escaping``'s (the one place for it), so these points
follow the same rules as the raw ones (tags sorted by key, floats always in float syntax).

MQTT, for crews (QoS 1) on ``taza/v1/alerts/{region}/{device_id}/{alert}``: while firing, a
retained JSON message; on clear a non-retained ``resolved`` message, then an empty retained
payload, so a crew app that connects sees exactly what is firing now. :func:`plan_mqtt` decides
what a delivered batch publishes: transitions older than ``max_age_s`` (a drained backlog) go
to history only, while the retained topic always shows the present.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from devices.escaping import float_field, string_field, tag_value
from ingest.fleet.events import AlertState, AlertTransition, Anomaly, Collection, Event, Source

ALERT_TOPIC = "taza/v1/alerts/{region}/{device_id}/{alert}"
ALERT_FILTER = "taza/v1/alerts/#"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339(ms: int) -> str:
    """``2026-05-01T11:59:30.250Z``: UTC, milliseconds."""
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")[:-6] + "Z"


def _registry_tags(source: Source) -> tuple[str, str]:
    """(``,fraction=…`` or "", ``,site=…`` or "")."""
    info = source.info
    if info is None:
        return "", ""
    fraction = f",fraction={tag_value(info.fraction)}" if info.fraction else ""
    site = f",site={tag_value(info.site)}" if info.site else ""
    return fraction, site


def line(event: Event) -> str:
    """The line-protocol line of one event (no trailing newline)."""
    s = event.source
    dev = tag_value(s.device_id)
    region = tag_value(s.region)
    if type(event) is Collection:
        fraction, site = _registry_tags(s)
        return (
            f"collection,device_id={dev}{fraction},region={region}{site} "
            f"fill_before_pct={float_field(event.fill_before_pct)},"
            f"fill_after_pct={float_field(event.fill_after_pct)} {event.time_ns}"
        )
    if type(event) is Anomaly:
        return (
            f"anomaly,anomaly={tag_value(event.anomaly.value)},device_id={dev},region={region} "
            f"value={float_field(event.value)} {event.time_ns}"
        )
    if type(event) is AlertTransition:
        fraction, site = _registry_tags(s)
        return (
            f"alert,alert={tag_value(event.alert)},device_id={dev}{fraction},"
            f"kind={tag_value(s.kind)},region={region}{site} "
            f"state={string_field(event.state.value)},severity={string_field(event.severity)},"
            f"value={float_field(event.value)},episode={string_field(event.episode)},"
            f"cause={string_field(event.cause.value)} {event.time_ns}"
        )
    raise TypeError(f"not a fleet event: {type(event).__name__}")


def lines(events: Sequence[Event]) -> list[str]:
    return [line(e) for e in events]


def alert_topic(t: AlertTransition) -> str:
    s = t.source
    return ALERT_TOPIC.format(region=s.region, device_id=s.device_id, alert=t.alert)


def alert_document(t: AlertTransition) -> dict[str, object]:
    """The JSON object of an alert message (firing or resolved)."""
    s = t.source
    doc: dict[str, object] = {
        "state": t.state.value,
        "alert": t.alert,
        "device_id": s.device_id,
        "region": s.region,
        "kind": s.kind,
        "severity": t.severity.value,
        "value": t.value,
        "threshold": t.threshold,
        "since": rfc3339(t.since_ms),
        "episode": t.episode,
        "cause": t.cause.value,
    }
    info = s.info
    if info is not None:
        doc.update(
            lat=info.lat,
            lon=info.lon,
            site=info.site,
            fraction=info.fraction,
            capacity_l=info.capacity_l,
            report_interval_s=info.report_interval_s,
        )
    if t.state is AlertState.RESOLVED:
        doc["resolved_at"] = rfc3339(t.ts_ms)
    elif t.forecast is not None:
        f = t.forecast
        doc["forecast"] = {
            "rate_pct_per_h": f.rate_pct_per_h,
            "full_at": None if f.full_at_ms is None else rfc3339(f.full_at_ms),
            "threshold_pct": f.threshold_pct,
            "points": f.points,
        }
    return doc


def alert_payload(t: AlertTransition) -> bytes:
    return orjson.dumps(alert_document(t))


@dataclass(frozen=True, slots=True)
class MqttMessage:
    topic: str
    payload: bytes
    retain: bool
    live: bool  # a fresh notification (False: only brings the retained topic up to date)
    qos: int = 1


def plan_mqtt(events: Sequence[Event], now_ms: int, max_age_s: float) -> list[MqttMessage]:
    """What to publish for the alert transitions of one delivered batch, in order.

    - firing, and still firing at the end of the batch: retained firing message (``live``
      only if younger than ``max_age_s``: an old one just makes the retained topic true);
    - firing and resolved in the batch: both published if young, nothing if old (history);
    - resolved: if young, the ``resolved`` message; always the empty retained payload, which
      removes a retained firing message an earlier batch may have left.
    """
    oldest = now_ms - int(max_age_s * 1000)
    transitions = [e for e in events if type(e) is AlertTransition]
    resolved_in_batch = {t.episode for t in transitions if t.state is AlertState.RESOLVED}
    fired_in_batch = {t.episode for t in transitions if t.state is AlertState.FIRING}
    fired_young = {
        t.episode for t in transitions if t.state is AlertState.FIRING and t.ts_ms >= oldest
    }
    out: list[MqttMessage] = []
    for t in transitions:
        young = t.ts_ms >= oldest
        topic = alert_topic(t)
        if t.state is AlertState.FIRING:
            if t.episode in resolved_in_batch and not young:
                continue
            out.append(MqttMessage(topic, alert_payload(t), True, young))
        else:
            fired_old = t.episode in fired_in_batch and t.episode not in fired_young
            if fired_old and not young:
                continue
            if young:
                out.append(MqttMessage(topic, alert_payload(t), False, True))
            out.append(MqttMessage(topic, b"", True, False))
    return out
