"""The sandbox service's OpenAPI document: committed and generated agree, it documents exactly the routes
the service exposes, and no input Schemathesis derives from it gets a 5xx from the live service.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from starlette.routing import Route

from providers.rest.contract import WEBHOOK_TYPES
from providers.sandbox.config import OPERATIONS
from providers.sandbox.openapi import DOCUMENT_PATH, build_document, document_text
from providers.sandbox.service import create_sandbox_app
from tests.sandbox_service import SandboxService, running_sandbox_service, sandbox_service_config

HTTP_METHODS = {"get", "post", "put", "delete", "patch"}
MAX_EXAMPLES = 8  # per operation and generation mode: ~230 requests in all


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    paths = document["paths"].items()
    return {(path, method.upper()) for path, item in paths for method in item if method in HTTP_METHODS}


def test_given_the_committed_document_then_it_equals_the_generated_one() -> None:
    assert DOCUMENT_PATH.read_text(encoding="utf-8") == document_text(), "run `giftgraph sandbox openapi`"


def test_given_the_service_app_then_every_route_is_documented_and_every_documented_route_exists(tmp_path: Path) -> None:
    app = create_sandbox_app(sandbox_service_config(tmp_path))
    served = {
        (route.path, method)
        for route in app.routes
        if isinstance(route, Route)
        for method in (route.methods or ())
        if method != "HEAD"  # Starlette adds HEAD to every GET
    }

    assert served == documented(build_document())


def test_given_the_document_then_it_is_openapi_3_1_with_resolvable_refs_and_one_operation_per_port_call() -> None:
    document = build_document()
    text = json.dumps(document)
    schemas = document["components"]["schemas"]
    operation_ids = [
        op["operationId"] for item in document["paths"].values() for m, op in item.items() if m in HTTP_METHODS
    ]

    assert document["openapi"] == "3.1.0"
    refs = {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}
    assert refs and refs <= set(schemas)
    assert len(operation_ids) == len(set(operation_ids)) and OPERATIONS <= set(operation_ids)
    assert set(document["webhooks"]) == set(WEBHOOK_TYPES)


def test_given_the_live_service_then_it_serves_the_committed_document_without_credentials(tmp_path: Path) -> None:
    import httpx

    with running_sandbox_service(tmp_path) as service:
        response = httpx.get(f"{service.url}/openapi.json")

    assert response.status_code == 200 and response.content == DOCUMENT_PATH.read_bytes()


# Fuzzing


@pytest.fixture(scope="module")
def fuzzed_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxService]:
    with running_sandbox_service(tmp_path_factory.mktemp("sandbox-fuzz"), rate_limit="100000/second") as service:
        yield service


@pytest.fixture(scope="module")
def live_schema(fuzzed_service: SandboxService) -> Any:
    return schemathesis.openapi.from_url(f"{fuzzed_service.url}/openapi.json")


def fuzz_targets() -> list[tuple[str, GenerationMode]]:
    """(label, mode) for every operation: valid inputs, and invalid ones where it takes any input at all."""
    paths = build_document()["paths"]
    targets = []
    for path, method in sorted(documented(build_document())):
        targets.append((f"{method} {path}", GenerationMode.POSITIVE))
        spec = paths[path][method.lower()]
        if spec.get("parameters") or spec.get("requestBody"):
            targets.append((f"{method} {path}", GenerationMode.NEGATIVE))
    return targets


@pytest.mark.slow
@pytest.mark.parametrize(("label", "mode"), fuzz_targets(), ids=lambda value: getattr(value, "value", value))
def test_given_fuzzed_requests_when_sent_to_the_live_service_then_never_a_5xx_and_valid_answers_fit_the_document(
    fuzzed_service: SandboxService, live_schema: Any, label: str, mode: GenerationMode
) -> None:
    method, path = label.split(" ", 1)
    operation = live_schema[path][method]
    creds = fuzzed_service.credentials
    checks = [not_a_server_error] + ([response_schema_conformance] if mode is GenerationMode.POSITIVE else [])

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,  # a fixed seed: the same requests on every run
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: schemathesis.Case) -> None:
        try:
            case.call_and_validate(
                base_url=fuzzed_service.url, auth=(creds.api_key, creds.api_secret), checks=checks, timeout=10
            )
        finally:
            fuzzed_service.clear_faults()  # a fuzzed fault schedule must not break the next request

    fuzz()
