"""DESIGN.md's dependency rule, read from the source: dependencies point inward.

`model` ← `formats`, `flows` ← `ports` ← adapters ← `hub`, `edge`, `sim` ← `bootstrap`, `cli`.
Every import of every module is found with `ast` (function-local and TYPE_CHECKING imports too),
relative imports resolved, and ``from package import name`` counted as importing
``package.name`` as well, since `name` may be a module.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "tillflow"
IO_LIBRARIES = frozenset(
    {"sqlalchemy", "httpx", "fastapi", "sqlite3", "psycopg", "nats", "os", "subprocess", "socket"}
)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. tillflow.flows.inventory
    target: str  # what it imports, e.g. tillflow.ports or sqlalchemy.exc
    line: int

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def module_name(path: Path) -> str:
    parts = ["tillflow", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_in(source: str, module: str, *, is_package: bool = False) -> list[Import]:
    """Every import in `source`, the text of `module`."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            found.append(Import(module, origin, node.lineno))
            found += [Import(module, f"{origin}.{alias.name}", node.lineno) for alias in node.names]
    return found


def imports_of(path: Path) -> list[Import]:
    return imports_in(path.read_text(), module_name(path), is_package=path.name == "__init__.py")


ALL_IMPORTS = [imp for path in sorted(SRC.rglob("*.py")) for imp in imports_of(path)]


def within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def of(*packages: str) -> list[Import]:
    """The imports made by modules inside `packages`."""
    return [imp for imp in ALL_IMPORTS if within(imp.module, *packages)]


def ours(imp: Import) -> bool:
    return within(imp.target, "tillflow")


class TestTheImportReader:
    """The rules below are only as good as the reader: it must see what is there."""

    def test_it_sees_the_imports_of_the_flows(self) -> None:
        targets = {imp.target for imp in of("tillflow.flows.inventory")}

        assert {"tillflow.ports", "tillflow.model", "tillflow.model.events"} <= targets

    def test_it_sees_imports_inside_functions(self) -> None:
        assert "tillflow.bootstrap" in {imp.target for imp in of("tillflow.cli")}

    def test_it_resolves_relative_imports(self) -> None:
        source = "from . import ingest\nfrom ..model import events\nfrom .ingest import judge_batch\n"

        found = {imp.target for imp in imports_in(source, "tillflow.flows.inventory")}

        assert {
            "tillflow.flows.ingest",
            "tillflow.model.events",
            "tillflow.flows.ingest.judge_batch",
        } <= found

    def test_it_counts_a_module_imported_from_its_package(self) -> None:
        found = {imp.target for imp in imports_in("from tillflow import bootstrap\n", "tillflow.storage.db")}

        assert "tillflow.bootstrap" in found

    def test_it_reads_every_layer(self) -> None:
        for layer in (
            "tillflow.model",
            "tillflow.flows",
            "tillflow.ports",
            "tillflow.bus",
            "tillflow.storage",
        ):
            assert of(layer), f"no imports found in {layer}"


class TestDependencyRule:
    def test_the_model_imports_nothing_else_of_tillflow(self) -> None:
        offending = [
            imp for imp in of("tillflow.model") if ours(imp) and not within(imp.target, "tillflow.model")
        ]

        assert offending == [], "\n".join(map(str, offending))

    @pytest.mark.parametrize("layer", ["tillflow.formats", "tillflow.flows"])
    def test_pure_layers_depend_only_on_model_ports_errors_and_themselves(self, layer: str) -> None:
        allowed = ("tillflow.model", "tillflow.ports", "tillflow.errors", layer)
        offending = [imp for imp in of(layer) if ours(imp) and not within(imp.target, *allowed)]

        assert offending == [], "\n".join(map(str, offending))

    @pytest.mark.parametrize(
        "layer", ["tillflow.model", "tillflow.formats", "tillflow.flows", "tillflow.ports"]
    )
    def test_pure_layers_do_no_io(self, layer: str) -> None:
        offending = [imp for imp in of(layer) if imp.target.split(".")[0] in IO_LIBRARIES]

        assert offending == [], "\n".join(map(str, offending))

    def test_the_ports_speak_only_in_model_values_and_errors(self) -> None:
        allowed = ("tillflow.model", "tillflow.errors")
        offending = [imp for imp in of("tillflow.ports") if ours(imp) and not within(imp.target, *allowed)]

        assert offending == [], "\n".join(map(str, offending))

    def test_only_the_entry_points_import_bootstrap(self) -> None:
        outermost = ("tillflow.bootstrap", "tillflow.cli", "tillflow.demo", "tillflow.ops")
        offending = [
            imp
            for imp in ALL_IMPORTS
            if within(imp.target, "tillflow.bootstrap") and not within(imp.module, *outermost)
        ]

        assert offending == [], "\n".join(map(str, offending))

    @pytest.mark.parametrize("layer", ["tillflow.bus", "tillflow.storage", "tillflow.connectors"])
    def test_adapters_never_reach_out_to_entry_points(self, layer: str) -> None:
        outer = (
            "tillflow.hub",
            "tillflow.edge",
            "tillflow.sim",
            "tillflow.bootstrap",
            "tillflow.cli",
            "tillflow.demo",
        )
        offending = [imp for imp in of(layer) if ours(imp) and within(imp.target, *outer)]

        assert offending == [], "\n".join(map(str, offending))

    def test_the_state_store_does_not_depend_on_the_bus(self) -> None:
        # the bus builds on the storage helpers; the reverse would be a cycle
        offending = [imp for imp in of("tillflow.storage") if within(imp.target, "tillflow.bus")]

        assert offending == [], "\n".join(map(str, offending))
