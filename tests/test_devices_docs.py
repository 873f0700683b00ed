"""docs/protocol.md is what the code does: its examples decode and encode exactly as shown."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

import devices
from devices.schema import ITEM, SPECS

DOC = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text(encoding="utf-8")
RECEIVED_AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
EXAMPLE = re.compile(
    r"Example: `(?P<topic>taza/v1/[^`]+)`\n\n```(?:json|text)\n(?P<payload>.*?)\n```\n\n"
    r"```text\n(?P<lines>.*?)\n```",
    re.S,
)
EXAMPLES = [m.groupdict() for m in EXAMPLE.finditer(DOC)]


def block(after: str, lang: str) -> str:
    m = re.search(re.escape(after) + r"\n\n```" + lang + r"\n(.*?)\n```", DOC, re.S)
    assert m is not None, after
    return m.group(1) + "\n"


def fleet() -> devices.Registry:
    return devices.Registry.parse(block("Example fleet file (CSV):", "csv"), "protocol.md")


def test_every_channel_has_an_example() -> None:
    seen = {devices.parse_topic(e["topic"]) for e in EXAMPLES}
    assert {(t.kind, t.channel) for t in seen} == {
        (kind, channel) for kind, channels in devices.CHANNELS.items() for channel in channels
    }


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["topic"] for e in EXAMPLES])
def test_example_decodes_and_encodes_as_documented(example: dict[str, str]) -> None:
    m = devices.decode(example["topic"], example["payload"].encode(), RECEIVED_AT)
    assert m.extra_fields == ()
    lines = devices.encode(m, fleet().get(m.topic.device_id))
    assert lines == example["lines"].splitlines()


def test_fleet_file_examples_are_valid_and_equal() -> None:
    as_json = devices.Registry.parse(block("The same as JSON:", "json"), "protocol.md", fmt="json")
    assert dict(as_json) == dict(fleet())
    assert len(as_json) == 2


def test_every_field_code_and_reason_is_documented() -> None:
    names = {n for spec in SPECS.values() for n in spec.fields} | set(ITEM.fields)
    names |= {"ts", "seq", "device_id", "items"}
    for name in names:
        assert f"| `{name}` |" in DOC, name
    for code in devices.FAULT_CODES:
        assert f"| `{code}` | {devices.FAULT_CODES[code]} |" in DOC, code
    for reason in devices.Reason:
        assert f"| `{reason}` |" in DOC, reason
    for value in sorted(devices.MATERIALS | devices.MODES | devices.FRACTIONS):
        assert f"`{value}`" in DOC, value


def test_documented_ranges_match_the_schema() -> None:
    rows = dict(re.findall(r"^\| `(\w+)` \| (?:number|integer) \|[^|]*\| ([^|]+) \|", DOC, re.M))
    assert len(rows) >= 12
    for spec in [*SPECS.values(), ITEM]:
        for name, kind in spec.fields.items():
            lo, hi = getattr(kind, "lo", None), getattr(kind, "hi", None)
            if lo is None or name not in rows:
                continue
            text = rows[name].replace("−", "-").replace(" ", "")
            assert text == f"{lo:g}–{hi:g}" or text == f"{lo}–{hi}", (name, rows[name])


def test_influxql_examples_are_listed() -> None:
    assert len(influxql_examples()) == 4


def influxql_examples() -> list[str]:
    """The documented queries (run against the real influxd in test_devices_influx.py)."""
    sql = block("### Querying (InfluxQL examples)", "sql")
    return [line for line in sql.splitlines() if line and not line.startswith("--")]


INTEGER_TS = re.compile(
    r"^\| [^|]+ \| `(-?\d+(?:\.\d+)?)` \| (accepted|`(\w+)`) \| ?(?:`([^`]+)`)? ?\|$", re.M
)


def test_integer_ts_table_is_what_decode_does() -> None:
    table = DOC[DOC.index("**An integer `ts` is epoch milliseconds**") :]
    table = table[: table.index("\n\n", table.index("| `ts` sent as |"))]
    rows = INTEGER_TS.findall(table)
    assert len(rows) == table.count("\n| ") - 1 >= 9  # every row but the header parsed
    for value, outcome, reason, detail in rows:
        payload = f'{{"ts": {value}, "seq": 1, "fill_pct": 5}}'.encode()
        topic = "taza/v1/almaty/ecobox/eb-0042/fill"
        if outcome == "accepted":
            assert devices.decode(topic, payload, RECEIVED_AT).ts_ms == int(value)
            continue
        with pytest.raises(devices.Rejected) as info:
            devices.decode(topic, payload, RECEIVED_AT)
        assert (info.value.reason, info.value.field) == (reason, "ts"), value
        assert detail in info.value.detail, (value, info.value.detail)


def test_feedback_example_is_what_the_service_publishes() -> None:
    from ingest.batch import DeadLetter
    from ingest.feedback import FEEDBACK_TOPIC, Feedback

    section = DOC[DOC.index("## Feedback: why a message was refused") : DOC.index("## Rate limit")]
    topic = re.search(r"on `(taza/v1/[^`]+)` with a string", section)
    assert topic is not None
    payload = block("received at `2026-05-01T12:00:00Z`:", "json").strip().encode()
    with pytest.raises(devices.Rejected) as info:
        devices.decode(topic.group(1), payload, RECEIVED_AT)
    rej = info.value
    letter = DeadLetter(topic.group(1), payload, rej.reason, rej.detail, RECEIVED_AT, rej.field)
    sent: list[tuple[str, bytes]] = []
    feedback = Feedback(
        lambda t, p, qos, retain: sent.append((t, p)), rate_per_s=1, burst=1, total_per_s=1
    )
    feedback.send([letter])
    told = json.loads(block("is told to `taza/v1/_feedback/eb-0042` as:", "json"))
    ((to, doc),) = sent
    assert to == FEEDBACK_TOPIC.format(device_id="eb-0042")
    assert list(json.loads(doc).items()) == list(told.items())
    assert f"```\n{FEEDBACK_TOPIC}\n```" in section
    rows = re.findall(r"^\| `(\w+)`(?:, `(\w+)`)? \|", section, re.M)
    assert {k for row in rows for k in row if k} == set(told), "each key is in the table"


def test_rate_limit_and_feedback_defaults_are_the_documented_ones() -> None:
    from ingest.config import Settings

    fields = Settings.model_fields
    section = DOC[DOC.index("## Rate limit") :]
    assert f"at most **{fields['rate_limit_per_s'].default:g} messages per second**" in section
    assert f"bursts of up to **{fields['rate_limit_burst'].default}**" in section
    feedback = DOC[DOC.index("## Feedback: why a message was refused") :]
    every = 1 / fields["feedback_rate_per_s"].default
    assert f"bursts\nof {fields['feedback_burst'].default}, then one every {every:g} seconds" in (
        feedback
    )
    assert f"default {fields['feedback_total_per_s'].default:g}/s" in feedback
