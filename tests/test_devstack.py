"""devstack's readers of machine interfaces, one module at a time (no servers).

- devstack.metrics reads a page written by prometheus_client itself, labels and escapes
  included, as the tests (series) and the demo (totals) use it;
- the demo's live table is built from a ``taza-sim run --progress jsonl`` record;
- the demo's stderr reader keeps progress records apart from everything else it must show.
"""

from __future__ import annotations

import io
import json
import queue
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from devstack import metrics
from devstack.demo.console import progress_header, progress_row
from devstack.demo.stack import read_progress


def _page() -> str:
    registry = CollectorRegistry()
    rejected = Counter("taza_messages_rejected", "r", ["reason"], registry=registry)
    rejected.labels("not_json").inc(3)
    rejected.labels('odd "one"\\').inc(2)
    Counter("taza_messages_received", "r", registry=registry).inc(40)
    Gauge("taza_queue_depth", "q", registry=registry).set(7)
    return generate_latest(registry).decode()


def test_series_keys_are_how_a_series_is_written() -> None:
    got = metrics.series(_page())
    assert got['taza_messages_rejected_total{reason="not_json"}'] == 3.0
    assert got['taza_messages_rejected_total{reason="odd \\"one\\"\\\\"}'] == 2.0
    assert got["taza_messages_received_total"] == 40.0
    assert got["taza_queue_depth"] == 7.0


def test_totals_sum_over_label_sets() -> None:
    got = metrics.totals(_page())
    assert got["taza_messages_rejected_total"] == 5.0
    assert got["taza_messages_received_total"] == 40.0


def test_progress_row_from_a_jsonl_record() -> None:
    record = {
        "event": "progress",
        "elapsed_s": 5.002,
        "sim_time": "2026-12-01T06:30:00Z",
        "published": 12345,
        "rate_per_s": 793,
        "online": 66,
        "devices": 66,
        "queued": 3,
        "reconnects": 0,
    }
    m = {
        "taza_messages_received_total": 12000.0,
        "taza_messages_rejected_total": 61.0,
        "taza_points_written_total": 14000.0,
        "taza_queue_depth": 12.0,
    }
    row = progress_row(record, m, 5.0)
    assert " ".join(row.split()) == "5s Tue 01 Dec 11:30 12,345 793 66/66 │ 12,000 61 14,000 12"
    header = progress_header()[1]
    assert header.index("│") == row.index("│"), "row and header columns do not line up"
    before = progress_row({}, {}, 0.0)
    assert "starting" in before
    assert before.split()[-6:] == ["-", "│", "0", "0", "0", "0"]


def test_read_progress_separates_records_from_other_lines(tmp_path: Path) -> None:
    first = {"event": "progress", "published": 1, "online": 2, "devices": 3}
    second = {"event": "progress", "published": 9, "online": 3, "devices": 3}
    lines = [
        json.dumps(first),
        "warning: broker refused a connection, retrying",
        json.dumps(second),
        json.dumps({"event": "something else"}),
        "",
    ]
    stream = io.BytesIO(("\n".join(lines) + "\n").encode())
    log = tmp_path / "sim.log"
    latest: dict[str, object] = {}
    others: queue.Queue[str] = queue.Queue()
    read_progress(stream, log, latest, others)
    assert latest == second
    shown = [others.get_nowait() for _ in range(others.qsize())]
    assert shown == [lines[1], lines[3]]
    assert log.read_text() == "\n".join(lines) + "\n", "the log must keep every line"
