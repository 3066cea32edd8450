"""The baseline of bench_http.py: Starlette on uvicorn answering 200 after reading the body,
touching no storage. `uvicorn scripts.bare_app:app`."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def callback(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"outcome": "applied"})


app = Starlette(
    routes=[
        Route("/callbacks/flow", callback, methods=["POST"]),
        Route("/healthz", lambda request: JSONResponse({"status": "ok"})),
    ]
)
