"""One module per resource; each has a ``router`` mounted under ``/api/v1``."""
