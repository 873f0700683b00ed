"""Which MQTT intake the service runs: ``TAZA_MQTT_CLIENT`` (lean: taza's own codec on an
asyncio Protocol, the default; paho: paho-mqtt, kept selectable for comparison)."""

from __future__ import annotations

import asyncio
from typing import Literal

from ingest.batch import Incoming
from ingest.metrics import Metrics
from ingest.mqtt import IntakeOptions, MqttIntake
from ingest.mqtt_lean import LeanIntake

Intake = MqttIntake | LeanIntake
ClientKind = Literal["lean", "paho"]


def make_intake(
    kind: ClientKind,
    options: IntakeOptions,
    metrics: Metrics,
    out: asyncio.Queue[Incoming | None],
) -> Intake:
    if kind == "paho":
        return MqttIntake(options, metrics, out)
    return LeanIntake(options, metrics, out)
