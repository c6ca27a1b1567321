"""What /v1/schema says, and that the server agrees (issue 13, item 13: the schema lied)."""

from __future__ import annotations

import pytest

from accounts.models import ApiKey
from tests.conftest import MODEL

pytestmark = pytest.mark.django_db


@pytest.fixture
def openapi(anonymous):
    response = anonymous.get("/v1/schema?format=json")
    assert response.status_code == 200
    return response.json()


def _resolve(openapi, schema):
    while "$ref" in schema:
        schema = openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _json_response(openapi, path, method, status):
    content = openapi["paths"][path][method]["responses"][status]["content"]
    return _resolve(openapi, content["application/json"]["schema"])


def test_the_schema_says_the_key_list_is_an_object_holding_the_list(openapi, api):
    listed = _json_response(openapi, "/v1/keys", "get", "200")
    assert listed["type"] == "object" and listed["properties"]["data"]["type"] == "array"
    body = api.get("/v1/keys").json()
    assert body["object"] == "list" and isinstance(body["data"], list)


def test_the_schema_says_rotate_answers_201_with_the_new_keys_value(openapi, api):
    responses = openapi["paths"]["/v1/keys/{id}/rotate"]["post"]["responses"]
    assert "201" in responses and "200" not in responses
    assert "value" in _json_response(openapi, "/v1/keys/{id}/rotate", "post", "201")["properties"]
    key_id = api.get("/v1/keys").json()["data"][0]["id"]
    assert api.post(f"/v1/keys/{key_id}/rotate", {}).status_code == 201


def test_every_keyed_operation_documents_the_one_error_body_for_its_refusals(openapi):
    error = openapi["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert set(_resolve(openapi, error["properties"]["error"])["properties"]) == {"message", "type", "param", "code"}
    keyed = 0
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            if path in ("/healthz", "/readyz"):
                continue
            keyed += 1
            statuses = set(operation["responses"])
            expected = {"401", "403", "429", "503"} | ({"400", "413", "415"} if "requestBody" in operation else set())
            assert expected <= statuses, (method, path, expected - statuses)
            for status in statuses - {"200", "201"}:
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
            assert operation["security"] == [{"ApiKey": []}], (method, path)
    assert keyed == 16


def test_streamed_answers_are_documented_as_server_sent_events(openapi):
    for path in ("/v1/chat/completions", "/v1/completions"):
        assert set(openapi["paths"][path]["post"]["responses"]["200"]["content"]) == {
            "application/json", "text/event-stream"}


def test_the_schema_refuses_an_empty_message_list_and_an_unknown_model_and_so_does_the_server(openapi, api):
    request = _resolve(openapi, openapi["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"][
        "application/json"]["schema"])
    assert set(request["required"]) == {"model", "messages"}
    assert request["properties"]["messages"]["minItems"] == 1
    assert request["properties"]["model"]["enum"] == [MODEL]
    assert api.post("/v1/chat/completions", {"messages": [], "model": ""}).status_code == 400


def test_a_key_name_that_is_not_a_string_is_refused_not_turned_into_one(api):
    before = ApiKey.objects.count()
    response = api.post("/v1/keys", {"name": -252})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "name"
    assert ApiKey.objects.count() == before


@pytest.mark.parametrize("field, value", [("stream", "yes"), ("max_tokens", "12"), ("temperature", "1"),
                                          ("user", 7), ("seed", True)])
def test_a_generation_field_of_the_wrong_json_type_is_refused(api, fake_engine, field, value):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], field: value}
    response = api.post("/v1/chat/completions", body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == field
    assert fake_engine.submitted == []  # no model call


def test_an_integer_written_with_a_zero_fraction_is_an_integer_as_json_schema_says(api):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3.0, "n": 1.0}
    assert api.post("/v1/chat/completions", body).status_code == 200


def test_max_tokens_over_the_limit_is_refused_even_beside_max_completion_tokens(api, settings):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 5,
            "max_tokens": settings.SLUICE_MAX_NEW_TOKENS + 1}
    response = api.post("/v1/chat/completions", body)
    assert response.status_code == 400 and response.json()["error"]["param"] == "max_tokens"


def test_the_schema_caps_a_keys_limits_at_what_the_database_holds(openapi):
    key = _resolve(openapi, openapi["components"]["schemas"]["ApiKey"])["properties"]
    assert key["requests_per_minute"]["maximum"] == key["tokens_per_minute"]["maximum"] == 2**31 - 1
