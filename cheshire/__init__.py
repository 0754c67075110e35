"""The composition root (runtime.py) and its per-domain wiring (wiring.py): the only code that knows
every part of Cheshire. Run with `python -m bot`."""
