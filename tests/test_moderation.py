"""Moderation in the request path: input before the model, output before release, streams included."""

import pytest

from accounts.models import ApiKey, UsageRecord
from accounts.services import account_get_or_create, key_create
from moderation.guard import OutputGuard
from moderation.models import BLOCK, FLAG, REDACT, AllowedCount, ModerationEvent, ModerationPolicy, PolicyRule
from moderation.services import Verdict
from tests.conftest import MODEL, Api, sse_payloads

CHAT = "/v1/chat/completions"
THREAT = "I am going to kill you and your whole family tonight."


def chat(content="Hi", **extra):
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def test_a_blocked_prompt_runs_no_model_and_costs_nothing(api, fake_engine):
    response = api.post(CHAT, chat(THREAT))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "content_filter" and error["param"] == "messages"
    assert fake_engine.submitted == []
    row = UsageRecord.objects.get()
    assert (row.prompt_tokens, row.completion_tokens) == (0, 0)
    event = ModerationEvent.objects.get()
    assert (event.direction, event.action, event.text) == ("input", BLOCK, THREAT)
    assert "harassment/threatening" in event.categories or "violence" in event.categories
    assert event.request_id == response["x-request-id"]


def test_allowed_traffic_is_counted_not_stored(api, fake_engine):
    fake_engine.replies.append("The weather is lovely today.")
    assert api.post(CHAT, chat("How is the weather?")).status_code == 200
    assert ModerationEvent.objects.count() == 0
    assert {(c.direction, c.count) for c in AllowedCount.objects.all()} == {("input", 1), ("output", 1)}


def test_a_stream_counts_once_and_counts_are_written_in_batches(api, fake_engine, settings, monkeypatch):
    from moderation import allowed_counts

    now = [1000.0]
    monkeypatch.setattr(allowed_counts, "_monotonic", lambda: now[0])
    allowed_counts.flush()
    settings.SLUICE_MODERATION_COUNT_FLUSH_S = 5
    fake_engine.replies.append("A long and perfectly pleasant answer about the sea, " * 4)  # many windows
    payloads = sse_payloads(api.post(CHAT, chat("Tell me about the sea.", stream=True, max_tokens=500)))
    assert payloads[-2]["choices"][0]["finish_reason"] == "stop"
    assert AllowedCount.objects.count() == 0  # gathered in memory, not yet written
    now[0] += 5
    fake_engine.replies.append("Short.")
    # Due: this request's input check writes everything gathered (the stream's many windows counted once).
    assert api.post(CHAT, chat("And the sky?")).status_code == 200
    assert {(c.direction, c.count) for c in AllowedCount.objects.all()} == {("input", 2), ("output", 1)}
    allowed_counts.flush()  # as at exit
    assert {(c.direction, c.count) for c in AllowedCount.objects.all()} == {("input", 2), ("output", 2)}


def test_a_policy_edit_applies_at_once_here_and_within_the_cache_time_elsewhere(api, account, fake_engine,
                                                                                settings, monkeypatch):
    from moderation import policies

    settings.SLUICE_POLICY_CACHE_S = 5
    now = [1000.0]
    monkeypatch.setattr(policies.time, "monotonic", lambda: now[0])
    assert api.post(CHAT, chat("I will kill you.")).status_code == 400
    policy = ModerationPolicy.objects.create(name="lenient", account=account)  # saved here: seen at once
    for category in ("harassment/threatening", "violence", "harassment", "hate/threatening", "violence/graphic"):
        PolicyRule.objects.create(policy=policy, category=category, threshold=0.99, action=FLAG)
    assert api.post(CHAT, chat("I will kill you.")).status_code == 200
    # Another process's edit (no signal here) is seen once the cached copy is older than the cache time.
    PolicyRule.objects.filter(policy=policy).update(action=BLOCK, threshold=0.5)
    assert api.post(CHAT, chat("I will kill you.")).status_code == 200
    now[0] += 5
    assert api.post(CHAT, chat("I will kill you.")).status_code == 400


def test_a_blocked_output_returns_the_openai_content_filter_result(api, fake_engine):
    fake_engine.replies.append(THREAT)
    response = api.post(CHAT, chat("Please write a short poem about the sea."))
    assert response.status_code == 200
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert "kill" not in choice["message"]["content"]
    assert ModerationEvent.objects.filter(direction="output", action=BLOCK).exists()


