"""The operators' tools: a client of taza-ingest's HTTP API (``/api/v1``) and the ``taza`` CLI.

Nothing here reads the database or the broker directly: every answer is the API's, so the CLI
and the API cannot disagree. The exception is :mod:`operators.provision`
(``taza devices add|rotate|revoke|export|tls``), which writes the broker's own files.
"""
