"""The command line as a newcomer uses it: the demo, keys and schema export, in subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tillflow.bootstrap import bootstrap
from tillflow.config import load_config

CLI = [sys.executable, "-m", "tillflow.cli"]


def run(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


class TestDemo:
    def test_a_small_demo_runs_consistent_and_exits_zero(self, tmp_path: Path) -> None:
        done = run(
            "demo",
            "--stores",
            "3",
            "--transactions",
            "400",
            "--batch",
            "50",
            "--json",
            "--data-dir",
            str(tmp_path),
        )
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads(done.stdout)
        assert summary["consistent"] is True
        assert summary["accepted"] + summary["invalid"] >= 400 - summary["broken_on_purpose"]
        assert summary["conflict"] == 2
        assert summary["inventory_lag"] == 0
        assert summary["inventory_movements"] > summary["accepted"]  # multi-line baskets
        # the sample went through its store's agent: the agent's acknowledgement is its first hop
        hops = [h["hop"] for h in summary["sample_trace"]["hops"]]
        assert hops[:3] == ["edge.accepted", "received", "logged"]
        assert summary["latency_ms"]["p99"] >= summary["latency_ms"]["p50"] > 0
        # the summary ends with the reconciliation of every store-day, one of them posted per day
        reconciliation = summary["downstream"]["reconciliation"]
        assert [(r["store_id"], r["status"]) for r in reconciliation["store_days"]] == [
            ("S001", "matched"),
            ("S002", "matched"),
            ("S003", "matched"),
        ]
        assert [r["policy"] for r in reconciliation["store_days"]] == ["line", "aggregated", "line"]
        # the price change and the flash sale reached every store but the last, whose sales the
        # hub found not applying it, exactly as the calendar judged here says
        master = summary["masterdata"]
        assert master["missed_by"] == "S003" and master["up_to_date"] == 2
        assert master["behind"]["S003"] > 0
        assert master["deviations"] == master["deviations_expected"]
        assert set(master["deviations"]) <= {"S003: promotion_not_applied", "S003: wrong_price"}
        assert master["deviations"]
        # the tills sent to three edge agents; the first one's link was cut for a while
        edge = summary["edge"]
        assert (edge["agents"], edge["left_in_outboxes"], edge["refused_at_the_agents"]) == (3, 0, 2)
        assert edge["delivered"] == summary["accepted"]
        assert edge["link_cut"]["hub_saw"] == {"S001": "offline"} and edge["health_now"] == {"online": 3}
        # the ERP's maintenance came and went; the poison record was dead-lettered, replayed once
        # its period was reopened, and posted; the alerts the incidents raised fired and cleared
        incidents = summary["incidents"]
        assert incidents["dead_lettered"] and incidents["replayed"] == 1
        assert incidents["posted_after_replay"] is True
        assert {"dead-letters", "store-offline"} <= set(incidents["alerts_fired"])
        assert incidents["alerts_firing_at_end"] == []

    def test_the_demo_runs_on_jetstream_too(self, tmp_path: Path) -> None:
        done = run(
            "demo", "--stores", "2", "--transactions", "300", "--batch", "50", "--bus", "jetstream",
            "--json", "--data-dir", str(tmp_path),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads(done.stdout)
        assert summary["consistent"] is True and summary["inventory_lag"] == 0
        assert "bus: jetstream" in done.stderr


class TestKeys:
    def test_a_store_key_is_printed_once_and_only_its_hash_is_kept(self, tmp_path: Path) -> None:
        config = tmp_path / "tillflow.yaml"
        config.write_text(
            yaml.safe_dump({"hub": {"data_dir": str(tmp_path / "data")}, "stores": [{"store_id": "S001"}]})
        )
        done = run("keys", "create", "--store", "S001", "--config", str(config))
        assert done.returncode == 0, done.stderr
        key = done.stdout.strip()
        services = bootstrap(load_config(config))
        try:
            principal = services.keys.authenticate(key)
            raw = (tmp_path / "data" / "tillflow.db").read_bytes()
        finally:
            services.close()
        assert principal is not None and principal.store_id == "S001" and not principal.is_admin
        secret = key.split("_", 2)[2]  # tf_<key id>_<secret>; the secret may itself hold "_"
        assert key.encode() not in raw and secret.encode() not in raw

    def test_a_key_for_an_unconfigured_store_is_refused(self, tmp_path: Path) -> None:
        done = run("keys", "create", "--store", "S404", "--data-dir", str(tmp_path))
        assert done.returncode == 2
        assert "S404" in done.stderr


class TestConfig:
    def test_a_bad_config_fails_at_start_with_the_path_of_the_bad_key(self, tmp_path: Path) -> None:
        config = tmp_path / "bad.yaml"
        config.write_text(yaml.safe_dump({"stores": [{"store_id": "S001", "currency": "EURO"}]}))
        done = run("keys", "create", "--admin", "--config", str(config))
        assert done.returncode == 2
        assert "stores.0.currency" in done.stderr


class TestSchemaExport:
    def test_every_canonical_model_gets_a_json_schema(self, tmp_path: Path) -> None:
        done = run("schema", "export", str(tmp_path))
        assert done.returncode == 0, done.stderr
        files = sorted(p.name for p in tmp_path.iterdir())
        assert "transaction.v1.schema.json" in files and "day-close.v1.schema.json" in files
        schema = json.loads((tmp_path / "transaction.v1.schema.json").read_text())
        assert {"store_id", "register_id", "business_day", "sequence", "totals"} <= set(schema["required"])
        assert schema["$schema"].endswith("2020-12/schema")
