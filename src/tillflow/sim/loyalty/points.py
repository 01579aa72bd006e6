"""The points ledger: accrual by the earning rules, reversal, holds, redemption, refund and
expiry; and the program-wide reads: outstanding points and the ledger as a statement.

Points live in lots, one per accrual (or welcome bonus, or refund). Redemption and expiry
consume lots oldest first; a reversal takes from its own transaction's lot first. Holds do not
touch lots: they reserve part of the balance, and points an open hold needs are kept from
expiring, so a hold that was granted can always be committed. When lots cannot cover a reversal
or a commit (points taken back after they were spent), the shortfall is kept as a debt that
later accruals pay off first: the balance a member sees may then be negative, as on real
platforms. A committed hold can be refunded once (its sale post-voided): the points come back
as a new lot that, like an accrual, pays the member's debt first.

A program's outstanding points (every member's lots less debts, holds not subtracted) always
equal the sum of its ledger entries: every change to lots or debts writes an entry of the same
signed amount.

Expired holds and points are settled lazily, whenever a member or hold is read or changed,
against the service clock, so tests move the clock instead of sleeping.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from tillflow.model.money import is_in_minor_units
from tillflow.sim.loyalty.settings import LoyaltySimSettings
from tillflow.sim.loyalty.store import Body, Refusal, iso

Conn = sqlite3.Connection
ENTRY_KINDS = ("accrual", "bonus", "reversal", "redemption", "refund", "expiry")
MAX_STATEMENT = 10_000  # entries in one statement page


def seed_members(conn: Conn, settings: LoyaltySimSettings, now: datetime) -> None:
    """Seeded members M0001.. in every program, each with its welcome points."""
    for program in settings.programs:
        for i in range(1, settings.seed_members + 1):
            member_id = f"M{i:04d}"
            _enrol(conn, program, member_id, settings.seeded_tier(i), now)
            if settings.seed_points:
                lot = _add_lot(conn, settings, program, member_id, None, settings.seed_points, now)
                _entry(conn, program, member_id, "bonus", settings.seed_points, now, lot_id=lot)


# -- reads


def member_view(
    conn: Conn, settings: LoyaltySimSettings, now: datetime, program: str, member_id: str
) -> Body:
    row = _member(conn, settings, now, program, member_id)
    held = _held(conn, program, member_id)
    return {
        "member_id": member_id,
        "program": program,
        "tier": row["tier"],
        "balance": _available(conn, program, member_id),
        "held": held,
        "lifetime_points": row["lifetime"],
    }


def ledger_view(
    conn: Conn, settings: LoyaltySimSettings, now: datetime, program: str, member_id: str
) -> Body:
    _member(conn, settings, now, program, member_id)
    rows = conn.execute(
        "SELECT entry_id, kind, points, balance, transaction_id, hold_id, at FROM entries"
        " WHERE program = ? AND member_id = ? ORDER BY seq",
        (program, member_id),
    ).fetchall()
    return {"member_id": member_id, "program": program, "entries": [dict(r) for r in rows]}


def hold_view(conn: Conn, settings: LoyaltySimSettings, now: datetime, hold_id: str) -> Body:
    return _hold_body(_hold(conn, settings, now, hold_id))


def summary(conn: Conn, settings: LoyaltySimSettings, now: datetime) -> Body:
    """The figures the demo shows; every member due for settling is settled first."""
    _settle_due(conn, now)

    def scalar(sql: str, *args: Any) -> int:
        return int(conn.execute(sql, args).fetchone()[0] or 0)

    def moved(kind: str) -> int:
        return -scalar("SELECT SUM(points) FROM entries WHERE kind = ?", kind)

    return {
        "now": iso(now),
        "members": scalar("SELECT COUNT(*) FROM members"),
        "accruals": scalar("SELECT COUNT(*) FROM accruals"),
        "points_issued": scalar("SELECT SUM(points) FROM entries WHERE kind IN ('accrual', 'bonus')"),
        "points_redeemed": moved("redemption"),
        "points_reversed": moved("reversal"),
        "points_expired": moved("expiry"),
        "points_refunded": scalar("SELECT SUM(points) FROM entries WHERE kind = 'refund'"),
        "outstanding": scalar("SELECT SUM(points) FROM entries"),  # = lots less debts, all programs
        "open_holds": scalar("SELECT COUNT(*) FROM holds WHERE state = 'held'"),
        "points_held": scalar("SELECT SUM(points) FROM holds WHERE state = 'held'"),
        "holds_committed": scalar("SELECT COUNT(*) FROM holds WHERE state = 'committed'"),
        "holds_refunded": scalar("SELECT COUNT(*) FROM holds WHERE state = 'refunded'"),
        "idempotency_keys": scalar("SELECT COUNT(*) FROM idempotency"),
    }


def outstanding(conn: Conn, settings: LoyaltySimSettings, now: datetime, program: str) -> Body:
    """What the program owes its members now (lots less debts, holds not subtracted), which is
    the sum of its ledger entries; the members due for settling are settled first."""
    _program(settings, program)
    _settle_due(conn, now, program)

    def scalar(sql: str) -> int:
        return int(conn.execute(sql, (program,)).fetchone()[0] or 0)

    lots = scalar("SELECT SUM(remaining) FROM lots WHERE program = ?")
    debts = scalar("SELECT SUM(debt) FROM members WHERE program = ?")
    return {
        "program": program,
        "outstanding": lots - debts,
        "held": scalar("SELECT SUM(points) FROM holds WHERE program = ? AND state = 'held'"),
        "members": scalar("SELECT COUNT(*) FROM members WHERE program = ?"),
        "as_of": iso(now),
    }


def statement(
    conn: Conn,
    settings: LoyaltySimSettings,
    now: datetime,
    program: str,
    *,
    after: int,
    limit: int,
    kinds: list[str],
) -> Body:
    """The program's entries past seq `after`, in order, `limit` at most, of `kinds` only when
    given; `next` is the cursor for the next page (`after` again when nothing came). The members
    due for settling are settled first, so the expiries that are due are in it."""
    _program(settings, program)
    if not 1 <= limit <= MAX_STATEMENT:
        raise Refusal(
            422, "invalid limit", f"limit: {limit} is outside 1..{MAX_STATEMENT}", type_="invalid-request"
        )
    if after < 0:
        raise Refusal(422, "invalid cursor", f"after: {after} is below 0", type_="invalid-request")
    unknown = sorted(set(kinds) - set(ENTRY_KINDS))
    if unknown:
        raise Refusal(
            422,
            "unknown entry kind",
            f"kind: {', '.join(unknown)} is not one of {', '.join(ENTRY_KINDS)}",
            type_="invalid-request",
        )
    _settle_due(conn, now, program)
    only = f" AND kind IN ({', '.join('?' * len(set(kinds)))})" if kinds else ""
    rows = conn.execute(
        "SELECT seq, entry_id, member_id, kind, points, balance, transaction_id, hold_id, at FROM entries"
        f" WHERE program = ? AND seq > ?{only} ORDER BY seq LIMIT ?",
        (program, after, *sorted(set(kinds)), limit),
    ).fetchall()
    entries = [dict(r) for r in rows]
    return {"program": program, "entries": entries, "next": entries[-1]["seq"] if entries else after}


# -- writes


def earn(
    settings: LoyaltySimSettings, tier: str, currency: str, lines: list[tuple[Decimal, str | None]]
) -> int:
    """Points for `lines` under the rules: per unit of money, times the category's multiplier,
    summed, times the tier's multiplier, rounded down once at the end (never below zero)."""
    rate = settings.earn[currency]
    base = sum(
        (
            amount / rate.per * rate.points * settings.category_multiplier(category)
            for amount, category in lines
        ),
        Decimal(0),
    )
    total = (base * settings.tier(tier).multiplier).to_integral_value(rounding=ROUND_FLOOR)
    return max(int(total), 0)


