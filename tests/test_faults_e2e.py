"""End to end under faults: real mosquitto → real ``taza-ingest`` → fault proxy → real
influxd / VictoriaMetrics, and a small tmpfs under ``TAZA_DATA_DIR`` for a full disk.

Each test checks that the service stays up, holds acknowledgements while it cannot store,
resumes by itself, and that every message ends up stored (counted in the database) or
dead-lettered exactly once.
"""

from __future__ import annotations

import errno
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.ingest_process import IngestProcess, http_get, wait_until
from devstack.publisher import Publisher, fill_messages
from tests.conftest import MakeIngest
from tests.faultproxy import Fault, FaultProxy
from tests.test_ingest_e2e import assert_all_stored, influx_fill_count, wait_stored

pytestmark = pytest.mark.integration

LATIN1_503 = Fault(
    status=503,
    body="<html><h1>503 Service indisponible</h1><p>Réessayez plus tard.</p></html>".encode(
        "latin-1"
    ),
    headers={"Content-Type": "text/html; charset=iso-8859-1"},
)


@pytest.fixture
def proxy_to() -> Iterator[Callable[[str], FaultProxy]]:
    made: list[FaultProxy] = []

    def make(upstream: str) -> FaultProxy:
        proxy = FaultProxy(upstream).start()
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.stop()


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path, str], Path]]:
    """``tmpfs(path, "256k")`` mounts a small tmpfs at ``path``; unmounted after the test.
    Needs root (the tests run as root here); if the mount fails, the test fails with why."""
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(
                f"cannot mount a tmpfs at {path} (needs root): {done.stderr.strip()}",
                pytrace=False,
            )
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def fill_disk(directory: Path) -> Path:
    """Write a filler file until the filesystem is full; deleting it frees the space."""
    filler = directory / "filler.bin"
    with open(filler, "wb", buffering=0) as fh, pytest.raises(OSError, match="No space") as full:  # noqa: PT012
        while True:
            fh.write(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC, full.value
    return filler


def events(ingest: IngestProcess, name: str) -> list[dict[str, object]]:
    return [e for e in ingest.log_events() if e.get("event") == name]


def assert_alive(ingest: IngestProcess) -> None:
    assert ingest.proc is not None
    assert ingest.proc.poll() is None, f"taza-ingest exited:\n{ingest.log_tail()}"


def wait_drained(ingest: IngestProcess, timeout: float = 30) -> None:
    def drained() -> bool:
        assert_alive(ingest)
        m = ingest.metrics()
        return m["taza_queue_depth"] == 0 and m["taza_spool_bytes"] == 0

    wait_until(drained, timeout, "every message acknowledged and the spool empty")


# 1. database error pages, resets, hangs, Retry-After ---------------------------------------


def test_error_pages_resets_hangs_and_retry_after_lose_nothing_v1(
    mosquitto: Any,
    influxd: Any,
    influx_db: str,
    make_ingest: MakeIngest,
    proxy_to: Callable[[str], FaultProxy],
) -> None:
    proxy = proxy_to(influxd.url)
    ingest = make_ingest(
        mosquitto.url, proxy.url, TAZA_INFLUX_DB=influx_db, TAZA_INFLUX_TIMEOUT_S="1"
    ).start()
    msgs = fill_messages(20, 60, prefix="fault")
    chunks = [msgs[i : i + 200] for i in range(0, len(msgs), 200)]
    pub = Publisher(mosquitto.host, mosquitto.port, f"pub-{influx_db}")
    faults = [
        None,
        LATIN1_503,  # a gateway's error page: killed the service before (UnicodeDecodeError)
        Fault(reset=True),
        Fault(hang_s=3),  # longer than TAZA_INFLUX_TIMEOUT_S
        Fault(status=502, body=b"\xff\xfe\x00 not text"),
    ]
    for fault, chunk in zip(faults, chunks, strict=False):
        proxy.inject(fault)
        before = len(proxy.writes())
        pub.publish((t, p) for t, p, _ in chunk)
        pub.wait_all_acked()
        wait_until(lambda b=before: len(proxy.writes()) > b, 20, f"a write through {fault}")
        if fault is not None:
            wait_until(lambda f=fault: _faulted(proxy, f), 20, f"fault {fault} answered")
            time.sleep(1.0)
            assert_alive(ingest)
            proxy.inject(None)
        wait_drained(ingest)
    # Retry-After: the database asks for 3 s; the next attempt must wait that long.
    proxy.inject(Fault(status=429, headers={"Retry-After": "3"}, times=1))
    pub.publish((t, p) for t, p, _ in chunks[5])
    pub.wait_all_acked()
    wait_drained(ingest)
    writes = proxy.writes()
    throttled = next(i for i, s in enumerate(writes) if s.status == 429)
    gap = writes[throttled + 1].at - writes[throttled].at
    assert gap >= 2.9, f"next write {gap:.2f} s after a 429 with Retry-After: 3"

    wait_stored(influxd, influx_db, len(msgs))
    assert_all_stored(influxd, influx_db, msgs)
    assert influx_fill_count(influxd, influx_db) == len(msgs)
    m = ingest.metrics()
    assert m['taza_write_errors_total{kind="unavailable"}'] >= 5
    assert m["taza_messages_acked_total"] == m["taza_messages_received_total"]
    dead_letters = (ingest.data_dir / "deadletter" / "deadletter.jsonl").read_bytes()
    assert dead_letters == b"", "an unavailable database is never a reason to dead-letter"
    pub.close()
    assert ingest.stop() == 0


def _faulted(proxy: FaultProxy, fault: Fault) -> bool:
    kind = "reset" if fault.reset else "hang" if fault.hang_s else "status"
    return bool(proxy.writes(kind))


def test_latin1_error_page_and_reset_v2_writer(
    mosquitto: Any,
    victoria: Any,
    make_ingest: MakeIngest,
    proxy_to: Callable[[str], FaultProxy],
) -> None:
    proxy = proxy_to(victoria.url)
    proxy.inject(LATIN1_503)
    ingest = make_ingest(
        mosquitto.url,
        proxy.url,
        TAZA_INFLUX_API="v2",
        TAZA_INFLUX_BUCKET="taza",
        TAZA_INFLUX_ORG="taza",
        TAZA_INFLUX_TOKEN="unused",
        TAZA_INFLUX_TIMEOUT_S="1",
    ).start()
    msgs = fill_messages(20, 20, prefix="faultv2")
    pub = Publisher(mosquitto.host, mosquitto.port, "pub-faultv2")
    pub.publish((t, p) for t, p, _ in msgs[:200])
    pub.wait_all_acked()
    wait_until(lambda: bool(proxy.writes("status")), 20, "the error page answered")
    proxy.inject(Fault(reset=True))
    pub.publish((t, p) for t, p, _ in msgs[200:])
    pub.wait_all_acked()
    wait_until(lambda: bool(proxy.writes("reset")), 20, "a reset")
    time.sleep(1.0)
    assert_alive(ingest)
    proxy.inject(None)
    wait_drained(ingest)
    match = '{__name__="fill_fill_pct",device_id=~"faultv2-.*"}'
    assert victoria.wait_samples(match, len(msgs), timeout=60) == len(msgs)
    pub.close()
    assert ingest.stop() == 0


# 2. disk full under the spool --------------------------------------------------------------


def test_disk_full_under_spool_holds_acks_then_delivers_exactly_once(
    mosquitto: Any,
    influxd: Any,
    influx_db: str,
    make_ingest: MakeIngest,
    proxy_to: Callable[[str], FaultProxy],
    tmpfs: Callable[[Path, str], Path],
) -> None:
    proxy = proxy_to(influxd.url)
    ingest = make_ingest(mosquitto.url, proxy.url, TAZA_INFLUX_DB=influx_db)
    spool_dir = tmpfs(ingest.data_dir / "spool", "256k")
    ingest.start()
    filler = fill_disk(spool_dir)
    proxy.inject(LATIN1_503)  # the database is unavailable: batches must go to the spool
    msgs = fill_messages(10, 30, prefix="spoolfull")
    pub = Publisher(mosquitto.host, mosquitto.port, f"pub-{influx_db}")
    pub.publish((t, p) for t, p, _ in msgs)
    pub.wait_all_acked()
    wait_until(lambda: ingest.metrics()["taza_spool_full"] == 1, 30, "taza_spool_full = 1")
    time.sleep(3)  # several retries of the full spool
    assert_alive(ingest)
    m = ingest.metrics()
    assert m["taza_messages_acked_total"] == 0, "nothing acknowledged while nothing is durable"
    assert m["taza_messages_received_total"] > 0
    assert m['taza_store_write_errors_total{reason="ENOSPC",store="spool"}'] >= 2
    status, body = http_get(ingest.url + "/readyz")
    assert status == 503, body
    full = events(ingest, "spool_full")
    assert len(full) == 1, f"one log line for the episode, got {len(full)}"
    assert full[0]["reason"] == "ENOSPC"

    filler.unlink()  # space returns: the spool takes the batches, all are acknowledged
    wait_until(lambda: ingest.metrics()["taza_spool_full"] == 0, 30, "taza_spool_full = 0")
    wait_until(lambda: ingest.metrics()["taza_queue_depth"] == 0, 30, "all acknowledged")
    assert ingest.metrics()["taza_spool_bytes"] > 0
    assert influx_fill_count(influxd, influx_db) == 0
    proxy.inject(None)  # the database returns: replay
    wait_drained(ingest)
    wait_stored(influxd, influx_db, len(msgs))
    assert_all_stored(influxd, influx_db, msgs)
    assert influx_fill_count(influxd, influx_db) == len(msgs), "exactly once"
    assert http_get(ingest.url + "/readyz")[0] == 200
    pub.close()
    assert ingest.stop() == 0


# 3. disk full under the dead-letter store ---------------------------------------------------


def test_disk_full_under_deadletter_store_holds_acks_then_records_once(
    mosquitto: Any,
    influxd: Any,
    influx_db: str,
    make_ingest: MakeIngest,
    tmpfs: Callable[[Path, str], Path],
) -> None:
    ingest = make_ingest(mosquitto.url, influxd.url, TAZA_INFLUX_DB=influx_db)
    dl_dir = tmpfs(ingest.data_dir / "deadletter", "128k")
    ingest.start()
    filler = fill_disk(dl_dir)
    good = fill_messages(10, 10, prefix="dlfull")
    bad = [(f"taza/v1/almaty/ecobox/dlbad-{i}/fill", b"not json %d" % i) for i in range(20)]
    mixed = [(t, p) for t, p, _ in good]
    for i, msg in enumerate(bad):
        mixed.insert(i * 5, msg)
    pub = Publisher(mosquitto.host, mosquitto.port, f"pub-{influx_db}")
    pub.publish(mixed)
    pub.wait_all_acked()
    wait_until(lambda: ingest.metrics()["taza_deadletter_full"] == 1, 30, "deadletter full")
    time.sleep(3)
    assert_alive(ingest)
    m = ingest.metrics()
    assert m["taza_queue_depth"] > 0, "the batch with rejections is held, not acknowledged"
    assert m.get('taza_messages_rejected_total{reason="not_json"}', 0) == 0
    status, body = http_get(ingest.url + "/readyz")
    assert status == 503, body
    assert '"deadletter_full":true' in body.replace(" ", "")
    full = events(ingest, "deadletter_store_full")
    assert len(full) == 1, f"one log line for the episode, got {len(full)}"
    assert full[0]["reason"] == "ENOSPC"

    filler.unlink()
    wait_drained(ingest)
    wait_stored(influxd, influx_db, len(good))
    assert_all_stored(influxd, influx_db, good)
    records = [
        line
        for line in (dl_dir / "deadletter.jsonl").read_bytes().splitlines()
        if b'"not_json"' in line
    ]
    assert len(records) == len(bad), "every rejection recorded exactly once"
    m = ingest.metrics()
    assert m['taza_messages_rejected_total{reason="not_json"}'] == len(bad)
    assert m["taza_deadletter_full"] == 0
    assert http_get(ingest.url + "/readyz")[0] == 200
    pub.close()
    assert ingest.stop() == 0


# 7. InfluxDB max-values-per-tag ------------------------------------------------------------


def test_max_values_per_tag_is_one_clear_error_and_few_requests(
    mosquitto: Any,
    make_influxd: Callable[..., Any],
    make_ingest: MakeIngest,
    proxy_to: Callable[[str], FaultProxy],
) -> None:
    influxd = make_influxd(max_values_per_tag=50)
    influxd.create_database("taza")
    proxy = proxy_to(influxd.url)
    ingest = make_ingest(mosquitto.url, proxy.url, TAZA_INFLUX_DB="taza").start()
    pub = Publisher(mosquitto.host, mosquitto.port, "pub-limit")
    known = fill_messages(50, 2, prefix="lim")  # exactly the limit: all stored
    pub.publish((t, p) for t, p, _ in known)
    pub.wait_all_acked()
    wait_stored(influxd, "taza", len(known))
    wait_drained(ingest)
    # 50 known devices keep reporting, 30 new ones (beyond the limit) join.
    later = fill_messages(80, 3, prefix="lim", ts0_ms=known[-1][2][1] + 10_000)
    refused = [m for m in later if int(m[2][0].split("-")[1]) >= 50]
    writes_before = len(proxy.writes())
    pub.publish((t, p) for t, p, _ in later)
    pub.wait_all_acked()
    wait_drained(ingest)
    stored = [m for m in later if m not in refused]
    wait_stored(influxd, "taza", len(known) + len(stored))
    assert_all_stored(influxd, "taza", known + stored)
    requests = len(proxy.writes()) - writes_before
    print(f"write requests for {len(refused)} refused of {len(later)} lines: {requests}")
    assert requests <= len(refused), f"{requests} write requests for {len(refused)} refusals"

    records = [
        e
        for e in (ingest.data_dir / "deadletter" / "deadletter.jsonl").read_text().splitlines()
        if e
    ]
    assert len(records) == len(refused)
    assert all('"refused_by_database"' in r and "max-values-per-tag" in r for r in records)
    m = ingest.metrics()
    assert m['taza_points_refused_by_limit_total{setting="max-values-per-tag"}'] == len(refused)
    assert m['taza_messages_rejected_total{reason="refused_by_database"}'] == len(refused)
    limit_lines = events(ingest, "database_limit_reached")
    assert len(limit_lines) == 1, f"one log line, got {len(limit_lines)}"
    assert limit_lines[0]["setting"] == "max-values-per-tag"
    pub.close()
    assert ingest.stop() == 0


def test_influxd_config_generated_for_tests_and_demo_has_no_tag_value_limit(
    tmp_path: Path,
) -> None:
    """A national fleet has more than influxd's default 100,000 device ids per tag key."""
    from devstack.servers import InfluxDB1

    assert "max-values-per-tag = 0" in InfluxDB1(tmp_path).config_text()
