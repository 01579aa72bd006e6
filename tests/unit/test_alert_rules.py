"""Alert rules in the config file: each kind read from YAML, and a bad rule refused with its path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tillflow.config import load_config
from tillflow.errors import ConfigError
from tillflow.observe.alert_rules import DeadLettersRule, ReconciliationRule, StoreOfflineRule

RULES = """
alerts:
  evaluate_seconds: 2
  webhook_url: http://ops.example/hook
  rules:
    - {name: s-off, kind: store_offline, minutes: 0.5, severity: critical}
    - {name: dlq, kind: dead_letters, group: posting, above: 0}
    - {name: books, kind: reconciliation_mismatch, days: 3}
"""


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tillflow.yaml"
    path.write_text(text)
    return path


class TestAlertRulesConfig:
    def test_rules_are_read_by_kind(self, tmp_path: Path) -> None:
        config = load_config(config_file(tmp_path, RULES), data_dir=tmp_path)

        offline, dead, books = config.alerts.rules
        assert isinstance(offline, StoreOfflineRule) and offline.minutes == 0.5
        assert isinstance(dead, DeadLettersRule) and (dead.group, dead.above) == ("posting", 0)
        assert isinstance(books, ReconciliationRule) and books.days == 3
        assert config.alerts.webhook_url == "http://ops.example/hook"

    def test_a_dead_letter_rule_needs_a_limit(self, tmp_path: Path) -> None:
        text = "alerts:\n  rules:\n    - {name: dlq, kind: dead_letters}\n"
        with pytest.raises(ConfigError, match=r"alerts\.rules"):
            load_config(config_file(tmp_path, text), data_dir=tmp_path)

    def test_an_unknown_kind_is_refused(self, tmp_path: Path) -> None:
        text = "alerts:\n  rules:\n    - {name: x, kind: disk_full}\n"
        with pytest.raises(ConfigError, match=r"alerts\.rules"):
            load_config(config_file(tmp_path, text), data_dir=tmp_path)

    def test_rule_names_are_unique(self, tmp_path: Path) -> None:
        text = "alerts:\n  rules:\n    - {name: x, kind: lag, above: 1}\n    - {name: x, kind: lag, above: 2}"
        with pytest.raises(ConfigError, match="unique"):
            load_config(config_file(tmp_path, text), data_dir=tmp_path)