def test_a_phrase_split_across_stream_chunks_is_caught_and_never_reaches_the_client(api, fake_engine):
    # The fake engine streams one character per chunk, so the threat arrives split over many chunks.
    fake_engine.replies.append("Sure. " + THREAT + " That is all.")
    payloads = sse_payloads(api.post(CHAT, chat("Please write a short poem about the sea.", stream=True)))
    assert payloads[-1] == "[DONE]"
    text = "".join(p["choices"][0]["delta"].get("content", "") for p in payloads[:-1] if p["choices"])
    assert "kill" not in text and "family" not in text
    assert payloads[-2]["choices"][0]["finish_reason"] == "content_filter"


def test_the_guard_holds_back_text_until_it_is_checked_across_boundaries():
    checked = []

    def check(text):
        checked.append(text)
        return Verdict(action=BLOCK if "forbidden phrase" in text else "allow", text=text)

    guard = OutputGuard(check, hold_chars=20, first_window_chars=10, max_window_chars=10)
    released = ""
    for piece in ["hello there, this is fine. the forbid", "den phrase appears here"]:
        released += guard.push(piece)
    released += guard.finish()
    assert guard.blocked
    assert "forbid" not in released
    assert any("forbidden phrase" in text for text in checked)


def test_the_guard_releases_the_first_text_early_and_checks_ever_larger_windows():
    checked = []

    def check(text):
        checked.append(text)
        return Verdict(action="allow", text=text)

    guard = OutputGuard(check, hold_chars=16, hold_pieces=16, first_window_chars=4, max_window_chars=64)
    released = []
    for character in "x" * 400:
        released.append(guard.push(character))
    first = next(index for index, piece in enumerate(released) if piece)
    assert first == 16 + 4 - 1 and released[first] == "xxxx"  # after the hold plus the first window
    sizes = [len(piece) for piece in released if piece]
    assert sizes[:5] == [4, 8, 16, 32, 64] and set(sizes[5:]) == {64}
    assert len(checked) == len(sizes)  # one check per release
    assert "".join(released) + guard.finish() == "x" * 400


def test_text_of_short_tokens_is_held_back_by_pieces_not_a_dozen_tokens():
    guard = OutputGuard(lambda text: Verdict(action="allow", text=text), hold_chars=16, hold_pieces=4)
    pieces = ["2", " +", " ", "2", " =", " ", "4", "."]
    released = [guard.push(piece) for piece in pieces]
    assert released[:4] == ["", "", "", ""]  # four pieces (5 characters) held
    assert released[4] == "2"  # the fifth piece lets the first character out
    assert "".join(released) + guard.finish() == "2 + 2 = 4."


