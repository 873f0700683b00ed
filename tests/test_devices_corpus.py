"""The corpus of bad payloads in tests/data/bad/: each file is refused with its named reason."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

import devices

CORPUS = Path(__file__).parent / "data" / "bad"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
RECEIVED_AT = datetime.fromisoformat(MANIFEST["received_at"].replace("Z", "+00:00"))
CASES: dict[str, dict[str, object]] = MANIFEST["cases"]


def test_every_file_is_in_the_manifest_and_every_entry_has_a_file() -> None:
    files = {p.name for p in CORPUS.iterdir()} - {"manifest.json", "README.md"}
    assert files == set(CASES)


def test_the_corpus_covers_every_decode_reason() -> None:
    not_from_decode = {
        devices.Reason.UNREGISTERED,
        devices.Reason.REFUSED_BY_DATABASE,
        devices.Reason.INTERNAL_ERROR,
        devices.Reason.RATE_LIMITED,  # set by the service from the topic, before any decode
    }
    covered = {devices.Reason(str(case["reason"])) for case in CASES.values()}
    assert covered == set(devices.Reason) - not_from_decode


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_payload_is_refused_with_its_reason(name: str) -> None:
    case = CASES[name]
    assert name.split("__", 1)[0] == case["reason"], "file name and manifest disagree"
    payload = (CORPUS / name).read_bytes()
    strict = bool(case.get("strict", False))
    with pytest.raises(devices.Rejected) as info:
        devices.decode(str(case["topic"]), payload, RECEIVED_AT, devices.Limits(strict=strict))
    assert info.value.reason == case["reason"], info.value.detail
    if strict:  # strict-only cases are accepted by default, with the extra field counted
        m = devices.decode(str(case["topic"]), payload, RECEIVED_AT)
        assert m.extra_fields
