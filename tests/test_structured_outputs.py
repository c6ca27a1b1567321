"""response_format on the fake engine: what reaches the engine, and schemas refused before anything is charged.
That the real model's output parses and validates is tests/test_structured_real_model.py's."""

import json

import pytest

from inference.grammar_spec import JSON_OBJECT, JSON_SCHEMA
from tests.conftest import MODEL
from tests.test_bad_input import CHAT, assert_refused_and_free, chat, metered  # noqa: F401

PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}


def schema_format(schema, name="person", **extra):
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, **extra}}


def test_a_json_schema_reaches_the_engine_as_its_grammar_in_the_schemas_own_key_order(api, fake_engine):
    fake_engine.replies.append('{"name": "Ada", "age": 36}')
    response = api.post(CHAT, chat(response_format=schema_format(PERSON, strict=True)))
    assert response.status_code == 200, response.content
    assert json.loads(response.json()["choices"][0]["message"]["content"]) == {"name": "Ada", "age": 36}
    grammar = fake_engine.submitted[0][1].grammar
    assert grammar.kind == JSON_SCHEMA and list(json.loads(grammar.schema)["properties"]) == ["name", "age"]


def test_json_object_asks_for_any_object_and_text_for_nothing(api, fake_engine):
    assert api.post(CHAT, chat(response_format={"type": "json_object"})).status_code == 200
    assert api.post(CHAT, chat(response_format={"type": "text"})).status_code == 200
    assert fake_engine.submitted[0][1].grammar.kind == JSON_OBJECT
    assert fake_engine.submitted[1][1].grammar is None


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("response_format, says", [
    ({"type": "xml"}, "json_schema"),
    ({"type": "json_schema"}, "schema"),
    (schema_format([1, 2]), "schema"),
    (schema_format({"type": "foo"}), "Invalid type: foo"),
    (schema_format({"type": "object", "properties": 5}), "properties"),
    (schema_format({"not": {"type": "string"}}), "not"),
    (schema_format({"type": "string", "pattern": "(?<=a)b"}), "look-around"),
    (schema_format({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}), "nowhere"),
    (schema_format(PERSON, name="has spaces"), "name"),
    (schema_format(PERSON, strict="yes"), "strict"),
    ("json", "type"),
])
def test_a_schema_that_cannot_be_enforced_is_a_400_that_says_why_and_costs_nothing(
        api, fake_engine, metered, response_format, says, stream):
    response = api.post(CHAT, chat(stream=stream, response_format=response_format))
    assert_refused_and_free(response, fake_engine, param="response_format")
    assert says in response.json()["error"]["message"]