def accrue(
    conn: Conn,
    settings: LoyaltySimSettings,
    now: datetime,
    *,
    program: str,
    member_id: str,
    transaction_id: str,
    currency: str,
    lines: list[tuple[Decimal, str | None]],
) -> Body:
    _program(settings, program)
    if _find(conn, program, member_id) is None:
        if not settings.auto_enrol:
            raise _unknown_member(program, member_id)
        _enrol(conn, program, member_id, settings.tiers[0].name, now)
    earlier = conn.execute(
        "SELECT member_id, entry_id, points FROM accruals WHERE program = ? AND transaction_id = ?",
        (program, transaction_id),
    ).fetchone()
    if earlier is not None:
        raise Refusal(
            409,
            "transaction already earned",
            f"transaction {transaction_id} already earned {earlier['points']} points"
            f" for member {earlier['member_id']} (entry {earlier['entry_id']}); a transaction earns once",
            type_="already-accrued",
            entry_id=earlier["entry_id"],
            member_id=earlier["member_id"],
            points=earlier["points"],
        )
    if currency not in settings.earn:
        raise Refusal(
            422, "currency does not earn", f"currency: {currency} earns no points", type_="invalid-request"
        )
    for i, (amount, _) in enumerate(lines):
        if not is_in_minor_units(amount, currency):
            raise Refusal(
                422,
                "invalid amount",
                f"lines.{i}.amount: {amount} has digits below the {currency} minor unit",
                type_="invalid-request",
            )
    member = _member(conn, settings, now, program, member_id)
    points = earn(settings, member["tier"], currency, lines)
    paid = min(member["debt"], points)
    lot = _add_lot(conn, settings, program, member_id, transaction_id, points, now, remaining=points - paid)
    tier = _upgraded(settings, member["tier"], member["lifetime"] + points)
    conn.execute(
        "UPDATE members SET lifetime = lifetime + ?, debt = debt - ?, tier = ?"
        " WHERE program = ? AND member_id = ?",
        (points, paid, tier, program, member_id),
    )
    entry_id, balance = _entry(conn, program, member_id, "accrual", points, now, transaction_id, lot_id=lot)
    conn.execute(
        "INSERT INTO accruals (program, transaction_id, member_id, entry_id, points, lot_id)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (program, transaction_id, member_id, entry_id, points, lot),
    )
    return {
        "entry_id": entry_id,
        "member_id": member_id,
        "program": program,
        "transaction_id": transaction_id,
        "points": points,
        "balance": balance,
        "tier": tier,
    }


