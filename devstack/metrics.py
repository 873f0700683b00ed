"""A Prometheus text page as numbers, read with prometheus_client's own parser.

One reader for every ``/metrics`` taza code looks at (taza-ingest's, victoria-metrics'), so
escaping, label order and the exposition format's corners are the library's job, not ours.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["series", "series_key", "totals"]


def series_key(name: str, labels: dict[str, str]) -> str:
    """``name`` or ``name{k="v",...}``, labels in page order: how a series is written."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return f"{name}{{{inner}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def series(text: str) -> dict[str, float]:
    """{series key: value}, e.g. ``taza_messages_rejected_total{reason="not_json"}: 3.0``."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[series_key(sample.name, sample.labels)] = float(sample.value)
    return out


def totals(text: str) -> dict[str, float]:
    """{sample name: value summed over its label sets}, e.g. all rejections by any reason."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
    return out
