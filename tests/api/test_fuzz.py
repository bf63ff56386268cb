"""Generated requests from the OpenAPI schema: bad input is a 4xx, never a 500."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.api.conftest import USER


def test_no_server_errors(client, dataset_id):
    seen = []
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            response = case.call(headers=USER)
            seen.append((case.method, response.status_code))
            assert response.status_code < 500, (case.method, case.formatted_path, response.text[:500])

        check()
    assert {code for _, code in seen} >= {200, 404, 422}  # requests got past auth into validation and lookups