def reverse(
    conn: Conn,
    settings: LoyaltySimSettings,
    now: datetime,
    *,
    program: str,
    member_id: str,
    transaction_id: str,
    points: int | None,
) -> Body:
    _program(settings, program)
    _member(conn, settings, now, program, member_id)
    accrual = conn.execute(
        "SELECT points, reversed, lot_id FROM accruals"
        " WHERE program = ? AND transaction_id = ? AND member_id = ?",
        (program, transaction_id, member_id),
    ).fetchone()
    if accrual is None:
        raise Refusal(
            404,
            "no such accrual",
            f"transaction_id: member {member_id} earned nothing with transaction {transaction_id}",
            type_="unknown-accrual",
        )
    earned, reversed_, left = accrual["points"], accrual["reversed"], accrual["points"] - accrual["reversed"]
    take = left if points is None else points
    if take > left:
        raise Refusal(
            422,
            "more than earned",
            f"points: {take} is more than the {left} points left to reverse of transaction {transaction_id}"
            f" (earned {earned}, reversed {reversed_})",
            type_="more-than-earned",
            earned=earned,
            reversed=reversed_,
            remaining=left,
        )
    own = conn.execute("SELECT remaining FROM lots WHERE lot_id = ?", (accrual["lot_id"],)).fetchone()[0]
    from_own = min(own, take)
    conn.execute("UPDATE lots SET remaining = remaining - ? WHERE lot_id = ?", (from_own, accrual["lot_id"]))
    short = _consume(conn, program, member_id, take - from_own)
    conn.execute(
        "UPDATE members SET lifetime = lifetime - ?, debt = debt + ? WHERE program = ? AND member_id = ?",
        (take, short, program, member_id),
    )
    conn.execute(
        "UPDATE accruals SET reversed = reversed + ? WHERE program = ? AND transaction_id = ?",
        (take, program, transaction_id),
    )
    entry_id, balance = _entry(conn, program, member_id, "reversal", -take, now, transaction_id)
    return {
        "entry_id": entry_id,
        "member_id": member_id,
        "program": program,
        "transaction_id": transaction_id,
        "points": -take,
        "balance": balance,
        "earned": earned,
        "reversed": reversed_ + take,
    }


