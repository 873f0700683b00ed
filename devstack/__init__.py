"""Run taza's real neighbours on this machine: the servers, the service, publishers, the demo.

Shared by the integration tests (``tests/``), the benchmarks (``bench/``) and ``make demo``,
and installed with taza so that none of them has to import the test suite:

- :mod:`devstack.servers` — mosquitto, influxd 1.x and victoria-metrics on free 127.0.0.1 ports
- :mod:`devstack.ingest_process` — a real ``taza-ingest run`` child process and its endpoints
- :mod:`devstack.publisher` — a QoS 1 publisher that knows what the broker acknowledged
- :mod:`devstack.metrics` — a Prometheus ``/metrics`` page as numbers (prometheus_client's parser)
- :mod:`devstack.demo` — ``make demo`` (``python -m devstack.demo``)
"""
