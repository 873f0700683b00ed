"""``python -m ingest`` is ``taza-ingest``."""

from ingest.cli import main

main()
