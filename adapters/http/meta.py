"""Routes outside the signed API: the OpenAPI document (``/v1/openapi.json``), and for the data
centre, unsigned and to be firewalled, ``/healthz``, ``/readyz`` (:mod:`adapters.http.health`) and
``/metrics`` (:mod:`adapters.http.metrics`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adapters.http.context import Resource
from adapters.http.health import database_check
from adapters.http.metrics import CONTENT_TYPE
from adapters.http.openapi import openapi_document

__all__ = ["Meta"]


class Meta(Resource):
    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        ready, checks = await self.ctx.readiness.run({"database": database_check(self.ctx.store)})
        return JSONResponse({"ready": ready, "checks": checks}, 200 if ready else 503)

    async def metrics(self, request: Request) -> Response:
        agencies = [str(a.organ_id) for a in self.ctx.topology.agencies]
        body = await self.ctx.metrics.exposition(self.ctx.store, agencies)
        return Response(body, 200, media_type=CONTENT_TYPE)
