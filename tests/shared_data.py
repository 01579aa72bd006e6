"""Where the real retail samples are: `shared/data` beside the repository (see DESIGN.md)."""

from __future__ import annotations

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def sample(*parts: str) -> Path:
    """A sample file; a missing one fails the test (the samples ship beside every checkout)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"sample {path} is missing: the shared data must sit beside the repository")
    return path
