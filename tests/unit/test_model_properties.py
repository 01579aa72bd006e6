"""Property: every consistently computed transaction is accepted, survives JSON unchanged, and balances.

The strategy builds transactions the way a till would: price the lines, take the modifiers off,
compute the tax (inside the price or on top of it), then take the money in one to three tenders,
possibly giving cash change. It never consults the model's own arithmetic.
"""

from __future__ import annotations

import json
import string
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tillflow.model import (
    CardDetails,
    Customer,
    LineAction,
    LineItem,
    LineRef,
    PriceModifier,
    TaxLine,
    Tender,
    TenderKind,
    Totals,
    Transaction,
    TransactionKind,
    TransactionRef,
    UnitOfMeasure,
    minor_unit,
    round_to_minor,
)

CURRENCIES = ("EUR", "USD", "JPY", "KWD")
TAX_RATES = (
    Decimal("0"),
    Decimal("0.05"),
    Decimal("0.07"),
    Decimal("0.08875"),
    Decimal("0.10"),
    Decimal("0.20"),
)
ZERO = Decimal(0)

idents = st.text(alphabet=string.ascii_letters + string.digits + "_.-", min_size=1, max_size=16)


def money(draw: st.DrawFn, currency: str, low: int, high: int) -> Decimal:
    """An amount between `low` and `high` minor units, written with exactly the currency's decimals."""
    return draw(st.integers(low, high)) * minor_unit(currency)


def split(draw: st.DrawFn, total: Decimal, parts: int, currency: str) -> list[Decimal]:
    """`total` cut into `parts` pieces in minor units (pieces carry the sign of `total`)."""
    quantum = minor_unit(currency)
    units = int(abs(total) / quantum)
    cuts = sorted(draw(st.lists(st.integers(0, units), min_size=parts - 1, max_size=parts - 1)))
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, units], strict=True)]
    sign = -1 if total < 0 else 1
    return [sign * size * quantum for size in sizes]


@st.composite
def line_items(draw: st.DrawFn, line_no: int, currency: str, action: LineAction) -> LineItem:
    weighed = draw(st.booleans())
    if weighed:
        quantity = draw(st.integers(1, 5000)) * Decimal("0.001")  # up to 5 kg, to the gram
        uom = UnitOfMeasure.KILOGRAM
    else:
        quantity = Decimal(draw(st.integers(1, 12)))
        uom = UnitOfMeasure.EACH
    unit_price = money(draw, currency, 0, 500 * 1000)
    extended = round_to_minor(quantity * unit_price, currency)

    modifiers = []
    room = extended
    for _ in range(draw(st.integers(0, 2))):
        amount = money(draw, currency, 0, int(room / minor_unit(currency)))
        modifiers.append(
            PriceModifier(amount=amount, reason=draw(st.sampled_from(["promotion", "markdown"])))
        )
        room -= amount

    original = None
    if action is LineAction.RETURN:
        original = LineRef(
            transaction=TransactionRef(
                store_id="S001",
                register_id=draw(idents),
                business_day=draw(st.dates(date(2020, 1, 1), date(2030, 12, 31))),
                sequence=draw(st.integers(0, 10**8)),
            ),
            line_no=draw(st.integers(1, 99)),
        )
    return LineItem(
        line_no=line_no,
        action=action,
        sku=draw(idents),
        quantity=quantity,
        uom=uom,
        unit_price=unit_price,
        extended_amount=extended,
        modifiers=tuple(modifiers),
        original=original,
        restock=draw(st.booleans()),
    )


def tax_lines(draw: st.DrawFn, lines: list[LineItem], currency: str) -> tuple[tuple[TaxLine, ...], bool]:
    """One tax line per tax code on the lines' net amounts, all inclusive or all exclusive."""
    inclusive = draw(st.booleans())
    codes = draw(st.lists(st.sampled_from(TAX_RATES), min_size=1, max_size=2, unique=True))
    by_code: dict[int, Decimal] = {}
    for line in lines:
        code = draw(st.integers(0, len(codes) - 1))
        by_code[code] = by_code.get(code, ZERO) + line.net_amount
    taxes = []
    for code, base in sorted(by_code.items()):
        rate = codes[code]
        if inclusive:  # the tax is inside the price: gross = taxable + tax
            amount = round_to_minor(base * rate / (1 + rate), currency)
            taxable = base - amount
        else:  # the tax comes on top of the price
            amount = round_to_minor(base * rate, currency)
            taxable = base
        taxes.append(
            TaxLine(code=f"T{code}", rate=rate, taxable_amount=taxable, amount=amount, inclusive=inclusive)
        )
    return tuple(taxes), inclusive


def tenders_for(draw: st.DrawFn, grand_total: Decimal, currency: str) -> tuple[Tender, ...]:
    """The grand total taken in 1-3 tenders; a positive total paid partly in cash may get change."""
    parts = split(draw, grand_total, draw(st.integers(1, 3)), currency)
    tenders = []
    for i, part in enumerate(parts):
        kind = draw(st.sampled_from([TenderKind.CASH, TenderKind.CARD, TenderKind.GIFT_CARD]))
        if kind is TenderKind.CARD:
            details = CardDetails(
                last4=draw(st.from_regex(r"\A[0-9]{4}\Z")), auth_code=draw(st.from_regex(r"\A[A-Z0-9]{6}\Z"))
            )
            tenders.append(Tender(kind=kind, amount=part, card=details))
        elif kind is TenderKind.CASH and grand_total > 0 and i == len(parts) - 1:
            change = money(draw, currency, 0, 100 * 1000)  # handed over more than the rest, got change
            tenders.append(Tender(kind=kind, amount=part + change, change=change))
        else:
            reference = f"GC-{draw(idents)}" if kind is TenderKind.GIFT_CARD else None
            tenders.append(Tender(kind=kind, amount=part, reference=reference))
    return tuple(tenders)