def test_a_log_write_failure_blocks_the_response(api, fake_engine, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("database is gone")

    monkeypatch.setattr(ModerationEvent.objects, "create", broken)
    fake_engine.replies.append(THREAT)
    body = api.post(CHAT, chat("Please write a short poem about the sea.")).json()
    assert body["choices"][0]["finish_reason"] == "content_filter"
    assert body["choices"][0]["message"]["content"] == ""
    response = api.post(CHAT, chat(THREAT))
    assert response.status_code == 503 and response.json()["error"]["code"] == "moderation_unavailable"


def test_one_accounts_policy_does_not_leak_into_anothers(api, client, fake_engine):
    lenient = account_get_or_create(name="research lab")
    policy = ModerationPolicy.objects.create(name="research", account=lenient)
    for category in ("harassment/threatening", "violence", "harassment", "violence/graphic", "hate/threatening"):
        PolicyRule.objects.create(policy=policy, category=category, threshold=0.5, action=FLAG)
    researcher = Api(client, key_create(account=lenient).plaintext)
    fake_engine.replies.extend(["ok", "ok"])
    assert researcher.post(CHAT, chat(THREAT)).status_code == 200  # flagged and logged, not blocked
    assert ModerationEvent.objects.get(account=lenient).action == FLAG
    assert api.post(CHAT, chat(THREAT)).status_code == 400  # the default policy still blocks for acme


def test_a_conversation_resent_each_turn_judges_only_its_new_messages(api, fake_engine, monkeypatch, settings):
    from moderation import detectors

    judged = []
    real_judge = detectors._judge
    monkeypatch.setattr(detectors, "_judge", lambda text, components: judged.append(text) or real_judge(text, components))
    system = {"role": "system", "content": "You are a helpful assistant for a travel agency."}
    first = [system, {"role": "user", "content": "Which city has the oldest bridge?"}]
    fake_engine.replies.extend(["Probably Rome.", "Yes, you can walk across it."])
    assert api.post(CHAT, {"model": MODEL, "messages": first}).status_code == 200
    assert judged == [system["content"], first[1]["content"], "Probably Rome."]
    judged.clear()
    second = [*first, {"role": "assistant", "content": "Probably Rome."},
              {"role": "user", "content": "Can I walk across it?"}]
    assert api.post(CHAT, {"model": MODEL, "messages": second}).status_code == 200
    assert judged == ["Can I walk across it?", "Yes, you can walk across it."]

    # A remembered detection is judged against each request's policy and logged every time.
    fake_engine.replies.append("ok")
    for _ in range(2):
        assert api.post(CHAT, chat(THREAT)).status_code == 400
    assert ModerationEvent.objects.filter(action=BLOCK).count() == 2
    assert judged.count(THREAT) == 1

    settings.SLUICE_MODERATION_CACHE_ENTRIES = 0  # off: every text is judged every time
    judged.clear()
    fake_engine.replies.append("Probably Rome.")
    assert api.post(CHAT, {"model": MODEL, "messages": first}).status_code == 200
    assert len(judged) == 3


def test_recent_detections_keep_the_most_recently_used():
    from moderation.detectors import Detection, _RecentDetections

    recent = _RecentDetections(2)
    found = {text: Detection(scores={"hate": index / 10}, spans=()) for index, text in enumerate("abc")}
    recent.put("a", found["a"])
    recent.put("b", found["b"])
    assert recent.get("a") is found["a"]  # "a" is now the most recent
    recent.put("c", found["c"])
    assert recent.get("b") is None and recent.get("a") is found["a"] and recent.get("c") is found["c"]


def test_redaction_masks_the_offending_words(api, client, fake_engine):
    acme = ApiKey.objects.get().account
    policy = ModerationPolicy.objects.create(name="redact", account=acme)
    for category in ("harassment", "harassment/threatening", "violence"):
        PolicyRule.objects.create(policy=policy, category=category, threshold=0.5, action=REDACT)
    fake_engine.replies.append("ok")
    response = api.post(CHAT, chat("You are a worthless idiot and I will kill you."))
    if response.status_code == 400:  # a category outside the redact rules (e.g. hate) blocked it
        pytest.skip(f"blocked by another category: {ModerationEvent.objects.last().categories}")
    sent = fake_engine.submitted[0][0]
    prompt = "".join(chr(c) for c in sent)
    assert "kill" not in prompt and "█" in prompt
    assert ModerationEvent.objects.get().text == "You are a worthless idiot and I will kill you."


def test_strikes_suspend_a_key_after_n_blocks_when_enabled(api, fake_engine, api_key):
    ModerationPolicy.objects.create(name="default", strike_limit=2, strike_window_minutes=60)
    for _ in range(2):
        assert api.post(CHAT, chat(THREAT)).status_code == 400
    assert ApiKey.objects.get().suspended_at is not None
    response = api.post(CHAT, chat("hello"))
    assert response.status_code == 401 and "suspended" in response.json()["error"]["message"]


def test_strikes_are_off_by_default(api, fake_engine):
    for _ in range(5):
        api.post(CHAT, chat(THREAT))
    assert ApiKey.objects.get().suspended_at is None


def test_the_moderations_endpoint_is_openai_compatible_and_metered(api):
    response = api.post("/v1/moderations", {"input": ["Have a nice day!", THREAT]})
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("modr-") and len(body["results"]) == 2
    calm, threat = body["results"]
    assert calm["flagged"] is False and threat["flagged"] is True
    assert set(threat["categories"]) == set(threat["category_scores"]) and len(threat["categories"]) == 13
    row = UsageRecord.objects.get(endpoint="moderations")
    assert row.prompt_tokens > 0 and row.status_code == 200


@pytest.mark.parametrize("body", [{"input": []}, {"input": ""}, {"input": 5}, {"input": ["x"] * 1000}, {}])
def test_the_moderations_endpoint_refuses_bad_input(api, body):
    response = api.post("/v1/moderations", body)
    assert response.status_code == 400 and response.json()["error"]["param"] == "input"


def test_the_moderations_endpoint_needs_its_scope(client, account):
    key = key_create(account=account, scopes=["inference"]).plaintext
    assert Api(client, key).post("/v1/moderations", {"input": "hi"}).status_code == 403


def test_admins_review_events_without_changing_the_original(api, admin_client, fake_engine):
    api.post(CHAT, chat(THREAT))
    event = ModerationEvent.objects.get()
    queue = admin_client.get("/admin/moderation/moderationevent/?action__exact=block")
    assert queue.status_code == 200 and THREAT[:40] in queue.content.decode()
    by_category = admin_client.get(f"/admin/moderation/moderationevent/?category={event.categories[0]}")
    assert THREAT[:40] in by_category.content.decode()
    admin_client.post("/admin/moderation/moderationevent/",
                      {"action": "mark_false_positive", "_selected_action": [event.pk]})
    event.refresh_from_db()
    assert event.review_status == "false_positive" and event.reviewed_by is not None
    assert event.text == THREAT and event.action == BLOCK