def reserve(
    conn: Conn,
    settings: LoyaltySimSettings,
    now: datetime,
    *,
    program: str,
    member_id: str,
    points: int,
    ttl: int,
) -> Body:
    _program(settings, program)
    if not 1 <= ttl <= settings.max_hold_ttl_seconds:
        raise Refusal(
            422,
            "invalid ttl",
            f"ttl_seconds: {ttl} is outside 1..{settings.max_hold_ttl_seconds}",
            type_="invalid-request",
        )
    _member(conn, settings, now, program, member_id)
    available, held = _available(conn, program, member_id), _held(conn, program, member_id)
    if points > available:
        raise Refusal(
            422,
            "insufficient points",
            f"points: {points} requested but only {available} available ({held} already held)",
            type_="insufficient-points",
            requested=points,
            available=available,
            held=held,
        )
    hold_id = f"H-{uuid.uuid4().hex[:20]}"
    conn.execute(
        "INSERT INTO holds (hold_id, program, member_id, points, state, created_at, expires_at)"
        " VALUES (?, ?, ?, ?, 'held', ?, ?)",
        (hold_id, program, member_id, points, iso(now), iso(now + timedelta(seconds=ttl))),
    )
    body = hold_view(conn, settings, now, hold_id)
    body["balance"] = available - points
    return body


def commit(
    conn: Conn, settings: LoyaltySimSettings, now: datetime, hold_id: str, transaction_id: str
) -> Body:
    hold = _hold(conn, settings, now, hold_id)
    if hold["state"] == "committed" and hold["transaction_id"] == transaction_id:
        return _hold_body(hold)  # committing again for the same transaction changes nothing
    if hold["state"] != "held":
        spent = f" for transaction {hold['transaction_id']}" if hold["state"] == "committed" else ""
        raise Refusal(
            409,
            "hold not open",
            f"hold {hold_id} is {hold['state']}{spent}: it cannot be committed",
            type_="hold-not-open",
            state=hold["state"],
        )
    program, member_id, points = hold["program"], hold["member_id"], hold["points"]
    conn.execute("UPDATE holds SET state = 'committed' WHERE hold_id = ?", (hold_id,))
    short = _consume(conn, program, member_id, points)
    conn.execute(
        "UPDATE members SET debt = debt + ? WHERE program = ? AND member_id = ?", (short, program, member_id)
    )
    entry_id, balance = _entry(
        conn, program, member_id, "redemption", -points, now, transaction_id, hold_id=hold_id
    )
    conn.execute(
        "UPDATE holds SET closed_at = ?, transaction_id = ?, entry_id = ? WHERE hold_id = ?",
        (iso(now), transaction_id, entry_id, hold_id),
    )
    body = hold_view(conn, settings, now, hold_id)
    body["balance"] = balance
    return body


def release(conn: Conn, settings: LoyaltySimSettings, now: datetime, hold_id: str) -> Body:
    hold = _hold(conn, settings, now, hold_id)
    if hold["state"] in ("committed", "refunded"):
        refunded = " and refunded" if hold["state"] == "refunded" else ""
        raise Refusal(
            409,
            "hold committed",
            f"hold {hold_id} was committed for transaction {hold['transaction_id']}{refunded}:"
            " it cannot be released",
            type_="hold-not-open",
            state=hold["state"],
        )
    if hold["state"] == "held":
        conn.execute(
            "UPDATE holds SET state = 'released', closed_at = ? WHERE hold_id = ?", (iso(now), hold_id)
        )
    body = hold_view(conn, settings, now, hold_id)
    body["balance"] = _available(conn, hold["program"], hold["member_id"])
    return body


