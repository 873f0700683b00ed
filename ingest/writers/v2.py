"""The InfluxDB v2 write API through influxdb-client's asyncio client.

Works with InfluxDB 2.x, 3.x, Cloud, 1.8+ and stores that accept ``/api/v2/write``
(VictoriaMetrics). Only its single-request write is used: its batching WriteApi drops a
batch once its retries run out, so batching, retries and the spool stay ours.
"""

from __future__ import annotations

import structlog
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.rest import ApiException

from ingest.config import Settings
from ingest.writers.base import classify_exception, classify_status

log = structlog.get_logger("ingest.writer")


class V2Writer:
    def __init__(self, settings: Settings) -> None:
        self._url = settings.influx_url
        self._org = settings.influx_org
        self._bucket = settings.influx_bucket
        self._token = settings.influx_token.get_secret_value() if settings.influx_token else ""
        self._timeout_ms = int(settings.influx_timeout_s * 1000)
        self._ca_file = str(settings.influx_ca_file) if settings.influx_ca_file else None
        self._client: InfluxDBClientAsync | None = None
        self.description = f"InfluxDB v2 API {self._url} org={self._org} bucket={self._bucket}"

    @property
    def client(self) -> InfluxDBClientAsync:
        if self._client is None:
            self._client = InfluxDBClientAsync(
                url=self._url,
                token=self._token,
                org=self._org,
                timeout=self._timeout_ms,
                verify_ssl=True,
                ssl_ca_cert=self._ca_file,  # None: the system's trust store
            )
        return self._client

    async def start(self) -> None:
        _ = self.client

    async def write(self, body: bytes) -> None:
        try:  # precision: the client's default, nanoseconds
            await self.client.write_api().write(bucket=self._bucket, org=self._org, record=body)
        except ApiException as exc:
            if not exc.status:  # the client's own "cannot prepare a request": not the data's fault
                raise classify_exception(exc) from exc
            reply = exc.body if isinstance(exc.body, bytes | str) else None
            headers = {str(k): str(v) for k, v in dict(exc.headers or {}).items()}
            raise classify_status(int(exc.status), reply, headers) from exc
        except Exception as exc:  # every failure is a decision, made in base.py
            raise classify_exception(exc) from exc

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except Exception as exc:  # ping must answer yes/no whatever the client raises
            log.warning("database_ping_failed", error=classify_exception(exc).message)  # e.g. TLS
            return False

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()  # type: ignore[no-untyped-call]
            self._client = None
