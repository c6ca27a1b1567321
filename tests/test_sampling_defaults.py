"""Each model's default sampling parameters fill in what a request leaves out; what a request sets wins."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from inference.sampling_defaults import generation_config_defaults, model_card_defaults
from platform.env import model_defaults_from_env, remote_models_from_env
from tests.conftest import MODEL
from tests.test_remote_engine import REMOTE, chat, remote_config
from tests.upstream_stub import StubUpstream

CHAT = "/v1/chat/completions"


def chat_body(**overrides):
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], **overrides}


def sent_params(fake_engine):
    params = fake_engine.submitted[-1][1]
    return params.temperature, params.top_p, params.top_k


@pytest.fixture
def upstream():
    stub = StubUpstream(["from upstream"], usage={"prompt_tokens": 5, "completion_tokens": 2}).start()
    yield stub
    stub.stop()


def test_a_request_without_temperature_gets_the_models_default_and_one_with_it_gets_its_own(api, fake_engine):
    fake_engine.own_defaults = {"temperature": 0.2, "top_p": 0.9}
    assert api.post(CHAT, chat_body()).status_code == 200
    assert sent_params(fake_engine) == (0.2, 0.9, 0)
    assert api.post(CHAT, chat_body(temperature=0.7)).status_code == 200
    assert sent_params(fake_engine) == (0.7, 0.9, 0)
    assert api.post(CHAT, chat_body(temperature=None, top_p=0.5, top_k=3)).status_code == 200  # null = not given
    assert sent_params(fake_engine) == (0.2, 0.5, 3)
    assert api.post("/v1/completions", {"model": MODEL, "prompt": "Hi", "temperature": 0}).status_code == 200
    assert sent_params(fake_engine) == (0.0, 0.9, 0)


def test_the_operators_setting_for_a_model_beats_its_generation_config(api, fake_engine, settings):
    fake_engine.own_defaults = {"temperature": 0.2, "top_p": 0.9}
    settings.SLUICE_MODEL_DEFAULTS = {MODEL: {"temperature": 0.5, "top_k": 40}, "other": {"temperature": 1.5}}
    api.post(CHAT, chat_body())
    assert sent_params(fake_engine) == (0.5, 0.9, 40)


def test_a_model_with_no_defaults_samples_as_openai_does(api, fake_engine):
    api.post(CHAT, chat_body())
    assert sent_params(fake_engine) == (1.0, 1.0, 0)


def test_a_remote_model_sends_its_entrys_defaults_and_leaves_the_rest_to_its_upstream(api, settings, upstream):
    settings.SLUICE_REMOTE_MODELS = remote_config(upstream.url, defaults={"temperature": 0.3})
    assert api.post(CHAT, chat("Hi")).status_code == 200
    body = upstream.requests[-1]["body"]
    assert body["temperature"] == 0.3 and "top_p" not in body and "top_k" not in body  # the upstream's own
    api.post(CHAT, chat("Hi", temperature=0.9, top_p=0.8))
    body = upstream.requests[-1]["body"]
    assert (body["temperature"], body["top_p"]) == (0.9, 0.8)


def test_the_packaged_models_card_advice_is_data_and_a_generation_config_speaks_only_for_what_it_changes():
    from transformers import GenerationConfig

    assert model_card_defaults("SmolLM2-135M-Instruct.Q4_1.gguf") == {"temperature": 0.2, "top_p": 0.9}
    assert model_card_defaults("some-other-model") == {}
    assert generation_config_defaults(GenerationConfig(bos_token_id=1, eos_token_id=2)) == {}
    assert generation_config_defaults(GenerationConfig(do_sample=True, temperature=0.6, top_p=0.95)) == {
        "temperature": 0.6, "top_p": 0.95}
    assert generation_config_defaults(GenerationConfig(do_sample=False)) == {"temperature": 0.0}


@pytest.mark.parametrize("raw, complaint", [
    ("{nope", "must be JSON"),
    ('{"m": {"temperature": 3}}', "between 0 and 2"),
    ('{"m": {"temprature": 1}}', "unknown field"),
    ('{"m": {"top_k": 1.5}}', "integer"),
])
def test_a_bad_defaults_setting_fails_loudly_naming_the_mistake(monkeypatch, raw, complaint):
    monkeypatch.setenv("SLUICE_MODEL_DEFAULTS", raw)
    with pytest.raises(ImproperlyConfigured, match=complaint):
        model_defaults_from_env("SLUICE_MODEL_DEFAULTS")
    monkeypatch.setenv("SLUICE_REMOTE_MODELS", '{"m": {"urls": ["http://h/v1"], "defaults": {"top_p": 0}}}')
    with pytest.raises(ImproperlyConfigured, match="top_p must be between"):
        remote_models_from_env("SLUICE_REMOTE_MODELS")


@pytest.mark.model
def test_the_packaged_model_takes_its_cards_defaults(real_engine):
    assert real_engine.generation_defaults() == {"temperature": 0.2, "top_p": 0.9}


@pytest.mark.model
@pytest.mark.xfail(strict=False, reason="issue 17's target, not met: with the model card's temperature 0.2 / top_p 0.9 the "
                   "packaged Q4_1 weights say Paris in 6 of these 10 seeds (25 of 40): the first token is 'The' at 0.545 "
                   "or 'L' at 0.362, and the 'L' replies become French word lists")
def test_the_readmes_example_without_temperature_mentions_paris_at_least_8_times_in_10_seeds(db, real_engine):
    """The README's request as it is (no temperature, no max_tokens) with ten seeds, validated by the chat
    endpoint's own job builder and generated side by side on the real model (it batches them)."""
    from concurrent.futures import ThreadPoolExecutor

    from inference.services import job_for_chat

    jobs = [job_for_chat(data={"model": MODEL, "seed": seed,
                               "messages": [{"role": "user", "content": "What is the capital of France?"}]})
            for seed in range(10)]
    assert {(job.params.temperature, job.params.top_p, job.params.max_tokens) for job in jobs} == {(0.2, 0.9, 256)}
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda job: "".join(real_engine.stream(job.prompt_ids, job.params)), jobs))
    assert sum("Paris" in text for text in answers) >= 8, answers
