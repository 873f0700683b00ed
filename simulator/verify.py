"""``taza-sim verify``: compare a ground-truth log with what InfluxDB holds.

For every logged message the contract itself (``devices.decode`` with the publish time as the
receive time, then ``devices.encode``) says what should be in the database: the exact points,
each identified by (measurement, time, material tag, seq, txn_id). Per device, one InfluxQL
query over the device's time range fetches what is there; comparing the two sets gives:

- delivered: a valid message all of whose points are present;
- lost: a valid message with points missing (``partial`` when only some are missing);
- duplicated: points of the device that belong to no logged message, or that appear more often
  than once (InfluxDB overwrites identical points, so a second copy means a different tag set);
- correctly rejected: a message the contract rejects, with no point in the database (and, with
  ``--deadletter``, present in the dead-letter store);
- wrongly accepted: a message the contract rejects, yet a point sits at its time slot.

A deliberate duplicate (the same bytes published twice) is one message: delivered once, not
duplicated — that is the idempotency promise. ``state`` messages are counted but not checked
(their points carry the receive time, which the log cannot know), and messages logged with
``"acked": false`` may or may not be present (never lost, never duplicated).
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import orjson

import devices
from devices.lineprotocol import SLOT_NS
from simulator.groundtruth import LogEntry, read_log
from simulator.lineproto import parse_line

MEASUREMENTS = ("fill", "status", "deposit", "rvm_bin")
# A faulty message cannot be decoded, so its slot is asked of the encoder for a stand-in with
# the same ts and seq (the only inputs of devices.timestamp_ns).
_STAND_IN = devices.Topic("x", devices.Kind.ECOBOX, "x", devices.Channel.FILL)

Key = tuple[str, int, str | None, int | None, str | None]  # measurement, ns, material, seq, txn


class VerifyError(Exception):
    """The verification could not run (database unreachable, bad log, ...)."""


@dataclass(slots=True)
class _Valid:
    entry: LogEntry
    keys: frozenset[Key]
    copies: int = 1
    optional: bool = False  # logged without PUBACK


@dataclass(slots=True)
class _Faulty:
    entry: LogEntry
    reason: str
    window: tuple[int, int] | None  # [lo, hi] ns where a wrongly accepted point would sit
    copies: int = 1


@dataclass(slots=True)
class DeviceReport:
    messages: int = 0  # distinct valid messages (a duplicate's copies count once)
    delivered: int = 0
    lost: int = 0
    partial: int = 0
    duplicated: int = 0  # points
    faulty: int = 0
    correctly_rejected: int = 0
    wrongly_accepted: int = 0
    not_in_deadletter: int = 0
    unconfirmed: int = 0
    unconfirmed_present: int = 0
    copies_sent: int = 0  # deliberate duplicates published (same bytes again)
    state: int = 0
    points_found: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class Report:
    log: str
    database: str
    devices: dict[str, DeviceReport] = field(default_factory=dict)
    lost: list[dict[str, object]] = field(default_factory=list)
    wrongly_accepted: list[dict[str, object]] = field(default_factory=list)
    not_in_deadletter: list[dict[str, object]] = field(default_factory=list)
    duplicated: list[dict[str, object]] = field(default_factory=list)
    ignored: int = 0
    deadletter_checked: bool = False

    def totals(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for rep in self.devices.values():
            total.update(rep.as_dict())
        return {name: total[name] for name in DeviceReport.__slots__}

    @property
    def ok(self) -> bool:
        t = self.totals()
        return not (t["lost"] or t["partial"] or t["wrongly_accepted"] or t["not_in_deadletter"])

    def as_dict(self, examples: int = 20) -> dict[str, object]:
        return {
            "ok": self.ok,
            "log": self.log,
            "database": self.database,
            "deadletter_checked": self.deadletter_checked,
            "totals": self.totals(),
            "ignored": self.ignored,
            "devices": {k: v.as_dict() for k, v in sorted(self.devices.items())},
            "examples": {
                "lost": self.lost[:examples],
                "wrongly_accepted": self.wrongly_accepted[:examples],
                "not_in_deadletter": self.not_in_deadletter[:examples],
                "duplicated": self.duplicated[:examples],
            },
        }


# ----- InfluxDB 1.x ----------------------------------------------------------------------------


class Influx:
    """InfluxQL over the 1.x HTTP API (``/query``), chunked so no row limit truncates a result."""

    def __init__(
        self,
        url: str,
        db: str,
        *,
        user: str | None = None,
        password: str | None = None,
        rp: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.db = db
        self.user = user
        self.password = password
        self.rp = rp
        self.timeout = timeout

    def query(self, q: str) -> list[dict[str, object]]:
        """Series of the first statement: dicts with name, columns, values (merged chunks)."""
        params = {"db": self.db, "q": q, "epoch": "ns", "chunked": "true", "chunk_size": "10000"}
        if self.user:
            params["u"] = self.user
            params["p"] = self.password or ""
        if self.rp:
            params["rp"] = self.rp
        body = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(f"{self.url}/query", data=body, method="POST")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            raise VerifyError(f"InfluxDB {self.url} answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise VerifyError(f"cannot reach InfluxDB at {self.url}: {exc}") from None
        series: dict[str, dict[str, object]] = {}
        for chunk in raw.splitlines():
            if not chunk.strip():
                continue
            doc = orjson.loads(chunk)
            if "error" in doc:
                raise VerifyError(f"InfluxDB: {doc['error']}")
            for result in doc.get("results", []):
                if "error" in result:
                    raise VerifyError(f"InfluxDB: {result['error']} (query: {q})")
                for s in result.get("series", []) or []:
                    key = s["name"] + json.dumps(s.get("tags") or {}, sort_keys=True)
                    if key in series:
                        series[key]["values"].extend(s.get("values") or [])  # type: ignore[attr-defined]
                    else:
                        series[key] = {
                            "name": s["name"],
                            "columns": s["columns"],
                            "values": list(s.get("values") or []),
                        }
        return list(series.values())

    def ping(self) -> None:
        self.query("SHOW MEASUREMENTS LIMIT 1")


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _row_keys(series: Iterable[dict[str, object]]) -> Iterator[Key]:
    for s in series:
        name = str(s["name"])
        columns: list[str] = list(s["columns"])  # type: ignore[call-overload]
        i_time = columns.index("time")
        i_mat = columns.index("material") if "material" in columns else None
        i_seq = columns.index("seq") if "seq" in columns else None
        i_txn = columns.index("txn_id") if "txn_id" in columns else None
        for row in s["values"]:  # type: ignore[attr-defined]
            yield (
                name,
                int(row[i_time]),
                row[i_mat] if i_mat is not None else None,
                int(row[i_seq]) if i_seq is not None and row[i_seq] is not None else None,
                row[i_txn] if i_txn is not None else None,
            )


# ----- expectations ----------------------------------------------------------------------------

_TS = re.compile(rb'"ts"\s*:\s*(-?\d+)')
_SEQ = re.compile(rb'"seq"\s*:\s*(\d+)')


def _point_key(line: str) -> Key:
    p = parse_line(line)
    seq = p.fields.get("seq")
    txn = p.fields.get("txn_id")
    return (
        p.measurement,
        p.time_ns,
        p.tags.get("material"),
        seq if isinstance(seq, int) else None,
        txn if isinstance(txn, str) else None,
    )


def _window(entry: LogEntry) -> tuple[int, int] | None:
    ts_ms, seq = entry.ts_ms, entry.seq
    if ts_ms is None:
        m = _TS.search(entry.payload)
        ts_ms = int(m.group(1)) if m else None
    if seq is None:
        m = _SEQ.search(entry.payload)
        seq = int(m.group(1)) if m else None
    if ts_ms is None or seq is None:
        return None
    stand_in = devices.Message(_STAND_IN, ts_ms, seq, devices.Fill(0.0))
    try:
        return devices.timestamp_ns(stand_in), devices.timestamp_ns(stand_in, SLOT_NS - 1)
    except ValueError:  # a ts the database cannot hold: nothing can sit there
        return None


def _deadletters(directory: Path) -> Counter[tuple[str, bytes]]:
    """(topic, payload) of every dead-letter record under ``directory`` (*.jsonl, *.jsonl.gz)."""
    found: Counter[tuple[str, bytes]] = Counter()
    files = sorted(directory.rglob("*.jsonl")) + sorted(directory.rglob("*.jsonl.gz"))
    for path in files:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            for raw in fh:
                if not raw.strip():
                    continue
                try:
                    record = orjson.loads(raw)
                    payload = base64.b64decode(record.get("payload", ""))
                    found[(str(record.get("topic", "")), payload)] += 1
                except (orjson.JSONDecodeError, ValueError, TypeError):
                    continue
    return found


def _describe(entry: LogEntry, **extra: object) -> dict[str, object]:
    info: dict[str, object] = {
        "line": entry.line,
        "device_id": entry.device_id,
        "topic": entry.topic,
        "seq": entry.seq,
        "ts_ms": entry.ts_ms,
        "fault": entry.fault,
    }
    info.update(extra)
    return info


def verify(
    log_path: str | Path,
    influx: Influx,
    *,
    deadletter: Path | None = None,
    max_age: timedelta = timedelta(days=7),
    strict: bool = False,
    workers: int = 4,
) -> Report:
    """Build the report; raise :class:`VerifyError` when the comparison cannot be made."""
    limits = devices.Limits(max_age=max_age, strict=strict)
    report = Report(log=str(log_path), database=f"{influx.url} db={influx.db}")
    valid: dict[str, dict[tuple[str, bytes], _Valid]] = defaultdict(dict)
    faulty: dict[str, dict[tuple[str, bytes], _Faulty]] = defaultdict(dict)
    try:
        entries = list(read_log(log_path))
    except (OSError, ValueError) as exc:
        raise VerifyError(str(exc)) from None
    for entry in entries:
        rep = report.devices.setdefault(entry.device_id, DeviceReport())
        if entry.channel == "state":
            rep.state += 1
            continue
        if entry.fault == "duplicate":
            rep.copies_sent += 1
        ident = (entry.topic, entry.payload)
        known_valid = valid[entry.device_id].get(ident)
        if known_valid is not None:
            known_valid.copies += 1
            known_valid.optional = known_valid.optional and not entry.acked
            continue
        known_faulty = faulty[entry.device_id].get(ident)
        if known_faulty is not None:
            known_faulty.copies += 1
            continue
        try:
            message = devices.decode(entry.topic, entry.payload, entry.t, limits)
        except devices.Ignored:
            report.ignored += 1
            continue
        except devices.Rejected as exc:
            faulty[entry.device_id][ident] = _Faulty(entry, exc.reason.value, _window(entry))
            continue
        keys = frozenset(_point_key(line) for line in devices.encode(message))
        valid[entry.device_id][ident] = _Valid(entry, keys, optional=not entry.acked)

    dead = _deadletters(deadletter) if deadletter is not None else None
    report.deadletter_checked = dead is not None

    def fetch(device_id: str) -> tuple[str, list[Key]]:
        times: list[int] = []
        for v in valid[device_id].values():
            times.extend(k[1] for k in v.keys)
        for f in faulty[device_id].values():
            if f.window is not None:
                times.extend(f.window)
        if not times:
            return device_id, []
        names = ",".join(f'"{m}"' for m in MEASUREMENTS)
        q = (
            f'SELECT * FROM {names} WHERE "device_id" = {_quote(device_id)} '
            f"AND time >= {min(times)} AND time <= {max(times)}"
        )
        return device_id, list(_row_keys(influx.query(q)))

    device_ids = sorted(set(valid) | set(faulty))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = dict(pool.map(fetch, device_ids))

    for device_id in device_ids:
        rep = report.devices[device_id]
        found = Counter(results[device_id])
        rep.points_found = sum(found.values())
        explained: set[Key] = set()
        for v in valid[device_id].values():
            explained |= v.keys
            present = sum(1 for k in v.keys if found[k] > 0)
            if v.optional:
                rep.unconfirmed += 1
                rep.unconfirmed_present += int(present > 0)
                continue
            rep.messages += 1
            if present == len(v.keys):
                rep.delivered += 1
                continue
            in_dead = dead is not None and dead[(v.entry.topic, v.entry.payload)] > 0
            if present == 0:
                rep.lost += 1
            else:
                rep.partial += 1
            report.lost.append(
                _describe(
                    v.entry, missing=len(v.keys) - present, points=len(v.keys), deadlettered=in_dead
                )
            )
        extra = [k for k in found if k not in explained]
        for f in faulty[device_id].values():
            rep.faulty += 1
            hits = []
            if f.window is not None:
                lo, hi = f.window
                hits = [k for k in extra if lo <= k[1] <= hi]
            if hits:
                rep.wrongly_accepted += 1
                report.wrongly_accepted.append(_describe(f.entry, reason=f.reason))
                explained.update(hits)
                continue
            rep.correctly_rejected += 1
            if dead is not None and dead[(f.entry.topic, f.entry.payload)] == 0:
                rep.not_in_deadletter += 1
                report.not_in_deadletter.append(_describe(f.entry, reason=f.reason))
        for key, count in found.items():
            surplus = count if key not in explained else count - 1
            if surplus > 0:
                rep.duplicated += surplus
                report.duplicated.append(
                    {
                        "device_id": device_id,
                        "measurement": key[0],
                        "time_ns": key[1],
                        "material": key[2],
                        "seq": key[3],
                        "txn_id": key[4],
                        "count": count,
                    }
                )
    return report


def render(report: Report, max_rows: int = 20) -> str:
    """A human report: totals, then the devices with problems."""
    t = report.totals()
    lines = [
        f"taza-sim verify: {report.log} vs {report.database}",
        f"  devices {len(report.devices)}, messages {t['messages']} (+{t['copies_sent']} "
        f"deliberate duplicate copies), faulty {t['faulty']}, state {t['state']}",
        f"  delivered {t['delivered']}  lost {t['lost']}  partial {t['partial']}  "
        f"duplicated points {t['duplicated']}",
        f"  correctly rejected {t['correctly_rejected']}  wrongly accepted "
        f"{t['wrongly_accepted']}"
        + (f"  not in dead-letter {t['not_in_deadletter']}" if report.deadletter_checked else ""),
    ]
    if t["unconfirmed"]:
        lines.append(
            f"  sent without PUBACK {t['unconfirmed']} (present {t['unconfirmed_present']}): "
            "not counted"
        )
    bad = [
        (d, r)
        for d, r in sorted(report.devices.items())
        if r.lost or r.partial or r.wrongly_accepted or r.duplicated or r.not_in_deadletter
    ]
    if bad:
        lines.append("")
        lines.append(
            f"  {'device':<24} {'msgs':>6} {'deliv':>6} {'lost':>5} {'part':>5} {'dup':>5} "
            f"{'faulty':>6} {'rej':>5} {'wrong':>5}"
        )
        for device_id, r in bad[:max_rows]:
            lines.append(
                f"  {device_id:<24} {r.messages:>6} {r.delivered:>6} {r.lost:>5} {r.partial:>5} "
                f"{r.duplicated:>5} {r.faulty:>6} {r.correctly_rejected:>5} "
                f"{r.wrongly_accepted:>5}"
            )
        if len(bad) > max_rows:
            lines.append(f"  … {len(bad) - max_rows} more devices with problems (--json: all)")
    for title, items in (
        ("lost", report.lost),
        ("wrongly accepted", report.wrongly_accepted),
        ("not in dead-letter", report.not_in_deadletter),
    ):
        if items:
            lines.append("")
            lines.append(f"  first {min(len(items), 5)} {title}:")
            for item in items[:5]:
                lines.append(
                    f"    log line {item['line']}: {item['topic']} seq={item['seq']} "
                    f"ts_ms={item['ts_ms']} fault={item['fault']}"
                )
    lines.append("")
    lines.append("  OK: nothing lost, nothing wrongly accepted" if report.ok else "  FAILED")
    return "\n".join(lines)
