"""The baseline of bench_http.py: Starlette on uvicorn answering 200 after reading the body,
touching no storage. `uvicorn scripts.bare_app:app`."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def callback(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"outcome": "applied"})


async def instance(request: Request) -> JSONResponse:
    """bench_reads.py's baseline: a small JSON answer for a GET."""
    return JSONResponse({"id": request.path_params["instance_id"], "state": "in_progress"})


app = Starlette(
    routes=[
        Route("/callbacks/flow", callback, methods=["POST"]),
        Route("/healthz", lambda request: JSONResponse({"status": "ok"})),
        Route("/instances/{instance_id}", instance),
    ]
)
