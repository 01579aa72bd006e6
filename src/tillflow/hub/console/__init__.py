"""Placeholder router for the operations console (being built)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
