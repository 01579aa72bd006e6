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
    from tillflow.observe.logs import configure_logging
    from tillflow.observe.tracing import configure_tracing

    cfg = _config(config, data_dir, host=host, port=port, role=role)
    configure_logging(cfg.observe, cfg.hub.role)
    configure_tracing(cfg.observe, cfg.hub.role)
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
    uvicorn.run(
        app_, host=cfg.hub.host, port=cfg.hub.port, log_level="warning", access_log=False, log_config=None
    )


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
    edge_agents: Annotated[
        int, typer.Option(help="edge agent processes the tills send to (0: the tills send to the hub)", min=0)
    ] = 4,
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
        edge_agents=edge_agents,
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


@sim_app.command("proxy")
def sim_proxy(
    listen: Annotated[int, typer.Option(help="port to listen on")],
    target: Annotated[str, typer.Option(help="where to forward: HOST:PORT")],
    admin_port: Annotated[int | None, typer.Option(help="faults API port (default: listen + 1)")] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    seed: Annotated[int, typer.Option(help="seed of each connection's fate")] = 0,
) -> None:
    """Run a TCP proxy that injects faults (down, drops, delay, resets mid-response), changed at
    run time through its faults API: GET, PATCH or DELETE /faults on the admin port."""
    from tillflow.sim.faultproxy import parse_target, serve

    try:
        target_host, target_port = parse_target(target)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    admin = listen + 1 if admin_port is None else admin_port
    console.print(f"fault proxy on {host}:{listen} to {target}; faults API on http://{host}:{admin}/faults")
    serve(listen, target_host, target_port, host=host, admin_port=admin, seed=seed)


@app.command("import")
def import_(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="POSLog XML, end-of-day CSV, Shopify or Square JSON; with --kind: master data CSV or JSON"
        ),
    ],
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="items, prices or promotions: load master data through the hub's batch API (an admin key)",
        ),
    ] = None,
    hub_url: Annotated[
        str | None, typer.Option("--hub", envvar="TILLFLOW_HUB_URL", help="the hub's URL")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="TILLFLOW_API_KEY", help="a store's or an admin key")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="parse and report; send nothing")] = False,
    json_out: Annotated[
        bool,
        typer.Option("--json", help="print each canonical transaction (with --kind: row) as one JSON line"),
    ] = False,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", help="poslog, csv, shopify or square; with --kind: csv or json (default: detected)"
        ),
    ] = None,
    report: Annotated[
        Path, typer.Option("--report", help="the quarantine report (CSV), written when a record is refused")
    ] = Path("quarantine.csv"),
    batch: Annotated[int, typer.Option(help="records per request to the hub", min=1, max=1000)] = 500,
    config: ConfigOpt = None,
) -> None:
    """Import files into tillflow: detect the format, map to canonical transactions, send them
    to the hub, and write refused records to a quarantine report. With --kind, load items,
    prices or promotions from an ERP or PIM file the same way (no config needed)."""
    from tillflow.importer import MASTER_MODELS, run_import, run_master_import

    if kind is not None:
        if kind not in MASTER_MODELS:
            console.print(f"[red]--kind is items, prices or promotions, not {kind}[/red]")
            raise typer.Exit(2)
        if fmt not in (None, "csv", "json"):
            console.print(f"[red]with --kind, --format is csv or json, not {fmt}[/red]")
            raise typer.Exit(2)
        _check_import(files, hub_url, api_key, dry_run)
        raise typer.Exit(
            run_master_import(
                files,
                kind,
                report_path=report,
                hub_url=None if dry_run else hub_url,
                api_key=None if dry_run else api_key,
                fmt="json" if fmt == "json" else "csv" if fmt == "csv" else None,
                batch=batch,
                json_out=json_out,
                console=console,
            )
        )
    cfg = _config(config, None)
    _check_import(files, hub_url, api_key, dry_run)
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


def _check_import(files: list[Path], hub_url: str | None, api_key: str | None, dry_run: bool) -> None:
    """Exits 2 when a file is missing, or the hub or its key is not given for a real import."""
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


edge_app = typer.Typer(
    help="The store agent: takes the tills' transactions durably and forwards them to the hub."
)
app.add_typer(edge_app, name="edge")


