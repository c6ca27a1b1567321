"""Schemathesis over the real ``/v1/schema``, against the WSGI app in process, on the fake engine.

Every operation gets the explicit examples, the coverage phase (boundaries and each constraint broken) and
``MAX_EXAMPLES`` generated cases, positive and negative, from a fixed seed; every check schemathesis has is
on (server errors, status codes, content types, response bodies and headers against the schema, invalid
data refused, valid data served, auth ignored). Run alone: ``python -m pytest -m schemathesis``.
"""

from __future__ import annotations

import json
import re
from datetime import date, timedelta

import pytest
import schemathesis
from django.conf import settings as settings_
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, seed, settings

from accounts.keys import key_generate
from accounts.models import ALL_SCOPES
from accounts.services import account_get_or_create, key_create
from inference.registry import available_models
from moderation.detectors import detectors_load_in_background

SEED = 20261201
MAX_EXAMPLES = 25
SCOPELESS_EXAMPLES = 5

pytestmark = [pytest.mark.schemathesis, pytest.mark.django_db]


def _load_schema(*, max_examples: int, coverage: bool = True):
    from platform.wsgi import application

    config = schemathesis.Config.from_dict({
        "seed": SEED,
        # The JSON parser refuses NUL anywhere in a body (platform/parsers.py, tests/test_bad_input.py), extra keys
        # included, which a schema cannot say of keys it does not name; so no generated string holds one.
        "generation": {"mode": "all", "max-examples": max_examples, "allow-x00": False},
        "phases": {"coverage": {"enabled": coverage}},
    })
    return schemathesis.openapi.from_wsgi("/v1/schema", application, config=config)


schema = _load_schema(max_examples=MAX_EXAMPLES)
# A few cases per operation with a key that has no scope: the 403s (and 401s) must be as documented too.
scopeless_schema = _load_schema(max_examples=SCOPELESS_EXAMPLES, coverage=False)


@pytest.fixture(autouse=True)
def requests_keep_the_test_transaction():
    # The WSGI app ends each request with close_old_connections, which would close the connection that holds
    # the test's transaction; Django's own test client disconnects it the same way.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture(scope="module", autouse=True)
def moderation_loaded():
    """Loaded before the run, as a server loads them at start, so /readyz answers 200 rather than its 503."""
    from inference.task_models import task_models_load_in_background

    detectors_load_in_background().join()
    task_models_load_in_background().join()


# The keys' plaintexts are fixed for the module: schemathesis builds its coverage cases, auth included, when
# it collects the test, before any database exists; each test then stores these keys for its account.
FUZZ_KEY = key_generate()
TARGET_KEY = key_generate()  # the key that valid cases of /v1/keys/{id}... act on (never the fuzz key itself)


def _account_with_keys(name: str, *, scopes: list[str]) -> str:
    """An account whose limits are the largest a key may ask for (no wall of 429s; any limit a valid request
    sets is within the account's), its key with these scopes, and a target key. Returns the key."""
    account = account_get_or_create(name=name)
    account.requests_per_minute = 2**31 - 1
    account.tokens_per_minute = 2**31 - 1
    account.save()
    created = []
    for generated, key_name, key_scopes in ((FUZZ_KEY, "fuzz", scopes), (TARGET_KEY, "target", list(ALL_SCOPES))):
        with pytest.MonkeyPatch.context() as patched:
            patched.setattr("accounts.services.key_generate", lambda generated=generated: generated)
            created.append(key_create(account=account, name=key_name, scopes=key_scopes).plaintext)
    return created[0]


@pytest.fixture
def fuzz_key(db):
    return _account_with_keys("schemathesis", scopes=list(ALL_SCOPES))


@scopeless_schema.auth(refresh_interval=None)
@schema.auth(refresh_interval=None)
class FuzzKeyAuth:
    """The fuzz key on every case, except those whose point is a missing or wrong Authorization header
    (schemathesis leaves those alone; its ignored_auth check also re-sends valid cases without the key)."""

    def get(self, case, context):
        return FUZZ_KEY[0]

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def _usage_dates_within_a_month(query: dict) -> None:
    """``GET /v1/usage``'s dates, moved into the month around today, start before end: what the schema says in
    prose only (start_date not after end_date, at most ``API_MAX_DAYS`` days from start to end, which JSON
    Schema cannot say of two fields); tests/test_bad_input.py refuses the ranges outside it."""
    dates = {}
    for name in ("start_date", "end_date"):
        try:
            dates[name] = date.fromisoformat(query.get(name))
        except (TypeError, ValueError):
            continue  # absent, empty or invalid: sent as generated
        dates[name] = date.today() + timedelta(days=dates[name].toordinal() % 31 - 15)
    if len(dates) == 2 and dates["start_date"] > dates["end_date"]:
        dates["start_date"], dates["end_date"] = dates["end_date"], dates["start_date"]
    elif "start_date" in dates and "end_date" not in dates:
        dates["start_date"] = min(dates["start_date"], date.today())  # the end defaults to today
    query.update({name: value.isoformat() for name, value in dates.items()})


def _min_tokens_within_max_tokens(case) -> None:
    """What the schema says of ``min_tokens`` in prose only: at most the ``max_tokens`` in use (its default when
    absent). Valid cases only: in an invalid one, min_tokens may be what is wrong."""
    body = case.body
    if not (isinstance(body, dict) and isinstance(body.get("min_tokens"), int) and case.meta
            and case.meta.generation.mode.is_positive):
        return
    default = settings_.SLUICE_DEFAULT_MAX_TOKENS if case.path == "/v1/chat/completions" else 16
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or default
    body["min_tokens"] = min(body["min_tokens"], limit)


