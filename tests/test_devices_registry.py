"""devices.Registry: fleet files in CSV and JSON, with errors an operator can act on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devices import DeviceInfo, Kind, Registry, RegistryError

HEADER = "device_id,kind,region,lat,lon,capacity_l,fraction,site,report_interval_s"
EB = "eb-0001,ecobox,almaty,43.2389,76.8897,1100,plastic,residential,900"
RVM = 'rvm-07,rvm,astana,51.1282,71.4307,,,"mall, 2nd floor",60'


def csv_file(tmp_path: Path, *rows: str, header: str = HEADER) -> Path:
    p = tmp_path / "fleet.csv"
    p.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return p


def json_file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "fleet.json"
    p.write_text(text, encoding="utf-8")
    return p


def error(path: Path) -> RegistryError:
    with pytest.raises(RegistryError) as info:
        Registry.load(path)
    return info.value


EB_INFO = DeviceInfo(
    "eb-0001", Kind.ECOBOX, "almaty", 43.2389, 76.8897, 1100.0, "plastic", "residential", 900
)
RVM_INFO = DeviceInfo(
    "rvm-07", Kind.RVM, "astana", 51.1282, 71.4307, None, None, "mall, 2nd floor", 60
)


def test_csv_fleet_loads_devices_by_id(tmp_path: Path) -> None:
    reg = Registry.load(csv_file(tmp_path, EB, RVM))
    assert len(reg) == 2
    assert reg.get("eb-0001") == EB_INFO
    assert reg.get("rvm-07") == RVM_INFO
    assert reg.get("nope") is None
    assert "eb-0001" in reg
    assert list(reg) == ["eb-0001", "rvm-07"]


def test_json_fleet_loads_the_same_devices(tmp_path: Path) -> None:
    rows = [
        {
            "device_id": "eb-0001",
            "kind": "ecobox",
            "region": "almaty",
            "lat": 43.2389,
            "lon": 76.8897,
            "capacity_l": 1100,
            "fraction": "plastic",
            "site": "residential",
            "report_interval_s": 900,
        },
        {
            "device_id": "rvm-07",
            "kind": "rvm",
            "region": "astana",
            "lat": 51.1282,
            "lon": 71.4307,
            "capacity_l": None,
            "site": "mall, 2nd floor",
            "report_interval_s": 60,
        },
    ]
    reg = Registry.load(json_file(tmp_path, json.dumps(rows, indent=2)))
    assert dict(reg) == {"eb-0001": EB_INFO, "rvm-07": RVM_INFO}


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_save_and_load_round_trip(tmp_path: Path, suffix: str) -> None:
    reg = Registry([EB_INFO, RVM_INFO])
    path = tmp_path / f"out{suffix}"
    reg.save(path)
    assert dict(Registry.load(path)) == dict(reg)


def test_format_is_sniffed_without_a_known_extension(tmp_path: Path) -> None:
    p = tmp_path / "fleet.txt"
    p.write_text(Registry([EB_INFO]).dumps("json"), encoding="utf-8")
    assert Registry.load(p).get("eb-0001") == EB_INFO
    p.write_text(Registry([EB_INFO]).dumps("csv"), encoding="utf-8")
    assert Registry.load(p).get("eb-0001") == EB_INFO


def test_csv_with_bom_blank_lines_and_crlf(tmp_path: Path) -> None:
    p = tmp_path / "fleet.csv"
    p.write_bytes(("\ufeff" + HEADER + "\r\n\r\n" + EB + "\r\n").encode())
    assert Registry.load(p).get("eb-0001") == EB_INFO


def test_empty_fleets(tmp_path: Path) -> None:
    assert len(Registry.load(csv_file(tmp_path))) == 0
    assert len(Registry.load(json_file(tmp_path, "[ ]"))) == 0


# -- CSV errors name the line and the field -------------------------------------------------


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        ("eb-0002,bin,almaty,43,76,1100,plastic,park,900", "kind", "ecobox or rvm"),
        ("eb 2,ecobox,almaty,43,76,1100,plastic,park,900", "device_id", "does not match"),
        ("eb-0002,ecobox,Almaty,43,76,1100,plastic,park,900", "region", "does not match"),
        ("eb-0002,ecobox,alerts,43,76,1100,plastic,park,900", "region", "reserved"),
        ("eb-0002,ecobox,almaty,91,76,1100,plastic,park,900", "lat", "outside"),
        ("eb-0002,ecobox,almaty,43,-181,1100,plastic,park,900", "lon", "outside"),
        ("eb-0002,ecobox,almaty,nan,76,1100,plastic,park,900", "lat", "not a number"),
        ("eb-0002,ecobox,almaty,4_3,76,1100,plastic,park,900", "lat", "not a number"),
        ("eb-0002,ecobox,almaty,,76,1100,plastic,park,900", "lat", "required"),
        ("eb-0002,ecobox,almaty,43,76,0,plastic,park,900", "capacity_l", "greater than 0"),
        ("eb-0002,ecobox,almaty,43,76,,plastic,park,900", "capacity_l", "required"),
        ("eb-0002,ecobox,almaty,43,76,1100,,park,900", "fraction", "required"),
        ("eb-0002,ecobox,almaty,43,76,1100,ewaste,park,900", "fraction", "one of"),
        ("rvm-2,rvm,almaty,43,76,,Plastic,park,900", "fraction", "one of"),
        ("eb-0002,ecobox,almaty,43,76,1100,paper," + "s" * 65 + ",900", "site", "64"),
        ('eb-0002,ecobox,almaty,43,76,1100,paper,"a\tb",900', "site", "printable"),
        ("eb-0002,ecobox,almaty,43,76,1100,paper,C:\\park,900", "site", "backslash"),
        ("eb-0002,ecobox,almaty,43,76,1100,paper,park,0", "report_interval_s", "outside"),
        ("eb-0002,ecobox,almaty,43,76,1100,paper,park,-5", "report_interval_s", "whole number"),
        ("eb-0002,ecobox,almaty,43,76,1100,paper,park,900.0", "report_interval_s", "whole"),
        ("eb-0002,ecobox,almaty,43,76,1100,paper,park,", "report_interval_s", "required"),
    ],
)
def test_csv_field_errors_name_line_and_field(
    tmp_path: Path, row: str, field: str, words: str
) -> None:
    e = error(csv_file(tmp_path, EB, RVM, row))
    assert (e.line, e.field) == (4, field)
    assert words in e.detail
    assert f"fleet.csv:4 [{field}]" in str(e)


def test_csv_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    bad = "eb-0009,ecobox,almaty,43,76,1100,plastic,park,soon"
    e = error(csv_file(tmp_path, "", EB, "", bad))
    assert (e.line, e.field) == (5, "report_interval_s")


def test_site_with_a_newline_is_refused(tmp_path: Path) -> None:
    e = error(csv_file(tmp_path, 'rvm-08,rvm,astana,51,71,,,"two\nlines",60'))
    assert (e.line, e.field) == (2, "site")


def test_duplicate_device_id_names_both_lines(tmp_path: Path) -> None:
    e = error(csv_file(tmp_path, EB, RVM, EB.replace("plastic", "paper")))
    assert (e.line, e.field) == (4, "device_id")
    assert "line 2" in e.detail


@pytest.mark.parametrize(
    ("header", "field", "words"),
    [
        (HEADER.replace("site", "stie"), "stie", "unknown column"),
        (HEADER.replace(",site", ""), "site", "missing column"),
        (HEADER + ",site", "site", "twice"),
    ],
)
def test_csv_header_errors(tmp_path: Path, header: str, field: str, words: str) -> None:
    e = error(csv_file(tmp_path, header=header))
    assert (e.line, e.field) == (1, field)
    assert words in e.detail


def test_csv_row_with_wrong_column_count(tmp_path: Path) -> None:
    e = error(csv_file(tmp_path, EB, "eb-0003,ecobox,almaty"))
    assert e.line == 3
    assert "columns" in e.detail


def test_empty_csv_file(tmp_path: Path) -> None:
    p = tmp_path / "fleet.csv"
    p.write_text("", encoding="utf-8")
    assert error(p).line == 1


def test_missing_file_is_a_registry_error(tmp_path: Path) -> None:
    e = error(tmp_path / "nope.csv")
    assert e.line is None
    assert "cannot read" in e.detail


def test_non_utf8_file_is_a_registry_error(tmp_path: Path) -> None:
    p = tmp_path / "fleet.csv"
    p.write_bytes(HEADER.encode() + b"\n\xff\n")
    assert "cannot read" in error(p).detail


# -- JSON errors name the line of the object and the field ----------------------------------


def _json_fleet(*devices: dict[str, object]) -> str:
    """One device object per line group, so line numbers are predictable."""
    return "[\n" + ",\n".join(json.dumps(d) for d in devices) + "\n]\n"


GOOD = {
    "device_id": "eb-0001",
    "kind": "ecobox",
    "region": "almaty",
    "lat": 43.2,
    "lon": 76.9,
    "capacity_l": 1100,
    "fraction": "plastic",
    "site": "park",
    "report_interval_s": 900,
}


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"lat": "43.2"}, "lat", "must be a number"),
        ({"lat": True}, "lat", "must be a number"),
        ({"report_interval_s": 900.0}, "report_interval_s", "integer"),
        ({"report_interval_s": True}, "report_interval_s", "integer"),
        ({"report_interval_s": "900"}, "report_interval_s", "integer"),
        ({"kind": ["ecobox"]}, "kind", "must be a string"),
        ({"stie": "park"}, "stie", "unknown field"),
        ({"capacity_l": None}, "capacity_l", "required"),
        ({"fraction": None}, "fraction", "required"),
        ({"device_id": "eb-0001"}, "device_id", "duplicate"),
    ],
)
def test_json_errors_name_line_and_field(
    tmp_path: Path, change: dict[str, object], field: str, words: str
) -> None:
    third = {**GOOD, "device_id": "eb-0003", **change}
    text = _json_fleet(GOOD, {**GOOD, "device_id": "eb-0002"}, third)
    e = error(json_file(tmp_path, text))
    assert (e.line, e.field) == (4, field)
    assert words in e.detail


def test_json_line_numbers_follow_pretty_printed_objects(tmp_path: Path) -> None:
    text = json.dumps([GOOD, {**GOOD, "device_id": "eb-2", "lon": 200}], indent=2)
    e = error(json_file(tmp_path, text))
    second_object_line = text.splitlines().index("  {", 2) + 1
    assert (e.line, e.field) == (second_object_line, "lon")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('{"devices": []}', 1, "array"),
        ("[\n1\n]", 2, "not a JSON object"),
        ('[\n{"device_id": "x",\n]', 3, "JSON syntax"),
        ('[\n{"lat": NaN}\n]', 2, "NaN"),
        ("[] []", 1, "after the array"),
        (f"[{json.dumps(GOOD)} {json.dumps(GOOD)}]", 1, "expected ','"),
    ],
)
def test_json_syntax_errors(tmp_path: Path, text: str, line: int, words: str) -> None:
    e = error(json_file(tmp_path, text))
    assert e.line == line
    assert words in e.detail


def test_registry_constructor_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Registry([EB_INFO, EB_INFO])