def refund(
    conn: Conn, settings: LoyaltySimSettings, now: datetime, hold_id: str, transaction_id: str
) -> Body:
    """Give back what a committed hold spent (its sale post-voided by `transaction_id`): a new
    lot, expiring like an accrual, that pays the member's debt first; the hold becomes refunded."""
    hold = _hold(conn, settings, now, hold_id)
    if hold["state"] != "committed":
        raise Refusal(
            409,
            "hold not committed",
            f"hold {hold_id} is {hold['state']}{_refunded_by(conn, hold)}:"
            " only a committed hold can be refunded",
            type_="hold-not-committed",
            state=hold["state"],
        )
    program, member_id, points = hold["program"], hold["member_id"], hold["points"]
    member = _find(conn, program, member_id)
    assert member is not None
    paid = min(member["debt"], points)
    lot = _add_lot(conn, settings, program, member_id, transaction_id, points, now, remaining=points - paid)
    conn.execute(
        "UPDATE members SET debt = debt - ? WHERE program = ? AND member_id = ?", (paid, program, member_id)
    )
    conn.execute("UPDATE holds SET state = 'refunded' WHERE hold_id = ?", (hold_id,))
    entry_id, balance = _entry(
        conn, program, member_id, "refund", points, now, transaction_id, hold_id=hold_id, lot_id=lot
    )
    return {
        "entry_id": entry_id,
        "member_id": member_id,
        "program": program,
        "transaction_id": transaction_id,
        "points": points,
        "balance": balance,
        "hold_id": hold_id,
    }


# -- helpers


def _refunded_by(conn: Conn, hold: sqlite3.Row) -> str:
    """For a refunded hold, " (by transaction T)" naming the transaction that refunded it."""
    if hold["state"] != "refunded":
        return ""
    row = conn.execute(
        "SELECT transaction_id FROM entries WHERE hold_id = ? AND kind = 'refund' ORDER BY seq DESC LIMIT 1",
        (hold["hold_id"],),
    ).fetchone()
    return "" if row is None else f" (by transaction {row[0]})"


def _settle_due(conn: Conn, now: datetime, program: str | None = None) -> None:
    """Settle every member (of `program`, or of all) that has a hold or a lot past its time."""
    due = conn.execute(
        "SELECT program, member_id FROM holds WHERE state = 'held' AND expires_at <= ?1"
        " AND (?2 IS NULL OR program = ?2)"
        " UNION SELECT program, member_id FROM lots WHERE remaining > 0 AND expires_at <= ?1"
        " AND (?2 IS NULL OR program = ?2)",
        (iso(now), program),
    ).fetchall()
    for member_program, member_id in due:
        _settle(conn, member_program, member_id, now)


def _program(settings: LoyaltySimSettings, program: str) -> None:
    if program not in settings.programs:
        raise Refusal(404, "unknown program", f"program: no program {program!r}", type_="unknown-program")


def _unknown_member(program: str, member_id: str) -> Refusal:
    return Refusal(
        404,
        "unknown member",
        f"member_id: no member {member_id} in program {program}",
        type_="unknown-member",
    )


def _find(conn: Conn, program: str, member_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM members WHERE program = ? AND member_id = ?", (program, member_id)
    ).fetchone()
    return row


def _member(
    conn: Conn, settings: LoyaltySimSettings, now: datetime, program: str, member_id: str
) -> sqlite3.Row:
    """The member, settled as of `now`; 404 when unknown."""
    _program(settings, program)
    if _find(conn, program, member_id) is None:
        raise _unknown_member(program, member_id)
    _settle(conn, program, member_id, now)
    row = _find(conn, program, member_id)
    assert row is not None
    return row


