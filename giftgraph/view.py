"""The GraphQL endpoint: Strawberry's ASGI view with giftgraph's context, auth, HTTP errors, persisted
queries, CSRF prevention, and GraphQL-over-HTTP media types and status codes."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.base import BaseRequestProtocol
from strawberry.schema import BaseSchema
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError

from giftgraph.auth import InvalidToken, TokenUnverifiable, TokenVerifier
from giftgraph.csrf import CSRF_MESSAGE, is_csrf_risk
from giftgraph.persisted import PersistedQueries, PersistedQueryError, Resolved
from resolvers.context import RequestContext
from schema.limits import document_too_large

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"

_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    415: "UNSUPPORTED_MEDIA_TYPE",
}

# With application/graphql-response+json, a response without data (a request error) gets a 4xx or 5xx
# (GraphQL over HTTP). Parse failures are 400 and validation failures 422, as in the spec's newest draft;
# other request errors (variables that do not coerce, no such operation) are 400.
_REQUEST_ERROR_STATUS = {
    "GRAPHQL_PARSE_FAILED": 400,
    "GRAPHQL_VALIDATION_FAILED": 422,
    "INTERNAL_SERVER_ERROR": 500,
}

# Persisted-query answers a shared cache must not keep: the client is about to register the text.
_UNCACHEABLE_PERSISTED_ERRORS = {"PERSISTED_QUERY_NOT_FOUND", "PERSISTED_QUERY_NOT_SUPPORTED"}


def error_response(
    status: int, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    code = code or _CODES.get(status, "BAD_REQUEST")
    return JSONResponse({"errors": [{"message": message, "extensions": {"code": code}}]}, status, headers=headers)


def prefers_graphql_response(accept: str | None) -> bool:
    """Whether an Accept header prefers application/graphql-response+json to application/json.

    No header, `*/*` or plain application/json keep the legacy application/json (GraphQL over HTTP).
    """
    if not accept:
        return False
    weights: dict[str, float] = {}
    for part in accept.split(","):
        media_type, *params = (piece.strip() for piece in part.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        media_type = media_type.lower()
        weights[media_type] = max(weights.get(media_type, 0.0), weight)
    preferred = weights.get(GRAPHQL_RESPONSE_JSON, 0.0)
    legacy = weights.get("application/json", weights.get("application/*", weights.get("*/*", 0.0)))
    return preferred > 0 and preferred >= legacy


@dataclasses.dataclass
class Exchange:
    """What the view learns about one HTTP request while answering it; decides media type, status and caching."""

    graphql_response: bool  # the client prefers application/graphql-response+json
    hash_only: bool = False  # the operation was named by its persisted hash alone
    clean: bool | None = None  # every operation it ran finished without errors (None: none ran)
    request_error_status: int | None = None  # it failed before execution: the status under graphql-response+json


def _exchange(request: Request) -> Exchange | None:
    return getattr(request.state, "exchange", None)


def _may_be_shared(request: Request, exchange: Exchange) -> bool:
    """An anonymous GET by persisted hash: the only kind of answer marked cacheable by shared caches."""
    return request.method == "GET" and exchange.hash_only and not request.headers.get("authorization")


def _is_request_error(result: ExecutionResult) -> bool:
    # Execution had not started: no data, and no error belongs to a field.
    return bool(result.errors) and result.data is None and all(error.path is None for error in result.errors or ())


class PersistedTransportWSHandler(BaseGraphQLTransportWSHandler[RequestContext, None]):
    """graphql-transport-ws where a subscribe message may name its operation by persisted hash, and the
    safelist applies as it does over HTTP."""

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        payload = message.get("payload")
        operation_id = message.get("id")
        # Protocol errors (no ack yet, a duplicate id) are the base handler's to answer.
        if self.connection_acknowledged and isinstance(payload, dict) and operation_id not in self.operations:
            assert isinstance(self.view, GiftgraphView)
            try:
                resolved = self.view.persisted.resolve(payload.get("query"), payload.get("extensions"))
            except PersistedQueryError as exc:
                error = {"id": operation_id, "type": "error", "payload": [exc.formatted]}
                await self.send_message(error)  # type: ignore[arg-type]
                return
            if resolved.query is not None:
                message = {**message, "payload": {**payload, "query": resolved.query}}
            # Strawberry's WebSocket handler closes the socket on any parse error: answer an
            # oversized document with an error message, as HTTP does, and keep the connection.
            too_large = document_too_large(message["payload"].get("query"), self.view.max_document_bytes)
            if too_large is not None:
                formatted = {"message": too_large.message, "extensions": too_large.extensions}
                await self.send_message({"id": operation_id, "type": "error", "payload": [formatted]})  # type: ignore[arg-type]
                return
        await super().handle_subscribe(message)


class GiftgraphView(GraphQL[RequestContext, None]):
    graphql_transport_ws_handler_class = PersistedTransportWSHandler

    def __init__(
        self,
        schema: BaseSchema,
        verifier: TokenVerifier,
        *,
        graphiql: bool,
        persisted: PersistedQueries | None = None,
        persisted_max_age: int = 0,
        csrf_headers: Sequence[str] = ("X-GraphQL-CSRF", "Apollo-Require-Preflight"),
        allowed_origins: Sequence[str] = (),
        max_document_bytes: int = 0,
    ) -> None:
        persisted = persisted if persisted is not None else PersistedQueries("apq")
        # The legacy graphql-ws protocol has no hook for persisted queries: a safelist offers only the one that does.
        protocols = (
            (GRAPHQL_TRANSPORT_WS_PROTOCOL,)
            if persisted.mode == "safelist"
            else (GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL)
        )
        super().__init__(
            schema,
            graphql_ide="graphiql" if graphiql else None,
            keep_alive=True,
            keep_alive_interval=15,
            subscription_protocols=protocols,
            allowed_origins=allowed_origins,  # cross-origin WebSocket handshakes, as CORS allows for HTTP
        )
        self._verifier = verifier
        self.max_document_bytes = max_document_bytes
        self.persisted = persisted
        self._persisted_max_age = persisted_max_age
        self._csrf_headers = tuple(csrf_headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive)
        exchange = Exchange(graphql_response=prefers_graphql_response(request.headers.get("accept")))
        request.state.exchange = exchange
        if is_csrf_risk(request.method, request.headers, self._csrf_headers):
            # Before anything else runs: a forged request must reach neither auth nor the provider.
            message = CSRF_MESSAGE.format(headers=", ".join(self._csrf_headers) or "Authorization")
            response: Response = error_response(400, message, code="CSRF_BLOCKED")
        else:
            try:
                response = await self.run(request)
            except InvalidToken as exc:
                response = error_response(401, str(exc), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
            except TokenUnverifiable as exc:
                # The identity provider is out of reach, not the token at fault: a 401 would make clients
                # drop a good token; this is retryable.
                retry_after = {"Retry-After": str(exc.retry_after_seconds)}
                response = error_response(503, str(exc), code="AUTH_UNAVAILABLE", headers=retry_after)
            except HTTPException as exc:
                response = self._http_error(request, exc)
            except PersistedQueryError as exc:
                response = error_response(exc.status, exc.message, code=exc.code)
                if exc.code in _UNCACHEABLE_PERSISTED_ERRORS:
                    response.headers["Cache-Control"] = "private, no-cache, must-revalidate"
        self._finish(request, exchange, response)
        await response(scope, receive, send)

    def _finish(self, request: Request, exchange: Exchange, response: Response) -> None:
        """Media type, status and caching, once the response is known (other layers' statuses are kept)."""
        is_graphql_json = (response.media_type or response.headers.get("content-type", "")).startswith(
            "application/json"
        )
        if exchange.graphql_response and is_graphql_json:
            response.headers["Content-Type"] = f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8"
            if response.status_code == 200 and exchange.request_error_status is not None:
                response.status_code = exchange.request_error_status
        if request.headers.get("authorization"):
            # Never in a shared cache, nor in the browser's: the answer is someone's own.
            response.headers["Cache-Control"] = "private, no-store"
        elif (
            _may_be_shared(request, exchange)
            and exchange.clean is True
            and response.status_code == 200
            and self._persisted_max_age > 0
            and "cache-control" not in response.headers
        ):
            response.headers["Cache-Control"] = f"public, max-age={self._persisted_max_age}"
            if "RateLimit" in response.headers:
                del response.headers["RateLimit"]  # this client's budget (the policy header is everyone's)
            # The media type follows Accept, and a cache must not hand this to a signed-in request.
            response.headers.add_vary_header("Accept")
            response.headers.add_vary_header("Authorization")

    @staticmethod
    def _http_error(request: Request, exc: HTTPException) -> Response:
        if request.method == "GET" and "not allowed when using GET" in exc.reason:
            return error_response(405, "Mutations must be sent with POST.", headers={"Allow": "POST"})
        if exc.status_code == 405:
            return error_response(405, exc.reason, headers={"Allow": "GET, POST"})
        if exc.reason == "Unsupported content type":
            return error_response(415, "Send the operation as JSON (Content-Type: application/json).")
        return error_response(exc.status_code, exc.reason)

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        # A GET by persisted hash has no `query` either: it is an operation, not a browser asking for GraphiQL.
        return super().should_render_graphql_ide(request) and "extensions" not in request.query_params

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

    async def execute_operation(  # noqa: PLR0917
        self,
        request: Request,
        request_adapter: Any,
        request_data: GraphQLRequestData | list[GraphQLRequestData],
        context: RequestContext,
        root_value: None,
        sub_response: Response,
    ) -> Any:
        # Persisted queries first: the text to run replaces the hash before Strawberry looks at the request
        # (and before the GET check, so a mutation named by hash is still refused over GET).
        batch = request_data if isinstance(request_data, list) else [request_data]
        resolved = [self.persisted.resolve(data.query, data.extensions) for data in batch]
        runnable = [dataclasses.replace(data, query=r.query) for data, r in zip(batch, resolved, strict=True)]
        exchange = _exchange(request)
        if exchange is not None:
            exchange.hash_only = all(r.hash_only for r in resolved)
        result = await super().execute_operation(
            request=request,
            request_adapter=request_adapter,
            request_data=runnable if isinstance(request_data, list) else runnable[0],
            context=context,
            root_value=root_value,
            sub_response=sub_response,
        )
        results = result if isinstance(result, list) else [result]
        self._remember(resolved, results)
        return result

    def _remember(self, resolved: list[Resolved], results: list[Any]) -> None:
        # Register APQ text only once it has parsed and validated: junk cannot crowd out real operations.
        for registration, result in zip(resolved, results, strict=False):
            if isinstance(result, ExecutionResult) and not isinstance(result, PreExecutionError):
                self.persisted.remember(registration)

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        response = await super().process_result(request, result)
        exchange = _exchange(request)
        if exchange is not None:
            exchange.clean = exchange.clean is not False and not result.errors
            if _is_request_error(result):
                code = (response["errors"][0].get("extensions") or {}).get("code")
                exchange.request_error_status = _REQUEST_ERROR_STATUS.get(code, 400)
                if exchange.graphql_response:
                    response.pop("data", None)  # the spec: a request error has no `data` entry
            if _may_be_shared(request, exchange):
                # A shared cache would hand this body to other clients: keep the operation's cost, which is
                # the same for everyone, but not this client's remaining budget.
                cost = (response.get("extensions") or {}).get("cost")
                if isinstance(cost, dict):
                    cost.pop("throttleStatus", None)
        return response

    async def get_context(self, request: Request | WebSocket, response: Any) -> RequestContext:
        services = request.app.state.services
        request_id = request.scope.get("state", {}).get("request_id", "-")
        context = RequestContext(services=services, request_id=request_id, request=request, response=response)
        if isinstance(request, Request):
            # A token that is present but invalid fails the request: never silently anonymous.
            context.user_id = await self._verifier.user_id(request.headers.get("authorization"))
        return context

    async def on_ws_connect(self, context: RequestContext) -> Any:
        params = context.connection_params or {}
        authorization = params.get("authorization") or params.get("Authorization")
        try:
            identity = await self._verifier.identity(authorization if isinstance(authorization, str) else None)
        except (InvalidToken, TokenUnverifiable) as exc:
            raise ConnectionRejectionError({"message": str(exc)}) from exc
        if identity is None:
            raise ConnectionRejectionError({"message": 'Send {"authorization": "Bearer <token>"} in connection_init.'})
        context.user_id, expires_at = identity
        # A socket outlives its token otherwise: close it (4403, as for a refused init) when the token
        # would no longer be accepted over HTTP; the client reconnects with a fresh one.
        websocket = context.request
        if isinstance(websocket, WebSocket):
            delay = max(0.0, expires_at - time.time())
            asyncio.get_running_loop().call_later(delay, lambda: asyncio.ensure_future(_close_expired(websocket)))
        return None


async def _close_expired(websocket: WebSocket) -> None:
    if websocket.application_state is not WebSocketState.CONNECTED:
        return  # closed meanwhile
    try:
        await websocket.close(code=4403, reason="Token expired")
    except (RuntimeError, OSError):  # the connection went away between the check and the close
        pass
