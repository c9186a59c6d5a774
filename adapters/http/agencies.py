"""``GET /v1/agencies``: the agencies of this province's axis (codes, names, levels, former codes)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adapters.http.auth import authenticate
from adapters.http.context import Resource
from adapters.http.payloads import agencies_json

__all__ = ["Agencies"]


class Agencies(Resource):
    async def agencies(self, request: Request) -> Response:
        await authenticate(self.ctx, request)
        return JSONResponse(agencies_json(self.ctx.topology))
