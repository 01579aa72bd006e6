"""The hub's FastAPI application: gateway routers, problem+json errors, in-process consumers."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

import tillflow
from tillflow.hub import console
from tillflow.hub.api import (
    alerts,
    books,
    health,
    inventory,
    loyalty,
    masterdata,
    metrics,
    ops,
    stores,
    transactions,
)
from tillflow.hub.problems import install_problem_handlers
from tillflow.hub.runtime import WorkerSupervisor
from tillflow.model import Transaction
from tillflow.observe.alerting import start_evaluator
from tillflow.observe.metrics import start_publisher
from tillflow.services import Services

THREADS = 8


def create_app(
    services: Services, *, in_process_consumers: bool = False, worker: WorkerSupervisor | None = None
) -> FastAPI:
    """The hub app over wired services. Flow consumers run in this process's threads
    (`in_process_consumers`) or in a supervised worker process; both start and stop with the app."""
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Handlers hand blocking work to threads. A few are enough: SQLite takes one writer
        # at a time, and each extra thread costs a malloc arena of resident memory.
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        app.state.consumer_threads = [c.start(stop) for c in app.state.consumers]
        if worker is not None:
            worker.start()
        evaluator = start_evaluator(services, stop)
        publisher = start_publisher(services, stop)  # this API process's own counters, for the others
        yield
        stop.set()
        for consumer in app.state.consumers:
            consumer.wake.set()
        for thread in app.state.consumer_threads:
            thread.join(timeout=10)
        for thread in (evaluator, publisher):
            if thread is not None:
                thread.join(timeout=10)
        if worker is not None:
            worker.stop()
        services.close()

    app = FastAPI(
        title="tillflow hub",
        version=tillflow.__version__,
        description="Retail integration hub: tills, loyalty and ERP in step, exactly once.",
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.consumers = services.consumers() if in_process_consumers else []
    app.state.consumer_threads = []
    app.state.worker = worker

    def wake_consumers() -> None:
        for consumer in app.state.consumers:
            consumer.wake.set()

    app.state.wake_consumers = wake_consumers
    install_problem_handlers(app)
    for router in (
        transactions.router,
        inventory.router,
        masterdata.router,
        books.router,
        loyalty.router,
        health.router,
        stores.router,
        ops.router,
        alerts.router,
        metrics.router,
        console.router,
    ):
        app.include_router(router)
    _publish_transaction_schema(app)
    return app


def _publish_transaction_schema(app: FastAPI) -> None:
    """Put the canonical Transaction schema into the OpenAPI document the batch body refers to."""
    base = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = base()
        defs = Transaction.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(defs.pop("$defs", {}))
        components["Transaction"] = defs
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