def _top_logprobs_with_logprobs(case) -> None:
    """What the schema says of chat's ``top_logprobs`` in prose only: above 0 it needs ``logprobs: true``.
    Valid cases only."""
    body = case.body
    if (isinstance(body, dict) and case.path == "/v1/chat/completions" and body.get("top_logprobs")
            and case.meta and case.meta.generation.mode.is_positive):
        body["logprobs"] = True


def _tools_fit_the_context(case) -> None:
    """What the schema says of ``tools`` and earlier tool calls in prose only: written into the prompt, they must
    leave it within the model's context window (past it, a 400 ``context_length_exceeded``). Valid cases only:
    at most 8 tools, plain parameters and short descriptions when their JSON is long, short call arguments and,\n    when the messages are long, short contents."""
    body = case.body
    if not (isinstance(body, dict) and case.path == "/v1/chat/completions" and case.meta
            and case.meta.generation.mode.is_positive):
        return
    for message in body.get("messages") or []:
        for call in (message.get("tool_calls") or []) if isinstance(message, dict) else []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str) and len(function["arguments"]) > 256:
                function["arguments"] = "{}"
    messages = body.get("messages")
    if isinstance(messages, list) and len(json.dumps(messages, ensure_ascii=False)) > 2048:
        for message in messages:
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                message["content"] = message["content"][:256]
    tools = body.get("tools")
    if not isinstance(tools, list):
        return
    body["tools"] = tools = tools[:8]
    if len(json.dumps(tools, ensure_ascii=False)) > 1024:
        for tool in tools:
            function = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(function, dict):
                function["parameters"] = {"type": "object"}
                if isinstance(function.get("description"), str):
                    function["description"] = function["description"][:64]


def _tool_choice_names_a_tool(case) -> None:
    """What the schema says of ``tools`` and ``tool_choice`` in prose only: tool names are unique, and a
    tool_choice other than none needs tools, one of them named when it names a function. Valid cases only."""
    body = case.body
    if not (isinstance(body, dict) and case.path == "/v1/chat/completions" and case.meta
            and case.meta.generation.mode.is_positive):
        return
    tools, seen = [], set()
    for index, tool in enumerate(body.get("tools") or []):
        name = tool["function"]["name"] if isinstance(tool, dict) and isinstance(tool.get("function"), dict) else None
        if isinstance(name, str) and not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name):
            # The pattern's $ lets Python's re (and so the generator) end a name in a newline; JSON Schema's does not.
            name = tool["function"]["name"] = f"tool_{index}"
        if name not in seen:
            seen.add(name)
            tools.append(tool)
    if body.get("tools"):
        body["tools"] = tools
    choice = body.get("tool_choice")
    if choice not in (None, "none") and not tools:
        body["tool_choice"] = None
    elif isinstance(choice, dict) and choice.get("function", {}).get("name") not in seen:
        choice["function"]["name"] = next(iter(seen))


def _schemas_can_be_enforced(case) -> None:
    """What the schema says of a tool's ``parameters`` and a ``json_schema``'s ``schema`` in prose only: a JSON
    Schema the grammar library can enforce (an arbitrary object, say with a 70-bit integer bound, is a 400 that
    names the field). Valid cases only: an unenforceable one gets the plainest schema, ``{"type": "object"}``."""
    from inference.constrained import GrammarError, grammar_check
    from inference.grammar_spec import GrammarSpec

    body = case.body
    if not (isinstance(body, dict) and case.path == "/v1/chat/completions" and case.meta
            and case.meta.generation.mode.is_positive):
        return

    def enforceable(schema) -> bool:
        try:
            grammar_check(GrammarSpec.for_schema(schema))
        except (GrammarError, TypeError, ValueError):
            return False
        return True

    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("parameters"), dict) and not enforceable(function["parameters"]):
            function["parameters"] = {"type": "object"}
    response_format = body.get("response_format")
    spec = response_format.get("json_schema") if isinstance(response_format, dict) else None
    if isinstance(spec, dict) and isinstance(spec.get("schema"), dict) and not enforceable(spec["schema"]):
        spec["schema"] = {"type": "object"}


def _valid_ids_name_real_objects(case) -> None:
    """Valid cases of the detail operations act on a key or model that exists (random ids are only 404s);
    invalid cases keep theirs."""
    if case.path_parameters and "id" in case.path_parameters and case.meta and case.meta.generation.mode.is_positive:
        case.path_parameters["id"] = available_models()[0] if case.path.startswith("/v1/models") else TARGET_KEY[1]


@schema.parametrize()
@seed(SEED)
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_the_api_answers_as_its_schema_says(case, fuzz_key):
    if case.path == "/v1/usage" and case.query:
        _usage_dates_within_a_month(case.query)
    if case.path in ("/v1/chat/completions", "/v1/completions"):
        _min_tokens_within_max_tokens(case)
        _top_logprobs_with_logprobs(case)
        _tools_fit_the_context(case)
        _tool_choice_names_a_tool(case)
        _schemas_can_be_enforced(case)
    _valid_ids_name_real_objects(case)
    case.call_and_validate()


@pytest.fixture
def scopeless_key(db):
    return _account_with_keys("schemathesis without scopes", scopes=[])


UNSCOPED = {"/healthz", "/readyz", "/v1/models", "/v1/models/{id}"}  # open, or open to any key


@scopeless_schema.parametrize()
@seed(SEED)
@settings(max_examples=SCOPELESS_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_a_key_without_the_scope_is_refused_as_the_schema_says(case, scopeless_key):
    _valid_ids_name_real_objects(case)
    response = case.call_and_validate()
    # A negative case may hold an id no URL matches (a 404 before any key is read, as documented).
    positive = case.meta is None or case.meta.generation.mode.is_positive
    if case.path not in UNSCOPED and positive:
        assert response.status_code in (401, 403), response.text
