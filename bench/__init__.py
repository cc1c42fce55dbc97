"""Benchmarks: measured, never asserted. Run `python -m bench --quick` (or `make bench`)."""
