"""Import rates of the format parsers on the real samples, beside a same-run baseline.

POSLog: the NCR ACS file, mapped to canonical transactions, against a plain lxml parse of the
same bytes. CSV: the Online Retail sample, grouped into canonical transactions, against a
plain `csv` read of the same file. Each is repeated for about a second; rates are records of
the input per second (transactions for POSLog, rows for CSV), so the ratio is baseline time /
import time.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lxml import etree

from tillflow.formats import csv_batch, poslog
from tillflow.formats.records import ImportContext

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NCR = SHARED_DATA / "poslog" / "ncr-acs-2.1" / "POSLog.xml"
ONLINE_RETAIL = SHARED_DATA / "online-retail" / "online_retail_dedup_sample_4792rows.csv"


def _seconds_per_run(run: Callable[[], object], budget: float = 1.0) -> float:
    """The best time of one run, repeating for about `budget` seconds (at least 3 runs)."""
    best = float("inf")
    spent, runs = 0.0, 0
    while spent < budget or runs < 3:
        started = time.perf_counter()
        run()
        took = time.perf_counter() - started
        best = min(best, took)
        spent += took
        runs += 1
    return best


def _figure(name: str, unit: str, count: int, import_s: float, baseline_s: float) -> dict[str, Any]:
    value, base = count / import_s, count / baseline_s
    return {
        "name": name,
        "value": round(value),
        "unit": unit,
        "baseline": round(base),
        "ratio": round(value / base, 3),
    }


def format_figures() -> list[dict[str, Any]]:
    """The POSLog and CSV import figures (empty when the samples are not beside the repository)."""
    if not NCR.exists() or not ONLINE_RETAIL.exists():
        return []
    context = ImportContext()
    xml = NCR.read_bytes()
    transactions = sum(1 for _ in poslog.parse(io.BytesIO(xml), context, name=NCR.name))
    xml_import = _seconds_per_run(
        lambda: sum(1 for _ in poslog.parse(io.BytesIO(xml), context, name=NCR.name))
    )
    xml_base = _seconds_per_run(lambda: etree.parse(io.BytesIO(xml)))

    text = ONLINE_RETAIL.read_bytes()
    rows = sum(1 for _ in csv.reader(io.StringIO(text.decode("utf-8")))) - 1
    csv_import = _seconds_per_run(
        lambda: sum(1 for _ in csv_batch.parse(io.BytesIO(text), context, name=ONLINE_RETAIL.name))
    )
    csv_base = _seconds_per_run(
        lambda: sum(1 for _ in csv.reader(io.TextIOWrapper(io.BytesIO(text), newline="")))
    )
    return [
        _figure("POSLog import (NCR file)", "transactions/s", transactions, xml_import, xml_base),
        _figure("CSV import (Online Retail)", "rows/s", rows, csv_import, csv_base),
    ]