def _hold(conn: Conn, settings: LoyaltySimSettings, now: datetime, hold_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT program, member_id FROM holds WHERE hold_id = ?", (hold_id,)).fetchone()
    if row is None:
        raise Refusal(404, "unknown hold", f"hold_id: no hold {hold_id}", type_="unknown-hold")
    _settle(conn, row["program"], row["member_id"], now)
    hold: sqlite3.Row = conn.execute("SELECT * FROM holds WHERE hold_id = ?", (hold_id,)).fetchone()
    return hold


def _hold_body(hold: sqlite3.Row) -> Body:
    keys = ("hold_id", "member_id", "program", "points", "state", "created_at", "expires_at", "closed_at")
    return {k: hold[k] for k in keys} | {
        "transaction_id": hold["transaction_id"],
        "entry_id": hold["entry_id"],
    }


def _enrol(conn: Conn, program: str, member_id: str, tier: str, now: datetime) -> None:
    conn.execute(
        "INSERT INTO members (program, member_id, tier, enrolled_at) VALUES (?, ?, ?, ?)",
        (program, member_id, tier, iso(now)),
    )


def _add_lot(
    conn: Conn,
    settings: LoyaltySimSettings,
    program: str,
    member_id: str,
    transaction_id: str | None,
    points: int,
    now: datetime,
    *,
    remaining: int | None = None,
) -> int:
    expires = None if settings.expiry_days is None else iso(now + timedelta(days=settings.expiry_days))
    cursor = conn.execute(
        "INSERT INTO lots (program, member_id, transaction_id, points, remaining, earned_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            program,
            member_id,
            transaction_id,
            points,
            points if remaining is None else remaining,
            iso(now),
            expires,
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _entry(
    conn: Conn,
    program: str,
    member_id: str,
    kind: str,
    points: int,
    now: datetime,
    transaction_id: str | None = None,
    *,
    hold_id: str | None = None,
    lot_id: int | None = None,
) -> tuple[str, int]:
    """Append a ledger entry; (its id, the available balance after it)."""
    entry_id = f"LE-{uuid.uuid4().hex[:20]}"
    balance = _available(conn, program, member_id)
    conn.execute(
        "INSERT INTO entries (entry_id, program, member_id, kind, points, balance, transaction_id, hold_id,"
        " lot_id, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (entry_id, program, member_id, kind, points, balance, transaction_id, hold_id, lot_id, iso(now)),
    )
    return entry_id, balance


def _total(conn: Conn, program: str, member_id: str) -> int:
    """Points in the member's lots, less its debt (holds not subtracted)."""
    lots = conn.execute(
        "SELECT COALESCE(SUM(remaining), 0) FROM lots WHERE program = ? AND member_id = ?",
        (program, member_id),
    ).fetchone()[0]
    debt = conn.execute(
        "SELECT debt FROM members WHERE program = ? AND member_id = ?", (program, member_id)
    ).fetchone()[0]
    return int(lots) - int(debt)


def _held(conn: Conn, program: str, member_id: str) -> int:
    return int(
        conn.execute(
            "SELECT COALESCE(SUM(points), 0) FROM holds"
            " WHERE program = ? AND member_id = ? AND state = 'held'",
            (program, member_id),
        ).fetchone()[0]
    )


def _available(conn: Conn, program: str, member_id: str) -> int:
    return _total(conn, program, member_id) - _held(conn, program, member_id)


def _consume(conn: Conn, program: str, member_id: str, points: int) -> int:
    """Take `points` from the member's lots, oldest first; what they could not cover."""
    lots = conn.execute(
        "SELECT lot_id, remaining FROM lots WHERE program = ? AND member_id = ? AND remaining > 0"
        " ORDER BY earned_at, lot_id",
        (program, member_id),
    ).fetchall()
    for lot_id, remaining in lots:
        if points <= 0:
            break
        taken = min(points, remaining)
        conn.execute("UPDATE lots SET remaining = remaining - ? WHERE lot_id = ?", (taken, lot_id))
        points -= taken
    return points


def _settle(conn: Conn, program: str, member_id: str, now: datetime) -> None:
    """Expire the member's holds past their TTL, then its lots past their expiry, oldest first;
    points that open holds need stay (they expire once the hold is released)."""
    conn.execute(
        "UPDATE holds SET state = 'expired', closed_at = expires_at"
        " WHERE program = ? AND member_id = ? AND state = 'held' AND expires_at <= ?",
        (program, member_id, iso(now)),
    )
    due = conn.execute(
        "SELECT lot_id, remaining FROM lots WHERE program = ? AND member_id = ? AND remaining > 0"
        " AND expires_at <= ? ORDER BY earned_at, lot_id",
        (program, member_id, iso(now)),
    ).fetchall()
    spendable = _available(conn, program, member_id)
    for lot_id, remaining in due:
        expiring = min(remaining, spendable)
        if expiring <= 0:
            break
        conn.execute("UPDATE lots SET remaining = remaining - ? WHERE lot_id = ?", (expiring, lot_id))
        _entry(conn, program, member_id, "expiry", -expiring, now, lot_id=lot_id)
        spendable -= expiring


def _upgraded(settings: LoyaltySimSettings, tier: str, lifetime: int) -> str:
    """The highest tier `lifetime` points reach, if above `tier` (tiers are never lost)."""
    order = [t.name for t in settings.tiers]
    best = order.index(tier)
    for i, rule in enumerate(settings.tiers):
        if rule.threshold is not None and lifetime >= rule.threshold and i > best:
            best = i
    return order[best]
