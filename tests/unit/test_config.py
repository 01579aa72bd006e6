"""Configuration: YAML plus TILLFLOW_* overrides; a bad key stops the start with its path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tillflow.config import FlowSettings, dump_config, load_config
from tillflow.errors import ConfigError, DownstreamRejectedError, PoisonEventError


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "tillflow.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class TestLoadConfig:
    def test_the_environment_wins_over_the_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = write(tmp_path, {"hub": {"port": 8000}, "stores": [{"store_id": "S001"}]})
        monkeypatch.setenv("TILLFLOW_HUB__PORT", "9123")
        config = load_config(path)
        assert config.hub.port == 9123
        assert config.store_ids() == frozenset({"S001"})

    def test_a_bad_value_names_its_path(self, tmp_path: Path) -> None:
        path = write(tmp_path, {"stores": [{"store_id": "S001"}, {"store_id": "S 2"}]})
        with pytest.raises(ConfigError, match=r"stores\.1\.store_id"):
            load_config(path)

    def test_an_unknown_key_is_refused(self, tmp_path: Path) -> None:
        path = write(tmp_path, {"hub": {"prot": 1}})
        with pytest.raises(ConfigError, match=r"hub\.prot"):
            load_config(path)

    def test_a_file_that_is_not_a_mapping_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "list.yaml"
        path.write_text("- a\n- b\n")
        with pytest.raises(ConfigError, match="mapping"):
            load_config(path)

    def test_the_default_state_is_a_sqlite_file_in_the_data_dir(self, tmp_path: Path) -> None:
        config = load_config(None, data_dir=tmp_path)
        assert config.hub.resolved_state_url() == f"sqlite:///{tmp_path.resolve() / 'tillflow.db'}"

    def test_a_dumped_config_loads_back_the_same(self, tmp_path: Path) -> None:
        original = load_config(
            write(tmp_path, {"hub": {"port": 8123}, "stores": [{"store_id": "S001", "currency": "GBP"}]})
        )
        again = tmp_path / "again.yaml"
        again.write_text(dump_config(original))
        assert load_config(again) == original

    def test_command_line_flags_win_over_the_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("TILLFLOW_HUB__PORT", "9123")
        assert load_config(write(tmp_path, {"hub": {"port": 8000}}), port=7000).hub.port == 7000

    def test_flow_settings_reach_the_consumer_runner(self, tmp_path: Path) -> None:
        from tillflow.bootstrap import bootstrap

        path = write(
            tmp_path,
            {
                "hub": {"data_dir": str(tmp_path)},
                "flows": {"inventory": {"max_attempts": 2, "batch_size": 7}},
            },
        )
        services = bootstrap(load_config(path))
        try:
            [runner] = services.consumers(["inventory"])
        finally:
            services.close()
        assert (runner.group, runner.batch_size, runner.policy.max_attempts) == ("inventory", 7, 2)

    def test_an_unknown_flow_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r"flows\.invetnory"):
            load_config(write(tmp_path, {"flows": {"invetnory": {"max_attempts": 2}}}))


class TestRetryableErrors:
    def test_the_defaults_dead_letter_poison_values_and_downstream_rejections(self) -> None:
        assert FlowSettings().non_retryable() == (PoisonEventError, ValueError, DownstreamRejectedError)
        assert FlowSettings().retryable() == ()

    def test_error_names_resolve_to_their_classes(self, tmp_path: Path) -> None:
        flows = {
            "inventory": {
                "non_retryable_errors": ["tillflow.errors.PoisonEventError", "builtins.KeyError"],
                "retryable_errors": ["json.JSONDecodeError", "ValueError"],
            }
        }
        flow = load_config(write(tmp_path, {"flows": flows})).flow("inventory")
        assert flow.non_retryable() == (PoisonEventError, KeyError)
        assert flow.retryable() == (json.JSONDecodeError, ValueError)

    @pytest.mark.parametrize(
        ("name", "why"),
        [
            ("tillflow.errors.NoSuchError", "tillflow.errors has no NoSuchError"),
            ("no_such_module.Error", "No module named 'no_such_module'"),
            ("NoSuchError", "is no builtin"),
            ("collections.OrderedDict", "not an exception class"),
            ("tillflow.errors.StorageError", "infrastructure error"),
        ],
    )
    def test_a_bad_error_name_names_the_flow_the_field_and_the_name(
        self, tmp_path: Path, name: str, why: str
    ) -> None:
        path = write(tmp_path, {"flows": {"inventory": {"retryable_errors": ["KeyError", name]}}})
        with pytest.raises(ConfigError) as raised:
            load_config(path)
        message = str(raised.value)
        assert "flows.inventory.retryable_errors.1" in message
        assert repr(name) in message and why in message

    def test_error_names_reach_the_consumer_runner(self, tmp_path: Path) -> None:
        from tillflow.bootstrap import bootstrap

        path = write(
            tmp_path,
            {
                "hub": {"data_dir": str(tmp_path)},
                "flows": {
                    "inventory": {"non_retryable_errors": ["KeyError"], "retryable_errors": ["OverflowError"]}
                },
            },
        )
        services = bootstrap(load_config(path))
        try:
            [runner] = services.consumers(["inventory"])
        finally:
            services.close()
        assert (runner.policy.non_retryable, runner.policy.retryable) == ((KeyError,), (OverflowError,))


class TestTheReadmeConfig:
    def test_the_configuration_shown_in_the_readme_loads(self, tmp_path: Path) -> None:
        readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
        block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
        (tmp_path / "tillflow.yaml").write_text(block)

        config = load_config(tmp_path / "tillflow.yaml")

        context = config.import_context()
        assert context.store_id("9") == "S009"
        assert context.tender_kind("S009", ["CHECK"], "tender").value == "voucher"
        assert "backoffice" in config.imports.csv.layouts
        routing = config.connectors.erp_routing
        assert routing is not None and routing.route("S001", "eu") == "cloud"
        assert routing.route("S002", "eu") == "both" and routing.route("S003", "us") == "legacy"
        [weekly, once] = config.connectors.erp.resilience.maintenance  # type: ignore[union-attr]
        assert weekly.days == ("sun",) and once.start is not None


ERP_URL = {"url": "http://127.0.0.1:8720"}


class TestConnectors:
    def test_routing_to_an_erp_that_is_not_configured_is_refused(self, tmp_path: Path) -> None:
        connectors = {"erp": ERP_URL, "erp_routing": {"stores": {"S001": "both"}}}
        with pytest.raises(ConfigError, match=r"connectors: .*\['legacy'\], which is not configured"):
            load_config(write(tmp_path, {"connectors": connectors}))

    def test_two_erps_need_a_routing(self, tmp_path: Path) -> None:
        connectors = {"erp": ERP_URL, "erp_legacy": {"directory": str(tmp_path)}}
        with pytest.raises(ConfigError, match="erp_routing says which gets what"):
            load_config(write(tmp_path, {"connectors": connectors}))

    def test_one_erp_gets_every_posting_without_a_routing(self, tmp_path: Path) -> None:
        config = load_config(write(tmp_path, {"connectors": {"erp_legacy": {"directory": str(tmp_path)}}}))
        routing = config.connectors.erp_routing_or_default()
        assert routing is not None and routing.route("S001", None) == "legacy"

    def test_a_malformed_maintenance_window_names_its_path(self, tmp_path: Path) -> None:
        window = {"days": ["sunday"], "from_time": "02:00", "to_time": "04:00"}
        erp = ERP_URL | {"resilience": {"maintenance": [window]}}
        with pytest.raises(ConfigError, match=r"connectors\.erp\.resilience\.maintenance\.0\.days"):
            load_config(write(tmp_path, {"connectors": {"erp": erp}}))

    def test_every_flow_runs_in_exactly_one_worker(self, tmp_path: Path) -> None:
        hub = {"worker_flows": [["relay", "inventory"], ["posting", "compliance"]]}
        with pytest.raises(ConfigError, match=r"hub\.worker_flows: .*missing: \['loyalty'\]"):
            load_config(write(tmp_path, {"hub": hub}))
