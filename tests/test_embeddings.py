"""/v1/embeddings on the packaged sentence encoder (the moderation encoder's copy, loaded once per session in a
few seconds): OpenAI's shapes, through HTTP and the official openai client, with the auth, scopes, limits,
quotas, usage rows, moderation and errors of the other endpoints."""

import base64
import threading
import time

import httpx
import numpy as np
import openai
import pytest
from django.core.wsgi import get_wsgi_application

from accounts.models import QuotaCounter, UsageRecord
from accounts.services import key_create
from inference.embedding_model import EMBEDDING_MODEL_ID, embedding_model, text_token_ids
from moderation.models import ModerationEvent
from tests.conftest import MODEL, Api

QUERY = "How do I reset my password?"
PARAPHRASE = "I forgot my password and need to change it."
UNRELATED = "Cats sleep for most of the day."
THREAT = "I am going to kill you and your whole family tonight."


@pytest.fixture(scope="session")
def embedder():
    return embedding_model()


def tokens_of(*texts: str) -> int:
    return sum(len(text_token_ids(text)) + 2 for text in texts)  # [CLS] and [SEP] are read too


def nothing_charged() -> bool:
    return all(counter.used == 0 and counter.reserved == 0 for counter in QuotaCounter.objects.all())


def cosine(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_vectors_rank_a_paraphrase_above_an_unrelated_sentence(api, embedder):
    response = api.post("/v1/embeddings", {"model": EMBEDDING_MODEL_ID, "input": [QUERY, PARAPHRASE, UNRELATED]})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list" and body["model"] == EMBEDDING_MODEL_ID
    assert [(item["object"], item["index"]) for item in body["data"]] == [("embedding", 0), ("embedding", 1), ("embedding", 2)]
    query, paraphrase, unrelated = (np.array(item["embedding"]) for item in body["data"])
    assert query.shape == (384,)
    assert all(abs(np.linalg.norm(v) - 1) < 1e-5 for v in (query, paraphrase, unrelated))
    assert cosine(query, paraphrase) > cosine(query, unrelated) + 0.3
    tokens = tokens_of(QUERY, PARAPHRASE, UNRELATED)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    row = UsageRecord.objects.get()
    assert (row.endpoint, row.model, row.prompt_tokens, row.completion_tokens, row.status_code) == (
        "embeddings", EMBEDDING_MODEL_ID, tokens, 0, 200)


def test_the_model_may_be_left_out_and_a_single_string_is_one_item(api, embedder):
    body = api.post("/v1/embeddings", {"input": QUERY, "dimensions": 384, "user": "someone"}).json()
    assert body["model"] == EMBEDDING_MODEL_ID and len(body["data"]) == 1


def test_base64_is_the_float32_values_little_endian_and_matches_float(api, embedder):
    floats = api.post("/v1/embeddings", {"input": [QUERY, UNRELATED]}).json()["data"]
    encoded = api.post("/v1/embeddings", {"input": [QUERY, UNRELATED], "encoding_format": "base64"}).json()["data"]
    for as_float, as_base64 in zip(floats, encoded):
        decoded = np.frombuffer(base64.b64decode(as_base64["embedding"]), dtype="<f4")
        assert decoded.shape == (384,)
        assert decoded.tolist() == as_float["embedding"]  # the same float32 values, bit for bit


def test_a_text_gets_the_same_vector_alone_or_among_others(api, embedder):
    alone = api.post("/v1/embeddings", {"input": QUERY}).json()["data"][0]["embedding"]
    among = api.post("/v1/embeddings", {"input": [UNRELATED, "word " * 200, QUERY]}).json()["data"][2]["embedding"]
    assert np.abs(np.array(alone) - np.array(among)).max() < 1e-6


def test_the_vectors_are_sentence_transformers_mean_pooled_normalised_ones(embedder):
    """The float32 model as sentence-transformers runs it (mean over the tokens, L2 normalised) against what is
    served (the same weights as moderation's int8 copy, dequantized): the same directions, to cosine 0.999."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from moderation.encoder import encoder_dir
    from moderation.model_loading import model_loading_lock

    texts = [QUERY, PARAPHRASE, UNRELATED, "The capital of France is Paris, on the Seine."]
    with model_loading_lock:
        tokenizer = AutoTokenizer.from_pretrained(encoder_dir())
        reference = AutoModel.from_pretrained(encoder_dir()).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = reference(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    served = embedder.embed([text_token_ids(text) for text in texts])
    for want, got in zip(expected, served):
        assert cosine(want, got) > 0.999


def test_concurrent_requests_share_passes_of_the_encoder(embedder, monkeypatch):
    passes, release = [], threading.Event()
    real = embedder._encoder.embed_ids

    def recorded(pieces):
        passes.append(len(pieces))
        if len(passes) == 1:
            release.wait(10)  # the first request holds the encoder while the others queue
        return real(pieces)

    monkeypatch.setattr(embedder._encoder, "embed_ids", recorded)
    results = {}

    def embed(name, text):
        results[name] = embedder.embed([text_token_ids(text)])[0]

    first = threading.Thread(target=embed, args=("first", QUERY))
    first.start()
    while not passes:
        time.sleep(0.001)
    others = [threading.Thread(target=embed, args=(f"other{i}", text)) for i, text in enumerate([PARAPHRASE, UNRELATED, QUERY])]
    for thread in others:
        thread.start()
    while len(embedder._batcher._waiting) < 3:
        time.sleep(0.001)
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert passes == [1, 3]  # the three that arrived while the first ran went through in one pass
    assert np.abs(results["first"] - results["other2"]).max() < 1e-6


@pytest.fixture
def openai_client(api_key):
    from unittest import mock

    from django.db import connections

    transport = httpx.WSGITransport(app=get_wsgi_application())
    http_client = httpx.Client(transport=transport, base_url="http://testserver/v1")
    # The WSGI handler would close the connection that holds the test's transaction.
    with mock.patch.object(connections["default"], "close_if_unusable_or_obsolete"):
        yield openai.OpenAI(api_key=api_key, base_url="http://testserver/v1", http_client=http_client, max_retries=0)


def test_the_openai_client_embeds_with_its_base64_default_and_with_floats(openai_client, embedder):
    texts = [QUERY, PARAPHRASE, UNRELATED]
    reply = openai_client.embeddings.create(model=EMBEDDING_MODEL_ID, input=texts)  # asks for base64, decodes it
    vectors = [item.embedding for item in reply.data]
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    assert reply.usage.prompt_tokens == reply.usage.total_tokens == tokens_of(*texts)
    assert reply.model == EMBEDDING_MODEL_ID
    floats = openai_client.embeddings.create(model=EMBEDDING_MODEL_ID, input=texts, encoding_format="float")
    assert [item.embedding for item in floats.data] == vectors
    listed = [model.id for model in openai_client.models.list()]
    assert EMBEDDING_MODEL_ID in listed and MODEL in listed


def test_the_openai_client_gets_a_bad_request_error_for_bad_input(openai_client, embedder):
    with pytest.raises(openai.BadRequestError) as raised:
        openai_client.embeddings.create(model=EMBEDDING_MODEL_ID, input=QUERY, dimensions=128)
    assert raised.value.code == "unsupported_parameter" and raised.value.param == "dimensions"


@pytest.mark.parametrize("body, param, code", [
    ({"input": ""}, "input", None),
    ({"input": "   "}, "input", None),
    ({"input": []}, "input", None),
    ({"input": ["fine", ""]}, "input", None),
    ({"input": ["fine", 3]}, "input", None),
    ({"input": {"text": "fine"}}, "input", None),
    ({"input": ["x"] * 2049}, "input", None),
    ({}, "input", None),
    ({"input": [101, 2054, 102]}, "input", "unsupported_parameter"),
    ({"input": [[2054, 2003], [2054]]}, "input", "unsupported_parameter"),
    ({"input": "fine", "dimensions": 128}, "dimensions", "unsupported_parameter"),
    ({"input": "fine", "encoding_format": "int8"}, "encoding_format", None),
    ({"input": "fine", "model": MODEL}, "model", "model_not_found"),
    ({"input": "fine", "model": "text-embedding-3-small"}, "model", "model_not_found"),
    ({"input": ["fine", "word " * 255]}, "input[1]", "context_length_exceeded"),
])
def test_bad_input_is_refused_and_charges_nothing(api, body, param, code):
    response = api.post("/v1/embeddings", body)
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    if code:
        assert error["code"] == code
    row = UsageRecord.objects.get()
    assert (row.endpoint, row.prompt_tokens, row.status_code) == ("embeddings", 0, 400)
    assert nothing_charged()


def test_the_longest_text_the_window_holds_is_served(api, embedder):
    text = "word " * 254
    assert len(text_token_ids(text)) == 254
    assert api.post("/v1/embeddings", {"input": text}).json()["usage"]["prompt_tokens"] == 256


def test_a_request_over_the_token_limit_in_all_is_refused(api, settings):
    settings.SLUICE_EMBEDDING_MAX_TOKENS = 300
    response = api.post("/v1/embeddings", {"input": ["word " * 100] * 3})
    assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"
    assert nothing_charged()


def test_inputs_are_moderated_and_a_blocked_one_charges_nothing(api, embedder):
    response = api.post("/v1/embeddings", {"input": [QUERY, THREAT]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "content_filter"
    assert ModerationEvent.objects.get(action="block").endpoint == "embeddings"
    assert nothing_charged()


def test_embeddings_need_the_inference_scope_and_a_model_grant(client, account, embedder):
    moderation_only = Api(client, key_create(account=account, name="mod", scopes=["moderation"]).plaintext)
    assert moderation_only.post("/v1/embeddings", {"input": QUERY}).status_code == 403
    generator_only = Api(client, key_create(account=account, name="gen", allowed_models=[MODEL]).plaintext)
    refused = generator_only.post("/v1/embeddings", {"input": QUERY})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    assert [m["id"] for m in generator_only.get("/v1/models").json()["data"]] == [MODEL]
    granted = Api(client, key_create(account=account, name="emb", allowed_models=[EMBEDDING_MODEL_ID]).plaintext)
    assert granted.post("/v1/embeddings", {"input": QUERY}).status_code == 200
    assert granted.get(f"/v1/models/{EMBEDDING_MODEL_ID}").json()["id"] == EMBEDDING_MODEL_ID


def test_embeddings_count_against_quotas_and_token_rate_limits(api, account, embedder, clock):
    account.daily_token_quota = 5
    account.save()
    response = api.post("/v1/embeddings", {"input": "a good long sentence with many more words in it"})
    assert response.status_code == 429 and response.json()["error"]["code"] == "insufficient_quota"
    assert nothing_charged()
    account.daily_token_quota = 1000
    account.save()
    assert api.post("/v1/embeddings", {"input": [QUERY, UNRELATED]}).status_code == 200
    used = QuotaCounter.objects.get(account=account, api_key=None, period="day")
    assert (used.used, used.reserved) == (tokens_of(QUERY, UNRELATED), 0)  # reserved, then settled to the count
    account.daily_token_quota = None
    account.tokens_per_minute = tokens_of(QUERY) + 1
    account.save()
    clock.advance(minutes=1)  # a new minute's window
    assert api.post("/v1/embeddings", {"input": QUERY}).status_code == 200
    limited = api.post("/v1/embeddings", {"input": QUERY})
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert limited["Retry-After"]


def test_a_worker_without_a_local_generator_still_serves_embeddings(api, settings, embedder):
    from inference.engines.factory import engine_if_loaded, set_engine

    set_engine(None)
    settings.SLUICE_LOCAL_MODEL = False  # moderation then runs on the request's thread
    response = api.post("/v1/embeddings", {"input": [QUERY, THREAT]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "content_filter"
    assert api.post("/v1/embeddings", {"input": QUERY}).status_code == 200
    assert engine_if_loaded() is None  # no generator was loaded for it


def test_the_int8_setting_reads_each_text_alone_so_its_vector_never_depends_on_the_batch(embedder):
    from inference.embedding_model import EmbeddingModel

    int8 = EmbeddingModel(precision="int8")  # SLUICE_EMBEDDING_PRECISION=int8; the same encoder, no new copy
    assert int8._encoder is embedder._encoder
    texts = [QUERY, PARAPHRASE, UNRELATED]
    together = int8.embed([text_token_ids(text) for text in texts])
    alone = int8.embed([text_token_ids(QUERY)])[0]
    assert together[0].dtype == np.float32 and np.array_equal(together[0], alone)
    assert cosine(together[0], together[1]) > cosine(together[0], together[2]) + 0.3
    exact = embedder.embed([text_token_ids(QUERY)])[0]
    assert 0.95 < cosine(alone, exact) < 0.9999  # int8 activations: near the model's vector, not equal to it
