"""The `tillflow` command line: demo, hub, keys, schema, and operations (lag, dlq, replay)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tillflow import masterdata_ops, ops, stock_ops
from tillflow.config import TillflowConfig, load_config
from tillflow.errors import TillflowError

app = typer.Typer(help="tillflow: tills, loyalty and ERP in step, exactly once.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys for stores and administrators.", no_args_is_help=True)
schema_app = typer.Typer(help="JSON Schema of the canonical model.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(schema_app, name="schema")
app.add_typer(ops.dlq_app, name="dlq")
app.add_typer(ops.erp_app, name="erp")
app.add_typer(ops.postings_app, name="postings")
app.add_typer(stock_ops.products_app, name="products")
app.add_typer(stock_ops.inventory_app, name="inventory")
app.add_typer(masterdata_ops.masterdata_app, name="masterdata")
sim_app = typer.Typer(
    help="Reference downstream services (their own process and SQLite file).", no_args_is_help=True
)
app.add_typer(sim_app, name="sim")
app.command("lag")(ops.lag)
app.command("replay")(ops.replay)
app.command("reconcile")(ops.reconcile)
console = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", envvar="TILLFLOW_CONFIG", help="YAML config file")
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="where the embedded state lives")]


def _config(config: Path | None, data_dir: Path | None, **hub: object) -> TillflowConfig:
    overrides = {k: v for k, v in hub.items() if v is not None}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    try:
        return load_config(config, **overrides)
    except TillflowError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


@app.command()
def hub(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on")] = None,
    role: Annotated[
        str | None, typer.Option(help="all: API + worker process; api: API only; worker: flow consumers only")
    ] = None,
    flows: Annotated[
        str | None,
        typer.Option("--flows", help="worker: only these flows, comma-separated"),
    ] = None,
) -> None:
    """Run the hub: the API gateway and the flow consumers."""
    import uvicorn

    from tillflow.bootstrap import bootstrap
    from tillflow.hub.app import create_app
    from tillflow.hub.runtime import WorkerSupervisor, run_worker, tune_gc

    cfg = _config(config, data_dir, host=host, port=port, role=role)
    services = bootstrap(cfg)
    tune_gc()
    if cfg.hub.role == "worker":
        console.print(f"tillflow worker running {flows or ', '.join(services.consumer_groups)}")
        run_worker(services, None if flows is None else [f.strip() for f in flows.split(",") if f.strip()])
        return
    worker = None
    if cfg.hub.role == "all":
        passthrough = [
            *(["--config", str(config)] if config else []),
            *(["--data-dir", str(data_dir)] if data_dir else []),
        ]
        running = {"relay", *services.consumer_groups}  # a group none of whose flows runs gets no process
        groups = [g for g in cfg.hub.worker_flows if running & set(g)]
        worker = WorkerSupervisor(passthrough, [["--flows", ",".join(g)] for g in groups])
    console.print(
        f"tillflow hub on http://{cfg.hub.host}:{cfg.hub.port} ({len(cfg.stores)} stores configured)"
    )
    app_ = create_app(services, worker=worker)
    uvicorn.run(app_, host=cfg.hub.host, port=cfg.hub.port, log_level="warning", access_log=False)


@keys_app.command("create")
def keys_create(
    store: Annotated[str | None, typer.Option("--store", help="bind the key to this store")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="an admin key (all stores, operations)")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print a new API key (shown once; only its hash is stored)."""
    from tillflow.bootstrap import bootstrap

    if (store is None) == (not admin):
        console.print("[red]give either --store S or --admin[/red]")
        raise typer.Exit(2)
    cfg = _config(config, data_dir)
    if store is not None and store not in cfg.store_ids():
        console.print(f"[red]store {store!r} is not in the configuration[/red]")
        raise typer.Exit(2)
    services = bootstrap(cfg)
    try:
        typer.echo(services.keys.create_key(store_id=store, admin=admin))
    finally:
        services.close()


@schema_app.command("export")
def schema_export(directory: Annotated[Path, typer.Argument(help="where to write the schemas")]) -> None:
    """Write the JSON Schema of every canonical model into DIRECTORY."""
    from tillflow.model.schema import schema_documents

    directory.mkdir(parents=True, exist_ok=True)
    table = Table("schema", "bytes")
    for name, text in schema_documents().items():
        (directory / name).write_text(text)
        table.add_row(name, str(len(text)))
    Console().print(table)


