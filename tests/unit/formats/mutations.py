"""Hypothesis strategies that damage real JSON samples: keys deleted, values swapped for other
types, numbers and strings changed, lists emptied or doubled — what a careless integration or a
changed API version sends."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import strategies as st

ODD_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        [
            *(
                "",
                "0",
                "-1",
                "-0.01",
                "12.345",
                "1e999",
                "1_000",
                "NaN",
                " 5 ",
                "9" * 40,
                "USD",
                "XXX",
                "JPY",
            ),
            *("2020-13-45T25:00:00Z", "2020-01-01T00:00:00", "COMPLETED", "OPEN", "paid", "refund"),
        ]
    ),
)


def _slots(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key-or-index) in `value`, iteratively."""
    found: list[tuple[Any, Any]] = []
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, child in node.items():
                found.append((node, key))
                stack.append(child)
        elif isinstance(node, list):
            for i, child in enumerate(node):
                found.append((node, i))
                stack.append(child)
    return found


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> bytes:
    """`document` with a few random damages, as JSON bytes (pretty or one line)."""
    doc = copy.deepcopy(document)
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        slots = _slots(doc)
        if not slots:
            break
        container, key = slots[draw(st.integers(min_value=0, max_value=len(slots) - 1))]
        action = draw(st.sampled_from(["delete", "scalar", "empty", "double", "retype"]))
        if action == "delete":
            del container[key]
        elif action == "scalar":
            container[key] = draw(ODD_SCALARS)
        elif action == "empty":
            container[key] = draw(st.sampled_from([[], {}]))
        elif action == "double" and isinstance(container[key], list):
            container[key] = container[key] * 2
        else:
            old = container[key]
            container[key] = (
                str(old)
                if isinstance(old, int | float)
                else draw(st.integers(-5, 10**6))
                if isinstance(old, str)
                else old
            )
    return json.dumps(doc, indent=draw(st.sampled_from([None, 2]))).encode()
