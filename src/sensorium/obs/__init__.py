"""Observability: Prometheus metrics."""
