"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from lora_manager.core.errors import DatabaseUnreachableError

router = APIRouter(tags=["health"])

READY_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"description": "The database answers and its schema is at head"},
    503: {
        "description": "Not ready: `database unreachable` or `schema behind: at X, head is Y`",
        "content": {
            "application/json": {
                "example": {"status": "not ready", "reason": "schema behind: at a, head is b"}
            }
        },
    },
}


@router.get("/health/live", summary="The process is running")
def live() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/health/ready", summary="Ready to serve", responses=READY_RESPONSES)
@router.get("/health", summary="Ready to serve (alias)", responses=READY_RESPONSES)
def ready(request: Request) -> JSONResponse:
    try:
        status = request.app.state.schema_gate.status()
    except DatabaseUnreachableError:
        return JSONResponse(
            status_code=503, content={"status": "not ready", "reason": "database unreachable"}
        )
    if not status.at_head:
        return JSONResponse(
            status_code=503, content={"status": "not ready", "reason": status.describe()}
        )
    return JSONResponse(content={"status": "ready", "revision": ",".join(status.current)})
