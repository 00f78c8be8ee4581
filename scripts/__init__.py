"""Developer scripts (run with ``python -m scripts.NAME``)."""
