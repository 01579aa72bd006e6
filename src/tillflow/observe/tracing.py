"""Placeholder (being built): OpenTelemetry tracing."""

from __future__ import annotations

from tillflow.observe.settings import ObserveSettings


def configure_tracing(settings: ObserveSettings, role: str) -> None:
    """Set the process's tracer provider: an OTLP exporter when configured, nothing when not."""
