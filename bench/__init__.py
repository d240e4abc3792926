"""Benchmarks: run with `python -m bench ...`; they print medians and ratios, never assert."""
