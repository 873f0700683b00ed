"""``python -m tests.python_source TRACE``: one of ``tests/test_compiled.py``'s traces, run with
every module of pyproject.toml's ``[tool.taza] compiled`` list imported from its ``.py``
(``devstack.pysource``, installed before anything else of the project is imported): the
subprocess of the tests that compare both forms.
"""

from __future__ import annotations

import sys

from devstack import pysource


def main(trace: str) -> None:
    pysource.install()
    from tests import test_compiled

    sys.stdout.write("\n".join(test_compiled.TRACES[trace]()) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
