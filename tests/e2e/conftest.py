"""Real processes for the end-to-end tests: a hub (`tillflow hub`) on a free port with API keys,
and the reference loyalty platform or ERP it talks to.

`hub_process` is the one way a test starts a hub: the test states what is special about its hub
(the config, the stores that get a key) and gets a `RunningHub`. The `hub` fixture is a plain
hub for two stores that a module shares."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port
from tillflow.bootstrap import bootstrap
from tillflow.config import HubSettings, TillflowConfig, dump_config
from tillflow.model import Transaction
from tillflow.processes import HubProcess, ReferenceService
from tillflow.sim.pos import PosTrafficGenerator, demo_stores


@dataclass
class RunningHub:
    """A hub process, the config it runs with, and a key for each of its keyed stores and an admin."""

    process: HubProcess
    config: TillflowConfig
    config_path: Path
    keys: dict[str, str]
    admin: str

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def data_dir(self) -> Path:
        return self.config.hub.data_dir

    def client(self, key: str | None = None) -> httpx.Client:
        """A client that sends `key` as its bearer token (none: no authorization header)."""
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@contextmanager
def hub_process(
    data_dir: Path, config: TillflowConfig, *, keyed_stores: Iterable[str] | None = None
) -> Iterator[RunningHub]:
    """A `tillflow hub` process running `config` with its data in `data_dir`, on a free port (the
    config's own `hub.data_dir` and `hub.port` are replaced). It gets its config file
    (`data_dir/tillflow.yaml`), an API key for each of `keyed_stores` (default: every configured
    store) and an admin key before it starts, and is stopped when the block ends."""
    hub = config.hub.model_copy(update={"data_dir": data_dir, "port": free_port()})
    config = config.model_copy(update={"hub": hub})
    config_path = data_dir / "tillflow.yaml"
    config_path.write_text(dump_config(config))
    services = bootstrap(config)
    try:
        stores = [s.store_id for s in config.stores] if keyed_stores is None else list(keyed_stores)
        keys = {store: services.keys.create_key(store_id=store) for store in stores}
        admin = services.keys.create_key(admin=True)
    finally:
        services.close()
    process = HubProcess(config_path, data_dir / "hub.log", f"http://127.0.0.1:{hub.port}")
    try:
        process.wait_ready()
        yield RunningHub(process, config, config_path, keys, admin)
    finally:
        process.stop()


@contextmanager
def reference_service(kind: str, data_dir: Path) -> Iterator[ReferenceService]:
    """The reference `loyalty` platform or `erp` in its own process, with its files in
    `data_dir`; stopped when the block ends."""
    service = ReferenceService(kind, data_dir)
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """A hub for stores S001 and S002, with small batch and body limits."""
    config = TillflowConfig(
        hub=HubSettings(max_batch_records=50, max_body_bytes=256 * 1024), stores=demo_stores(2)
    )
    with hub_process(tmp_path_factory.mktemp("hub"), config) as running:
        yield running


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
