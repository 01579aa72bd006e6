"""API keys kept hashed, and a schema that migrations build exactly as the tables declare it.

Both on SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, select

from tillflow.ports import Principal
from tillflow.storage.db import create_state_engine
from tillflow.storage.keys import SQLKeyStore
from tillflow.storage.migrate import alembic_config, upgrade_schema
from tillflow.storage.tables import api_keys, metadata


@pytest.fixture
def keys(engine: Engine) -> SQLKeyStore:
    return SQLKeyStore(engine)


def key_id_of(key: str) -> str:
    return key.split("_")[1]


class TestApiKeys:
    def test_a_store_key_speaks_for_its_store_only(self, keys: SQLKeyStore) -> None:
        key = keys.create_key(store_id="S001")

        principal = keys.authenticate(key)

        assert principal == Principal(key_id=key_id_of(key), store_id="S001", is_admin=False)
        assert principal.may_act_for("S001")
        assert not principal.may_act_for("S002")

    def test_an_admin_key_speaks_for_every_store(self, keys: SQLKeyStore) -> None:
        principal = keys.authenticate(keys.create_key(admin=True))

        assert principal is not None
        assert principal.is_admin
        assert principal.store_id is None
        assert principal.may_act_for("S001") and principal.may_act_for("S999")

    def test_each_key_is_its_own(self, keys: SQLKeyStore) -> None:
        first, second = keys.create_key(store_id="S001"), keys.create_key(store_id="S002")

        assert first != second
        assert keys.authenticate(second) == Principal(key_id_of(second), "S002", False)

    def test_a_key_is_for_one_store_or_for_an_admin(self, keys: SQLKeyStore) -> None:
        with pytest.raises(ValueError):
            keys.create_key()
        with pytest.raises(ValueError):
            keys.create_key(store_id="S001", admin=True)

    def test_a_wrong_secret_is_refused(self, keys: SQLKeyStore) -> None:
        key = keys.create_key(store_id="S001")
        tampered = key[:-1] + ("A" if key[-1] != "A" else "B")

        assert keys.authenticate(tampered) is None

    def test_another_keys_secret_is_refused(self, keys: SQLKeyStore) -> None:
        mine, theirs = keys.create_key(store_id="S001"), keys.create_key(store_id="S002")
        borrowed = f"tf_{key_id_of(mine)}_{theirs.split('_', 2)[2]}"

        assert keys.authenticate(borrowed) is None

    @pytest.mark.parametrize(
        "malformed", ["", "tf", "tf_", "tf__secret", "tf_abc", "xx_abc_def", "Bearer tf_a_b"]
    )
    def test_a_malformed_key_is_refused(self, keys: SQLKeyStore, malformed: str) -> None:
        keys.create_key(store_id="S001")

        assert keys.authenticate(malformed) is None

    def test_a_key_with_an_unknown_id_is_refused(self, keys: SQLKeyStore) -> None:
        key = keys.create_key(store_id="S001")

        assert keys.authenticate(key.replace(key_id_of(key), "0" * 16)) is None

    def test_a_revoked_key_is_refused(self, keys: SQLKeyStore) -> None:
        key, other = keys.create_key(store_id="S001"), keys.create_key(store_id="S001")

        assert keys.revoke_key(key_id_of(key)) is True

        assert keys.authenticate(key) is None
        assert keys.authenticate(other) is not None

    def test_revoking_an_unknown_key_says_so(self, keys: SQLKeyStore) -> None:
        assert keys.revoke_key("0" * 16) is False

    def test_only_a_hash_of_the_secret_is_stored(self, keys: SQLKeyStore, engine: Engine) -> None:
        key = keys.create_key(store_id="S001")
        secret = key.split("_", 2)[2]

        with engine.connect() as conn:
            row = conn.execute(select(api_keys)).one()

        assert row.key_id == key_id_of(key)
        stored = " ".join(str(value) for value in row)
        assert secret not in stored
        assert key not in stored
        assert len(row.key_hash) == 64


def schema_differences(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))


class TestMigrations:
    def test_migrating_an_empty_database_builds_exactly_the_declared_tables(self, state_url: str) -> None:
        fresh = create_state_engine(state_url)
        try:
            assert schema_differences(fresh) != []  # the comparison does see a missing schema

            upgrade_schema(fresh)

            assert schema_differences(fresh) == []
        finally:
            fresh.dispose()

    def test_upgrading_twice_is_a_no_op(self, engine: Engine) -> None:
        key = SQLKeyStore(engine).create_key(store_id="S001")
        tables_before = sorted(inspect(engine).get_table_names())

        upgrade_schema(engine)

        engine.dispose()  # look again with fresh connections
        assert sorted(inspect(engine).get_table_names()) == tables_before
        assert schema_differences(engine) == []
        assert SQLKeyStore(engine).authenticate(key) is not None
        with engine.connect() as conn:
            heads = MigrationContext.configure(conn).get_current_heads()
        assert heads == tuple(ScriptDirectory.from_config(alembic_config()).get_heads())