@st.composite
def transactions(draw: st.DrawFn) -> Transaction:
    currency = draw(st.sampled_from(CURRENCIES))
    kind = draw(st.sampled_from([TransactionKind.SALE, TransactionKind.RETURN, TransactionKind.EXCHANGE]))
    count = draw(st.integers(1, 6))
    if kind is TransactionKind.SALE:
        actions = [LineAction.SALE] * count
    elif kind is TransactionKind.RETURN:
        actions = [LineAction.RETURN] * count
    else:
        actions = draw(st.lists(st.sampled_from(LineAction), min_size=count, max_size=count))
    line_nos = draw(st.lists(st.integers(1, 999), min_size=count, max_size=count, unique=True))
    lines = [draw(line_items(n, currency, action)) for n, action in zip(line_nos, actions, strict=True)]

    net = sum((line.net_amount for line in lines), ZERO)
    basket_sign = -1 if kind is TransactionKind.RETURN else 1
    basket_modifiers: list[PriceModifier] = []
    room = abs(net)  # basket reductions never exceed what the lines come to
    for _ in range(draw(st.integers(0, 2))):
        amount = money(draw, currency, 0, int(room / minor_unit(currency)))
        basket_modifiers.append(PriceModifier(amount=amount, reason="coupon"))
        room -= amount
    subtotal = net - basket_sign * sum((m.amount for m in basket_modifiers), ZERO)

    taxes, inclusive = tax_lines(draw, lines, currency)
    tax_total = sum((t.amount for t in taxes), ZERO)
    grand_total = subtotal if inclusive else subtotal + tax_total

    started = draw(st.datetimes(datetime(2020, 1, 1), datetime(2030, 12, 31), timezones=st.just(UTC)))
    return Transaction(
        store_id=draw(idents),
        register_id=draw(idents),
        business_day=started.date(),
        sequence=draw(st.integers(0, 10**9)),
        kind=kind,
        currency=currency,
        started_at=started,
        ended_at=started,
        operator_id=draw(st.none() | idents),
        customer=draw(st.none() | st.builds(Customer, member_id=idents)),
        lines=tuple(lines),
        modifiers=tuple(basket_modifiers),
        taxes=taxes,
        tenders=tenders_for(draw, grand_total, currency),
        totals=Totals(subtotal=subtotal, tax=tax_total, grand_total=grand_total),
    )


def decimals_in(tx: Transaction) -> list[tuple[str, Decimal]]:
    """Every amount (and quantity and rate) of `tx` with its path in the JSON document."""
    found: list[tuple[str, Decimal]] = [
        ("totals.subtotal", tx.totals.subtotal),
        ("totals.tax", tx.totals.tax),
        ("totals.grand_total", tx.totals.grand_total),
    ]
    for i, line in enumerate(tx.lines):
        found += [
            (f"lines.{i}.quantity", line.quantity),
            (f"lines.{i}.unit_price", line.unit_price),
            (f"lines.{i}.extended_amount", line.extended_amount),
        ]
        found += [(f"lines.{i}.modifiers.{j}.amount", m.amount) for j, m in enumerate(line.modifiers)]
    found += [(f"modifiers.{j}.amount", m.amount) for j, m in enumerate(tx.modifiers)]
    for i, t in enumerate(tx.taxes):
        found += [(f"taxes.{i}.rate", t.rate), (f"taxes.{i}.taxable_amount", t.taxable_amount)]
        found += [(f"taxes.{i}.amount", t.amount)]
    for i, tender in enumerate(tx.tenders):
        found += [(f"tenders.{i}.amount", tender.amount), (f"tenders.{i}.change", tender.change)]
    return found


def at(document: Any, path: str) -> Any:
    for key in path.split("."):
        document = document[int(key)] if isinstance(document, list) else document[key]
    return document


def no_json_numbers_with_fractions(document: Any) -> bool:
    if isinstance(document, float):
        return False
    if isinstance(document, dict):
        return all(no_json_numbers_with_fractions(v) for v in document.values())
    if isinstance(document, list):
        return all(no_json_numbers_with_fractions(v) for v in document)
    return True


class TestTransactionProperties:
    @settings(max_examples=200, deadline=None)
    @given(tx=transactions())
    def test_a_consistent_transaction_round_trips_through_json_and_balances(self, tx: Transaction) -> None:
        raw = tx.model_dump_json()

        # (1) JSON round trip gives back the same transaction
        assert Transaction.model_validate_json(raw) == tx
        assert Transaction.model_validate(tx.model_dump()) == tx

        # (2) every amount travels as an exact decimal string, never as a JSON number
        document = json.loads(raw)
        assert no_json_numbers_with_fractions(document)
        for path, value in decimals_in(tx):
            written = at(document, path)
            assert isinstance(written, str), f"{path} is written as {written!r}"
            assert Decimal(written) == value, path

        # (3) lines - basket modifiers + exclusive tax == grand total == tenders - change
        basket_sign = (
            -1 if tx.kind is TransactionKind.RETURN else 1
        )  # a return's reductions shrink the refund
        exclusive_tax = sum((t.amount for t in tx.taxes if not t.inclusive), ZERO)
        from_lines = (
            sum((line.net_amount for line in tx.lines), ZERO)
            - basket_sign * sum((m.amount for m in tx.modifiers), ZERO)
            + exclusive_tax
        )
        paid = sum((t.amount - t.change for t in tx.tenders), ZERO)
        assert from_lines == tx.totals.grand_total == paid
        assert tx.totals.tax == sum((t.amount for t in tx.taxes), ZERO)
