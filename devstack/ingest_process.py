"""Drive a real ``taza-ingest`` process from tests and bench/: start, wait ready, metrics, stop.

No mocks: the service runs as its own process (so SIGTERM and kill -9 are real), found as
``python -m ingest`` of the interpreter running this code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devstack.metrics import series

__all__ = ["INGEST", "IngestProcess", "http_get", "wait_until"]

INGEST = [sys.executable, "-m", "ingest"]


def wait_until(pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# No proxies: an http_proxy in the environment must never see loopback traffic.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 2.0, token: str | None = None) -> tuple[int, str]:
    """(status, body); (0, "") when nothing answers. ``token``: sent as a bearer token (an
    API with ``TAZA_API_TOKENS_FILE``)."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with _opener.open(request, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


@dataclass
class IngestProcess:
    """``taza-ingest run`` as a child process with its own data dir, HTTP port and log.

    ``cwd`` is where it runs (default: the caller's), for relative paths in ``env``.
    """

    data_dir: Path
    env: dict[str, str]
    http_port: int
    cwd: Path | None = None
    log_path: Path = field(init=False)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / "ingest.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, wait_ready: bool = True, timeout: float = 30) -> IngestProcess:
        env = {
            **os.environ,
            "TAZA_DATA_DIR": str(self.data_dir),
            "TAZA_HTTP_ADDR": f"127.0.0.1:{self.http_port}",
            "TAZA_LOG_FORMAT": "json",
            **self.env,
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [*INGEST, "run"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd
        )
        log.close()
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"taza-ingest exited {self.proc.returncode}:\n{self.log_tail()}"
                )
            return http_get(self.url + "/readyz")[0] == 200

        wait_until(ready, timeout, "taza-ingest /readyz")

    def metrics(self) -> dict[str, float]:
        """{series: value}, e.g. ``taza_messages_rejected_total{reason="not_json"}``."""
        status, text = http_get(self.url + "/metrics")
        assert status == 200, f"/metrics answered {status}"
        return series(text)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"taza-ingest did not stop on {sig}:\n{self.log_tail()}") from None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def log_events(self) -> list[dict[str, object]]:
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events
