"""API keys, stored hashed. A key is ``tf_<key id>_<secret>``; only the secret's SHA-256 is kept.

Secrets are 32 random bytes, so a plain SHA-256 (no slow hash) is enough: there is nothing to
guess from a dictionary.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from sqlalchemy import Engine, select, update

from tillflow.ports import Principal
from tillflow.storage.db import read_tx, write_tx
from tillflow.storage.sql import to_us
from tillflow.storage.tables import api_keys


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class SQLKeyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create_key(self, *, store_id: str | None = None, admin: bool = False) -> str:
        """Make a key bound to `store_id` (or an admin key) and return it; it is shown once."""
        if (store_id is None) == (not admin):
            raise ValueError("a key is bound to one store or is an admin key")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        with write_tx(self.engine) as conn:
            conn.execute(
                api_keys.insert().values(
                    key_id=key_id,
                    key_hash=_hash(secret),
                    store_id=store_id,
                    is_admin=admin,
                    created_us=to_us(datetime.now(UTC)),
                )
            )
        return f"tf_{key_id}_{secret}"

    def authenticate(self, key: str) -> Principal | None:
        """The principal of a valid, unrevoked key; None for anything else."""
        prefix, _, rest = key.partition("_")
        key_id, _, secret = rest.partition("_")
        if prefix != "tf" or not key_id or not secret:
            return None
        with read_tx(self.engine) as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).one_or_none()
        if row is None or row.revoked_us is not None or not hmac.compare_digest(row.key_hash, _hash(secret)):
            return None
        return Principal(key_id=row.key_id, store_id=row.store_id, is_admin=bool(row.is_admin))

    def revoke_key(self, key_id: str) -> bool:
        """Revoke a key by its id; False when there is no such key."""
        with write_tx(self.engine) as conn:
            done = conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id)
                .values(revoked_us=to_us(datetime.now(UTC)))
            )
        return bool(done.rowcount)
