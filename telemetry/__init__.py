"""Telemetry below the runtime: the Prometheus metrics every process of a node writes (`metrics`).

It imports nothing of jodo's but `domain.enums` (the label values), so the runtime (actors/,
supervisors/) and the application (jodo/) both stand on it: no arrow runs up from the runtime.
"""
