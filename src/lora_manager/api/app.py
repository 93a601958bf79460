"""The FastAPI app factory."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
from fastapi import Depends, FastAPI

from lora_manager.api.auth import require_api_key
from lora_manager.api.docs import install_offline_docs
from lora_manager.api.errors import install_error_handlers
from lora_manager.api.guard import GUARDED, RequestGuard
from lora_manager.api.health import router as health_router
from lora_manager.api.schema_gate import SchemaGate
from lora_manager.catalog.routes import router as catalog_router
from lora_manager.core.config import Settings, get_settings
from lora_manager.core.db import make_engine, make_session_factory
from lora_manager.core.migrations import MigrationRunner
from lora_manager.core.queue import JobQueue
from lora_manager.core.version import package_version
from lora_manager.deliveries.routes import jobs_router as deliveries_router
from lora_manager.deliveries.routes import router as compose_router
from lora_manager.ingest.routes import adapters_router as register_router
from lora_manager.ingest.routes import router as imports_router
from lora_manager.ingest.runs import interrupt_dead_runs
from lora_manager.recommendations.routes import router as recommendations_router
from lora_manager.recommendations.service import Recommender
from lora_manager.worker import Worker

log = logging.getLogger(__name__)

_APP_CONNECT_TIMEOUT = 3
# Seconds shutdown waits for an index load still under way before closing the engine.
WARM_UP_WAIT = 30.0


def _schema_ready(gate: SchemaGate) -> Callable[[], bool]:
    return lambda: gate.status().at_head


def migrate_to_head(settings: Settings) -> None:
    """Wait for the database and upgrade it to head, through the migration runner."""
    runner = MigrationRunner(settings, echo=log.info)
    runner.wait()
    outcome = runner.upgrade("head")
    if outcome.applied:
        log.info("schema upgraded to head: %s", ", ".join(outcome.applied))


def create_app(
    settings: Settings | None = None,
    *,
    migrate_on_startup: bool | None = None,
    run_worker: bool = False,
) -> FastAPI:
    """Build the API. With `migrate_on_startup` (default: the setting) the schema is brought
    to head before the first request is served; with `run_worker` a queue consumer runs in
    this process once the schema is at head."""
    settings = settings or get_settings()
    migrate = settings.migrate_on_startup if migrate_on_startup is None else migrate_on_startup

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if migrate:
            await anyio.to_thread.run_sync(migrate_to_head, settings)
        # Runs left pending or running by a process that died are interrupted, not eternal.
        await anyio.to_thread.run_sync(interrupt_dead_runs, app.state.session_factory, settings)
        warming = app.state.recommender.warm_up(_schema_ready(app.state.schema_gate))
        worker = thread = None
        if run_worker:
            # The same worker as `lora-manager worker`, in a thread: it waits for the schema.
            worker = Worker(settings, echo=log.info)
            thread = threading.Thread(target=worker.run, name="in-process-worker", daemon=True)
            thread.start()
        # What start-up built lives as long as the process: full collections need not walk it.
        gc.freeze()
        yield
        gc.unfreeze()
        await anyio.to_thread.run_sync(warming.join, WARM_UP_WAIT)
        if worker is not None and thread is not None:
            worker.stopping.set()
            await anyio.to_thread.run_sync(thread.join)
        app.state.queue.close()
        app.state.engine.dispose()

    app = FastAPI(
        title="LoRA Manager",
        version=package_version(),
        summary="Catalog, compose and generate with your LoRA adapters.",
        lifespan=lifespan,
        docs_url=None,  # served by install_offline_docs, without a CDN
        redoc_url=None,
    )
    engine = make_engine(settings, connect_timeout=_APP_CONNECT_TIMEOUT)
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.schema_gate = SchemaGate(engine, settings.schema_check_interval)
    app.state.queue = JobQueue(settings)
    app.state.recommender = Recommender(settings, engine)

    install_error_handlers(app)
    # Key and size checked before FastAPI reads a body (api/guard.py).
    app.add_middleware(RequestGuard, api_key=settings.api_key, max_body=settings.max_request_bytes)
    app.include_router(health_router)
    install_offline_docs(app)
    protected = [Depends(require_api_key)]
    app.include_router(catalog_router, prefix="/v1", dependencies=protected, responses=GUARDED)
    app.include_router(register_router, prefix="/v1", dependencies=protected, responses=GUARDED)
    app.include_router(imports_router, prefix="/v1", dependencies=protected, responses=GUARDED)
    app.include_router(compose_router, prefix="/v1", dependencies=protected, responses=GUARDED)
    app.include_router(deliveries_router, prefix="/v1", dependencies=protected, responses=GUARDED)
    app.include_router(
        recommendations_router, prefix="/v1", dependencies=protected, responses=GUARDED
    )
    return app