@edge_app.callback(invoke_without_command=True)
def edge(
    ctx: typer.Context,
    store: Annotated[
        list[str] | None, typer.Option("--store", help="a store this agent serves (repeat for several)")
    ] = None,
    hub_url: Annotated[
        str | None, typer.Option("--hub", envvar="TILLFLOW_HUB_URL", help="the hub's URL")
    ] = None,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="where the stores' outboxes live")] = Path(
        "edge-data"
    ),
    host: Annotated[str, typer.Option(help="address the local API listens on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port the local API listens on")] = 8710,
    batch: Annotated[int, typer.Option(help="transactions per request to the hub", min=1, max=1000)] = 500,
    linger_ms: Annotated[int, typer.Option(help="how long a batch waits to fill", min=0)] = 200,
    heartbeat_seconds: Annotated[float, typer.Option(help="seconds between heartbeats", min=0.1)] = 5.0,
    max_backoff: Annotated[
        float, typer.Option(help="the longest pause (seconds) while the hub is unreachable", min=0.1)
    ] = 30.0,
    retention_days: Annotated[
        float, typer.Option(help="days delivered transactions are kept for a re-send", min=0)
    ] = 7.0,
    max_outbox_mb: Annotated[
        float | None, typer.Option(help="each store's outbox at most this size (default: the disk)", min=0.01)
    ] = None,
    member_ttl_seconds: Annotated[
        float, typer.Option(help="seconds a member's balance is answered without asking the hub", min=0)
    ] = 300.0,
    offline_redemptions: Annotated[
        str, typer.Option(help="redemption holds while the hub is away: deny, or cap (--offline-cap-points)")
    ] = "deny",
    offline_cap_points: Annotated[
        int, typer.Option(help="with cap: points a member may be granted a day while the hub is away", min=0)
    ] = 500,
    master_sync_seconds: Annotated[
        float, typer.Option(help="seconds between master data syncs with the hub", min=0.1)
    ] = 30.0,
    drop_folder: Annotated[
        Path | None,
        typer.Option(help="watched for POSLog, CSV and JSON files (default: DATA_DIR/drop)"),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the store agent: the local API for the tills, an outbox and a forwarder per store, and
    the tills' lookups (prices, items, members, redemption holds) answered while the hub is away.
    The hub key comes from TILLFLOW_API_KEY_<STORE> (or TILLFLOW_API_KEY for one store); with
    TILLFLOW_EDGE_LOCAL_KEY set, the tills must send it as their bearer token. The stores' time
    zones, regions and currencies come from the config file's stores."""
    if ctx.invoked_subcommand is not None:
        return
    import os
    from datetime import timedelta

    import uvicorn

    from tillflow.edge.agent import LOCAL_KEY, AgentSettings, EdgeAgent, api_keys
    from tillflow.edge.app import create_edge_app
    from tillflow.observe.logs import configure_logging
    from tillflow.observe.tracing import configure_tracing

    if not store or not hub_url:
        console.print("[red]give --store S (one or more) and --hub URL[/red]")
        raise typer.Exit(2)
    if offline_redemptions not in ("deny", "cap"):
        console.print(f"[red]--offline-redemptions is deny or cap, not {offline_redemptions!r}[/red]")
        raise typer.Exit(2)
    cfg = _config(config, None)
    configure_logging(cfg.observe, "edge")
    configure_tracing(cfg.observe, "edge")
    try:
        keys = api_keys(store, os.environ)
        settings = AgentSettings(
            hub_url=hub_url,
            data_dir=data_dir,
            batch=batch,
            linger=linger_ms / 1000,
            retention=timedelta(days=retention_days),
            heartbeat_seconds=heartbeat_seconds,
            max_backoff=max_backoff,
            max_outbox_bytes=None if max_outbox_mb is None else int(max_outbox_mb * 1024 * 1024),
            max_batch_records=cfg.hub.max_batch_records,
            max_body_bytes=cfg.hub.max_body_bytes,
            member_ttl_seconds=member_ttl_seconds,
            offline_redemptions="cap" if offline_redemptions == "cap" else "deny",
            offline_cap_points=offline_cap_points,
            master_sync_seconds=master_sync_seconds,
            drop_folder=drop_folder,
        )
        agent = EdgeAgent(
            store,
            keys,
            settings,
            import_context=cfg.import_context(),
            poslog_settings=cfg.imports.poslog,
            import_settings=cfg.imports.by_format(),
            local_key=os.environ.get(LOCAL_KEY),
        )
    except TillflowError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    console.print(f"tillflow edge on http://{host}:{port} for {', '.join(store)}, forwarding to {hub_url}")
    uvicorn.run(  # uvicorn's own lines go through the same structured logs
        create_edge_app(agent), host=host, port=port, log_level="warning", access_log=False, log_config=None
    )


@edge_app.command("close-day")
def edge_close_day(
    store: Annotated[str, typer.Option("--store", help="the store whose day closes")],
    day: Annotated[str, typer.Option("--day", help="the business day, YYYY-MM-DD")],
    url: Annotated[str, typer.Option("--url", help="the agent's local API")] = "http://127.0.0.1:8710",
    json_out: Annotated[bool, typer.Option("--json", help="print the Z report as JSON")] = False,
) -> None:
    """Build the store-day's Z report from the agent's outbox and queue it at the agent, which
    sends it to the hub after the day's transactions."""
    import os
    from datetime import date

    import httpx

    from tillflow.edge.agent import LOCAL_KEY, close_day

    try:
        business_day = date.fromisoformat(day)
    except ValueError as exc:
        console.print(f"[red]--day is YYYY-MM-DD, not {day!r}[/red]")
        raise typer.Exit(2) from exc
    try:
        report, answer = close_day(url, store, business_day, local_key=os.environ.get(LOCAL_KEY))
    except (httpx.HTTPError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    if json_out:
        typer.echo(report.model_dump_json())
        return
    table = Table("register", "transactions", "last sequence", "tenders")
    for register in report.registers:
        tenders = ", ".join(f"{k.value} {v}" for k, v in sorted(register.totals_by_tender.items()))
        table.add_row(
            register.register_id, str(register.transaction_count), str(register.last_sequence), tenders
        )
    Console().print(table)
    console.print(f"day close of {store} on {business_day}: {answer['verdict']}, queued at the agent")


if __name__ == "__main__":
    app()
