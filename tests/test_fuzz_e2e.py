"""The fuzz run: random bytes and random JSON on random topics, through a real mosquitto, a
real taza-ingest and a real influxd.

Hypothesis makes ``TAZA_FUZZ_CASES`` messages (default 3000, about half a minute here; a longer
run: ``TAZA_FUZZ_CASES=100000 .venv/bin/pytest -q tests/test_fuzz_e2e.py``; replay one with
``TAZA_FUZZ_SEED``, printed on failure): any bytes, JSON documents with the contract's field
names and random values, valid messages of the last hour and mutations of them, ``online`` /
``offline``, on topics under ``taza/v1/`` (valid, almost valid, taza's reserved namespaces,
anything) and elsewhere. Each is published (QoS 1) as it is generated; then:

- the service never crashed: the same process, ``/healthz`` 200;
- counts add up: received = everything published under ``taza/v1/``; accepted + rejected +
  ignored = received; every rejection is a dead letter whose message the test published, with
  the reason the contract gives it at its recorded receive time; none is ``internal_error``;
- nothing unintended is written: every point in the database is one of the lines that the
  accepted messages encode to — measurement, tags, fields and time — no other measurement,
  tag key or field key exists, and every such line is there.

Feedback is on (its publishing to random device ids runs too); the rate limit is off, so that
the contract alone decides what is stored (test_ratelimit_e2e.py tests the limit).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

import devices
from devices import Ignored, Message, Rejected
from devstack.ingest_process import http_get, wait_until
from devstack.publisher import Publisher
from ingest.deadletter import decode_payload, read_records
from tests.conftest import MakeIngest, ServerFactory
from tests.test_devices_properties import documents, json_values, messages, mutated
from tests.test_devices_properties import topics as contract_topics
from tests.test_escaping import read_line

pytestmark = pytest.mark.integration

CASES = int(os.environ.get("TAZA_FUZZ_CASES", "3000"))
SEED = int(os.environ.get("TAZA_FUZZ_SEED", str(random.randrange(2**32))))
MEASUREMENTS = {"fill", "status", "rvm_bin", "deposit", "state"}
TAG_KEYS = {"device_id", "kind", "region", "material"}


def mqtt_topic_name(topic: str) -> bool:
    """What a broker takes as a PUBLISH topic: no wildcards, NUL or control characters, not
    ``$``-prefixed (broker-internal), at most 65535 UTF-8 bytes."""
    return (
        bool(topic)
        and not topic.startswith("$")
        and not any(c in topic for c in "+#")
        and all(c.isprintable() or c == " " for c in topic)
        and len(topic.encode()) <= 65535
    )


def _json(value: object) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity literals included, as firmware may


def _live(m: Message, back_ms: int) -> Message:
    """A valid message of the last hour (the strategies' own clock is a fixed date)."""
    return dataclasses.replace(m, ts_ms=int(time.time() * 1000) - back_ms)


live_messages = st.builds(_live, messages(), st.integers(0, 3_600_000))
devices_pool = st.sampled_from(["fz-1", "fz-2", "RVM_9", "eb-0042"])
near_topics = st.builds(
    "taza/v1/{}/{}/{}/{}".format,
    st.sampled_from(["almaty", "astana", "Almaty", "alerts", "_feedback", "_deadletter", ""]),
    st.sampled_from(["ecobox", "rvm", "bin", ""]),
    devices_pool | st.text(max_size=8),
    st.sampled_from(["fill", "status", "deposit", "state", "fill/extra", ""]),
)
topics = st.one_of(
    live_messages.map(lambda m: str(m.topic)),
    near_topics,
    contract_topics,
    st.builds("taza/v1/{}".format, st.text(max_size=30)),
    st.builds("{}/{}".format, st.sampled_from(["taza", "taza/v2", "other", "taz"]), st.text()),
).filter(mqtt_topic_name)
payloads = st.one_of(
    st.binary(max_size=5000),
    documents.map(_json),
    json_values.map(_json),
    mutated().map(lambda case: case[1]),
    st.sampled_from([b"online", b"offline", b"", b"\xff", b"[" * 3000, b"{" * 5000]),
)
cases = st.one_of(
    live_messages.map(lambda m: (str(m.topic), devices.to_payload(m))),
    st.tuples(topics, live_messages.map(devices.to_payload)),
    st.tuples(topics, payloads),
)


def under_intake(topic: str) -> bool:
    return topic == "taza/v1" or topic.startswith("taza/v1/")


def test_random_messages_never_crash_the_service_nor_write_an_unintended_point(
    make_mosquitto: ServerFactory[Any], influxd: Any, influx_db: str, make_ingest: MakeIngest
) -> None:
    broker = make_mosquitto()  # of its own: nothing retained or queued leaks into other tests
    ingest = make_ingest(
        broker.url,
        influxd.url,
        TAZA_INFLUX_DB=influx_db,
        TAZA_ALERTS_ENABLED="false",
        TAZA_RATE_LIMIT_PER_S="0",
    ).start()
    assert ingest.proc is not None
    pid = ingest.proc.pid
    pub = Publisher(broker.host, broker.port, "pub-fuzz")
    sent: list[tuple[str, bytes]] = []
    started = time.monotonic()

    @seed(SEED)
    @settings(
        max_examples=CASES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(cases)
    def publish(case: tuple[str, bytes]) -> None:
        pub.publish([case])
        sent.append(case)

    try:
        publish()
        pub.wait_all_acked()
    finally:
        pub.close()
    why = f"(TAZA_FUZZ_SEED={SEED}, {len(sent)} cases)"
    received = [c for c in sent if under_intake(c[0])]
    wait_until(
        lambda: (
            ingest.metrics().get("taza_messages_received_total") == len(received)
            and ingest.metrics().get("taza_queue_depth") == 0
        ),
        60,
        f"every message under taza/v1/ received and acknowledged {why}",
    )
    assert ingest.proc.poll() is None, f"taza-ingest exited {why}"
    assert ingest.proc.pid == pid
    assert http_get(ingest.url + "/healthz")[0] == 200, why

    m = ingest.metrics()
    rejected = sum(v for k, v in m.items() if k.startswith("taza_messages_rejected_total{"))
    accepted, ignored = m["taza_messages_accepted_total"], m["taza_messages_ignored_total"]
    assert accepted + rejected + ignored == len(received), why

    # every rejection: a dead letter of a message we sent, for the reason the contract gives
    records = list(read_records(ingest.data_dir / "deadletter"))
    assert len(records) == rejected, why
    letters = Counter((r["topic"], decode_payload(r)) for r in records)
    assert not letters - Counter(received), f"dead letters of messages never sent {why}"
    for r in records:
        assert r["reason"] != "internal_error", f"taza failed on {r} {why}"
        at = datetime.fromisoformat(r["received_at"])
        with pytest.raises(Rejected) as refusal:
            devices.decode(r["topic"], decode_payload(r), at)
        assert refusal.value.reason == r["reason"], (r, why)

    # the rest: accepted or ignored as the contract says; their lines are what may be stored
    now = datetime.now(UTC)
    expected: dict[tuple[str, tuple[tuple[str, str], ...], int], list[dict[str, object]]] = {}
    states: Counter[tuple[tuple[tuple[str, str], ...], tuple[tuple[str, object], ...]]] = Counter()
    n_accepted = n_ignored = 0
    for topic, payload in (Counter(received) - letters).elements():
        try:
            message = devices.decode(topic, payload, now)
        except Ignored:
            n_ignored += 1
            continue
        n_accepted += 1
        for line in devices.encode(message):
            p = read_line(line)
            tags = tuple(sorted(p.tags.items()))
            if p.measurement == "state":
                states[(tags, tuple(sorted(p.fields.items())))] += 1
            else:
                expected.setdefault((p.measurement, tags, p.time_ns), []).append(p.fields)
    assert (n_accepted, n_ignored) == (accepted, ignored), why

    stored = _points(influxd, influx_db)
    assert {p[0] for p in stored} <= MEASUREMENTS, why
    field_keys = {k for fields in expected.values() for f in fields for k in f}
    field_keys |= {k for (_, f) in states for k, _ in f}
    assert {k for p in stored for k in p[3]} <= field_keys, f"a field nobody sent {why}"
    assert {k for p in stored for k, _ in p[1]} <= TAG_KEYS, f"a tag nobody sent {why}"
    seen: set[tuple[str, tuple[tuple[str, str], ...], int]] = set()
    state_seen: Counter[tuple[object, ...]] = Counter()
    for measurement, tags, time_ns, fields in stored:
        if measurement == "state":
            key = (tags, tuple(sorted(fields.items())))
            assert key in states, f"a state point no message made: {key} {why}"
            state_seen[key] += 1
            continue
        candidates = expected.get((measurement, tags, time_ns))
        assert candidates, f"a point no message made: {measurement} {tags} {time_ns} {why}"
        assert any(_same(fields, c) for c in candidates), (fields, candidates, why)
        seen.add((measurement, tags, time_ns))
    assert seen == set(expected), f"accepted lines missing from the database {why}"
    # state points carry the receive time, which one socket read shares; each state message is
    # still a point of its own (the pipeline keeps a device's state times distinct)
    assert state_seen == states, f"state messages lost or invented {why}"
    reasons = Counter(str(r["reason"]) for r in records).most_common(5)
    print(
        f"fuzz: {len(sent)} cases in {time.monotonic() - started:.1f} s: {len(received)} under "
        f"taza/v1/, {accepted:.0f} accepted ({len(stored)} points), {ignored:.0f} ignored, "
        f"{rejected:.0f} rejected (top: {reasons}) {why}"
    )


def _points(
    influxd: Any, db: str
) -> list[tuple[str, tuple[tuple[str, str], ...], int, dict[str, object]]]:
    """Every point: (measurement, tags, time, fields), tags told from fields by SHOW TAG KEYS."""
    out = []
    for row in influxd.query("SHOW MEASUREMENTS", db):
        name = str(row["name"])
        tag_keys = {str(r["tagKey"]) for r in influxd.query(f'SHOW TAG KEYS FROM "{name}"', db)}
        for point in influxd.query(f'SELECT * FROM "{name}"', db):
            time_ns = int(point.pop("time"))
            tags = tuple(sorted((k, str(v)) for k, v in point.items() if k in tag_keys and v))
            fields = {k: v for k, v in point.items() if k not in tag_keys and v is not None}
            out.append((name, tags, time_ns, fields))
    return out


def _same(got: dict[str, object], want: dict[str, object]) -> bool:
    """Field values equal, as JSON gives them back (1.0 comes back as 1)."""
    if set(got) != set(want):
        return False
    for k, w in want.items():
        g = got[k]
        if isinstance(w, bool) or isinstance(g, bool) or isinstance(w, str):
            if g != w:
                return False
        elif float(g) != float(w):  # type: ignore[arg-type]
            return False
    return True
