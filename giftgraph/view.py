"""The GraphQL endpoint: Strawberry's ASGI view with giftgraph's context, auth and HTTP errors."""

from __future__ import annotations

import logging
from typing import Any

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult
from strawberry.schema import BaseSchema

from giftgraph.auth import InvalidToken, TokenVerifier
from resolvers.context import RequestContext

logger = logging.getLogger(__name__)

_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def error_response(status: int, message: str, *, headers: dict[str, str] | None = None) -> JSONResponse:
    code = _CODES.get(status, "BAD_REQUEST")
    return JSONResponse({"errors": [{"message": message, "extensions": {"code": code}}]}, status, headers=headers)


class GiftgraphView(GraphQL[RequestContext, None]):
    def __init__(self, schema: BaseSchema, verifier: TokenVerifier, *, graphiql: bool) -> None:
        super().__init__(schema, graphql_ide="graphiql" if graphiql else None, keep_alive=True, keep_alive_interval=15)
        self._verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await self.run(request)
        except InvalidToken as exc:
            response = error_response(401, str(exc), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        except HTTPException as exc:
            response = self._http_error(request, exc)
        await response(scope, receive, send)

    @staticmethod
    def _http_error(request: Request, exc: HTTPException) -> Response:
        if request.method == "GET" and "not allowed when using GET" in exc.reason:
            return error_response(405, "Mutations must be sent with POST.", headers={"Allow": "POST"})
        if exc.status_code == 405:
            return error_response(405, exc.reason, headers={"Allow": "GET, POST"})
        if exc.reason == "Unsupported content type":
            return error_response(415, "Send the operation as JSON (Content-Type: application/json).")
        return error_response(exc.status_code, exc.reason)

    def parse_json(self, data: str | bytes) -> Any:
        # Strawberry maps only JSONDecodeError; bytes that are not UTF-8 or nest too deeply raise
        # other errors, and a body that is JSON but not an object would fail later as a 500.
        try:
            value = self.decode_json(data)
        except (ValueError, RecursionError) as exc:
            raise HTTPException(400, "Unable to parse request body as JSON") from exc
        if not isinstance(value, (dict, list)):
            raise HTTPException(400, "Expected a JSON object.")
        return value

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        response = await super().process_result(request, result)
        # Errors raised before the operation starts (a query that does not parse) skip the
        # schema's ErrorCodes extension: give them their code here.
        for error in response.get("errors") or ():
            extensions = error.setdefault("extensions", {})
            if "code" not in extensions:
                extensions["code"] = (
                    "GRAPHQL_PARSE_FAILED" if error.get("message", "").startswith("Syntax Error") else "BAD_REQUEST"
                )
        return response

    async def get_context(self, request: Request | WebSocket, response: Any) -> RequestContext:
        services = request.app.state.services
        request_id = request.scope.get("state", {}).get("request_id", "-")
        context = RequestContext(services=services, request_id=request_id, request=request, response=response)
        if isinstance(request, Request):
            # A token that is present but invalid fails the request: never silently anonymous.
            context.user_id = self._verifier.user_id(request.headers.get("authorization"))
        return context

    async def on_ws_connect(self, context: RequestContext) -> Any:
        params = context.connection_params or {}
        authorization = params.get("authorization") or params.get("Authorization")
        try:
            user_id = self._verifier.user_id(authorization if isinstance(authorization, str) else None)
        except InvalidToken as exc:
            raise ConnectionRejectionError({"message": str(exc)}) from exc
        if user_id is None:
            raise ConnectionRejectionError({"message": 'Send {"authorization": "Bearer <token>"} in connection_init.'})
        context.user_id = user_id
        return None
