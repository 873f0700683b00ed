"""``python -m simulator.cli`` is ``taza-sim`` (the demo starts it this way)."""

from simulator.cli import main

main(prog_name="taza-sim")
