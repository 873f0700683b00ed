"""``make demo``: local servers, taza-ingest and a simulated fleet end to end, then a report.

``python -m devstack.demo [--short] [--keep-running] ...``; docs/demo.md describes it. One
module per job:

- ``__main__`` — the command line: options, the order of the steps, the exit status
- :mod:`devstack.demo.stack` — the steps: servers, fleet file, taza-ingest, the fleet run
- :mod:`devstack.demo.supervisor` — child processes, signals, the demo's directory
- :mod:`devstack.demo.console` — what the user sees while it runs: lines and the live table
- :mod:`devstack.demo.report` — after the run: verify, fullest bins, dead letters, next steps
- :mod:`devstack.demo.crew` — the crew app: alerts over MQTT
- :mod:`devstack.demo.firmware` — the devices' side: feedback topics, a flooding device
- :mod:`devstack.demo.security` — API tokens, and a production-profile broker's refusals

It reads its siblings through their machine interfaces only: ``taza-sim run --progress jsonl``
records, ``taza-sim run --json`` and ``taza-ingest deadletter --json`` documents, and
taza-ingest's ``/metrics`` through prometheus_client's parser.
"""