@app.command()
def demo(
    stores: Annotated[int, typer.Option(help="how many stores send traffic")] = 20,
    transactions: Annotated[int, typer.Option(help="how many transactions in all")] = 20_000,
    batch: Annotated[int, typer.Option(help="transactions per HTTP batch")] = 200,
    data_dir: DataDirOpt = None,
    port: Annotated[int, typer.Option(help="hub port (0: any free port)")] = 0,
    keep_running: Annotated[bool, typer.Option("--keep-running", help="leave the hub up afterwards")] = False,
    seed: Annotated[int, typer.Option(help="traffic generator seed")] = 7,
    json_out: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    bus: Annotated[
        str, typer.Option(help="sqlite (embedded) or jetstream (starts a local nats-server)")
    ] = "sqlite",
    downstream: Annotated[
        bool,
        typer.Option("--downstream/--no-downstream", help="run the reference ERP and loyalty platform too"),
    ] = True,
) -> None:
    """Start a hub (and the reference ERP and loyalty platform), drive POS traffic from N stores
    through it, and print what happened."""
    from tillflow.demo import DemoSettings, run_demo

    settings = DemoSettings(
        stores=stores,
        transactions=transactions,
        batch=batch,
        data_dir=data_dir,
        port=port,
        keep_running=keep_running,
        seed=seed,
        json_out=json_out,
        bus="jetstream" if bus == "jetstream" else "sqlite",
        downstream=downstream,
    )
    if bus not in ("sqlite", "jetstream"):
        console.print(f"[red]--bus is sqlite or jetstream, not {bus}[/red]")
        raise typer.Exit(2)
    sys.exit(run_demo(settings))


SimDirOpt = Annotated[Path, typer.Option("--data-dir", help="where the service keeps its SQLite file")]
SimSettingsOpt = Annotated[
    Path | None, typer.Option("--settings", help="YAML file with the service's settings (defaults otherwise)")
]


def _sim_settings(model: type[Any], path: Path | None) -> Any:
    import yaml
    from pydantic import ValidationError

    try:
        raw = yaml.safe_load(path.read_text()) if path is not None else None
        return model.model_validate(raw or {})
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        console.print(f"[red]{path}: {exc}[/red]")
        raise typer.Exit(2) from exc


@sim_app.command("loyalty")
def sim_loyalty(
    port: Annotated[int, typer.Option(help="port to listen on")] = 8710,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    data_dir: SimDirOpt = Path("data"),
    settings: SimSettingsOpt = None,
) -> None:
    """Run the reference loyalty SaaS: members, tiers, earning rules, points ledger, holds."""
    from tillflow.sim.loyalty import LoyaltySimSettings, serve

    data_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"reference loyalty service on http://{host}:{port}")
    serve(port, data_dir / "loyalty.db", host=host, settings=_sim_settings(LoyaltySimSettings, settings))


@sim_app.command("erp")
def sim_erp(
    port: Annotated[int, typer.Option(help="port to listen on")] = 8720,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    data_dir: SimDirOpt = Path("data"),
    settings: SimSettingsOpt = None,
) -> None:
    """Run the reference ERP: chart of accounts, fiscal periods, journals, stock, trial balance."""
    from tillflow.sim.erp import ErpSimSettings, serve

    data_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"reference ERP on http://{host}:{port}")
    serve(port, data_dir / "erp.db", host=host, settings=_sim_settings(ErpSimSettings, settings))


@app.command("import")
def import_(
    files: Annotated[list[Path], typer.Argument(help="POSLog XML, end-of-day CSV, Shopify or Square JSON")],
    hub_url: Annotated[
        str | None, typer.Option("--hub", envvar="TILLFLOW_HUB_URL", help="the hub's URL")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="TILLFLOW_API_KEY", help="a store's or an admin key")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="parse and report; send nothing")] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="print each canonical transaction as one JSON line")
    ] = False,
    fmt: Annotated[
        str | None, typer.Option("--format", help="poslog, csv, shopify or square (default: detected)")
    ] = None,
    report: Annotated[
        Path, typer.Option("--report", help="the quarantine report (CSV), written when a record is refused")
    ] = Path("quarantine.csv"),
    batch: Annotated[int, typer.Option(help="transactions per request to the hub", min=1, max=1000)] = 500,
    config: ConfigOpt = None,
) -> None:
    """Import files into tillflow: detect the format, map to canonical transactions, send them
    to the hub, and write refused records to a quarantine report."""
    from tillflow.importer import run_import

    cfg = _config(config, None)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        console.print(f"[red]no such file: {', '.join(missing)}[/red]")
        raise typer.Exit(2)
    if not dry_run and (hub_url is None or api_key is None):
        console.print(
            "[red]give --hub URL and --api-key KEY (or TILLFLOW_HUB_URL and TILLFLOW_API_KEY),"
            " or --dry-run[/red]"
        )
        raise typer.Exit(2)
    raise typer.Exit(
        run_import(
            files,
            cfg.import_context(),
            cfg.imports.by_format(),
            report_path=report,
            hub_url=None if dry_run else hub_url,
            api_key=None if dry_run else api_key,
            fmt=fmt,
            batch=batch,
            json_out=json_out,
            console=console,
        )
    )


if __name__ == "__main__":
    app()
