"""A real hub process (`tillflow hub`) on a free port, with keys for two stores and an admin."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port
from tillflow.bootstrap import bootstrap
from tillflow.config import HubSettings, TillflowConfig, dump_config
from tillflow.model import Transaction
from tillflow.processes import HubProcess
from tillflow.sim.pos import PosTrafficGenerator, demo_stores


@dataclass
class RunningHub:
    url: str
    keys: dict[str, str]
    admin: str
    data_dir: Path

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    data_dir = tmp_path_factory.mktemp("hub")
    config = TillflowConfig(
        hub=HubSettings(data_dir=data_dir, port=free_port(), max_batch_records=50, max_body_bytes=256 * 1024),
        stores=demo_stores(2),
    )
    config_path = data_dir / "tillflow.yaml"
    config_path.write_text(dump_config(config))
    services = bootstrap(config)
    keys = {s.store_id: services.keys.create_key(store_id=s.store_id) for s in config.stores}
    admin = services.keys.create_key(admin=True)
    services.close()
    process = HubProcess(config_path, data_dir / "hub.log", f"http://127.0.0.1:{config.hub.port}")
    try:
        process.wait_ready()
        yield RunningHub(process.url, keys, admin, data_dir)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def traffic() -> PosTrafficGenerator:
    """Valid transactions from stores S001 and S002."""
    return PosTrafficGenerator(demo_stores(2), business_day=date(2026, 11, 29), seed=3)


def sales(gen: PosTrafficGenerator, store: str, n: int) -> list[Transaction]:
    """The next `n` sales of `store` (other traffic is skipped)."""
    out: list[Transaction] = []
    while len(out) < n:
        tx = gen.next_transaction()
        if tx.store_id == store and tx.kind.value == "sale":
            out.append(tx)
    return out


def record(tx: Transaction) -> dict[str, object]:
    return tx.model_dump(mode="json")
