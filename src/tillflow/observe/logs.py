"""Placeholder (being built): structured logs."""

from __future__ import annotations

from tillflow.observe.settings import ObserveSettings


def configure_logging(settings: ObserveSettings, role: str) -> None:
    """Route the standard library's and structlog's records through one JSON renderer."""
