"""Generation services: validate a request against the model, admit it, run it, settle its usage.

Views call one function here; nothing here knows about HTTP beyond raising ApiError.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from django.conf import settings

from accounts.models import ApiKey
from accounts.services import (
    AccessRefused,
    Admission,
    account_share,
    key_check_access,
    request_admit,
    request_settle,
)
from inference import metrics
from inference.engines.base import Engine, EngineBusy, EngineError, TextStream
from inference.logprob_entries import LogprobCursor, LogprobEntry
from inference.fair_queue import BATCH, INTERACTIVE, AccountLimitExceeded, Share
from inference.observation import observation_current
from inference.registry import UnknownModel, available_models, default_engine, engine_for
from inference.sampling import SamplingParams
from inference.sampling_defaults import FIELDS, defaults_for
from inference.tool_calls import ToolPlan, prompt_suffix, render_messages, tool_grammar, tool_plan_for
from moderation.guard import OutputGuard
from moderation.policies import policy_for
from moderation.services import (
    ModerationContext,
    ModerationLogFailed,
    Verdict,
    moderation_check,
    moderation_count_allowed,
    moderation_scores,
)
from platform.errors import ApiError

ENDPOINT_CHAT = "chat.completions"
ENDPOINT_COMPLETIONS = "completions"
ENDPOINT_GENERATE = "generate"

# What the model reports, as OpenAI clients understand it.
_PUBLIC_FINISH_REASONS = {"stop": "stop", "length": "length", "timeout": "length", "cancelled": "stop"}


@dataclass(frozen=True)
class GenerationJob:
    """A validated generation request. ``messages`` for chat, ``prompt`` for a plain completion."""

    endpoint: str
    model: str
    prompt_ids: list[int]
    params: SamplingParams
    include_usage: bool = False
    messages: tuple[dict, ...] | None = None
    prompt: str | None = None
    tools: ToolPlan | None = None  # chat with tools (tool_choice other than none)
    tier: str = INTERACTIVE  # service_tier "flex": BATCH, yielding to the account's interactive work
    # The engine the job was validated against: the request runs on it even if the catalogue changes meanwhile.
    engine: Engine | None = field(default=None, compare=False, repr=False)

    @property
    def input_texts(self) -> list[str]:
        """What input moderation judges: each message's content, or the prompt."""
        return [m["content"] for m in self.messages] if self.messages is not None else [self.prompt]

    def with_input_texts(self, texts: list[str], engine: Engine) -> "GenerationJob":
        """The same job with its input texts replaced (redacted), re-encoded."""
        if self.messages is not None:
            messages = tuple({**m, "content": t} for m, t in zip(self.messages, texts))
            return replace(self, messages=messages, prompt_ids=_chat_prompt_ids(engine, messages, self.tools))
        return replace(self, prompt=texts[0], prompt_ids=engine.encode(texts[0]))


@dataclass
class Generated:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[LogprobEntry] | None = None  # when asked: one per token of ``text``
    tools: ToolPlan | None = None  # the text is read for tool calls (inference.tool_calls)
    upstream_tool_calls: list[dict] | None = None  # a remote model's calls, as its upstream made them

    @property
    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def _engine_for(model: str) -> Engine:
    try:
        return engine_for(model)
    except UnknownModel:
        raise ApiError(
            f"The model '{model}' does not exist. Available: {', '.join(available_models())}.",
            param="model",
            code="model_not_found",
        ) from None


def _sampling_params(data: dict, *, max_tokens: int | None, engine: Engine, logprobs: bool = False,
                     top_logprobs: int = 0, grammar=None, tools: ToolPlan | None = None) -> SamplingParams:
    """The request's own fields; what it leaves out (or sends as null), the model's defaults."""
    defaults, unset = defaults_for(engine)
    given = {name: data[name] for name in FIELDS if data.get(name) is not None}
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=given.get("temperature", defaults["temperature"]),
        top_p=given.get("top_p", defaults["top_p"]),
        top_k=given.get("top_k", defaults["top_k"]),
        unset=tuple(name for name in unset if name not in given),
        seed=data.get("seed"),
        stop=tuple(data.get("stop") or ()),
        min_tokens=data.get("min_tokens", 0),
        ignore_eos=data.get("ignore_eos", False),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        grammar=grammar,
        tools=tools,
    )


def _resolve_max_tokens(requested: int | None, default: int, *, param: str) -> int:
    max_tokens = default if requested is None else requested
    if max_tokens > settings.SLUICE_MAX_NEW_TOKENS:
        raise ApiError(
            f"{param} is {max_tokens}, above this server's limit of {settings.SLUICE_MAX_NEW_TOKENS}.",
            param=param,
            code="invalid_value",
        )
    return max_tokens


def _check_lengths(engine: Engine, prompt_ids: list[int], params: SamplingParams, *, param: str) -> None:
    if not prompt_ids:
        raise ApiError("The prompt is empty.", param=param, code="invalid_value")
    if len(prompt_ids) > settings.SLUICE_MAX_PROMPT_TOKENS:
        raise ApiError(
            f"The prompt has {len(prompt_ids)} tokens, above this server's limit of "
            f"{settings.SLUICE_MAX_PROMPT_TOKENS}.",
            param=param,
            code="context_length_exceeded",
        )
    if len(prompt_ids) + params.max_tokens > engine.context_window:
        raise ApiError(
            f"This model's maximum context length is {engine.context_window} tokens; you requested "
            f"{len(prompt_ids) + params.max_tokens} ({len(prompt_ids)} in the prompt, {params.max_tokens} "
            "for the completion). Shorten the prompt or lower max_tokens.",
            param=param,
            code="context_length_exceeded",
        )
    if params.min_tokens > params.max_tokens:
        raise ApiError("min_tokens must not exceed max_tokens.", param="min_tokens", code="invalid_value")


def _chat_message(message: dict) -> dict:
    kept = {"role": message["role"], "content": message["content"]}
    for name in ("tool_calls", "tool_call_id", "name"):
        if message.get(name):
            kept[name] = message[name]
    return kept


def _chat_prompt_ids(engine: Engine, messages, tools: ToolPlan | None) -> list[int]:
    """The conversation through the model's template, tools and tool messages written in as
    inference.tool_calls says; a forced call's opening follows the generation prompt."""
    if not tools and not any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
        return engine.encode_chat(list(messages))
    prompt_ids = engine.encode_chat(render_messages(messages, tools))
    suffix = prompt_suffix(tools) if engine.constrains_locally else ""
    return prompt_ids + engine.encode(suffix) if suffix else prompt_ids
def _tier(data: dict) -> str:
    return BATCH if data.get("service_tier") == "flex" else INTERACTIVE


def share_for(*, key: ApiKey, tier: str = INTERACTIVE) -> Share:
    """What the engine needs to share the model fairly: the key's account, its weight and limits, the tier."""
    allowed = account_share(account=key.account)
    return Share(account=str(key.account_id), weight=allowed.weight, max_running=allowed.max_running,
                 max_queued=allowed.max_queued, tier=tier)


def account_limited_error(limited: AccountLimitExceeded, headers: dict[str, str]) -> ApiError:
    """The 429 of an account past its concurrency limits (running and waiting generations)."""
    retry_after = max(limited.retry_after, settings.SLUICE_FAIR_RETRY_AFTER_S)
    return ApiError(limited.message, status_code=429, type="concurrency", code="rate_limit_exceeded",
                    headers={**headers, "Retry-After": str(retry_after)})


def job_for_chat(*, data: dict) -> GenerationJob:
    engine = _engine_for(data["model"])
    requested = data.get("max_completion_tokens") or data.get("max_tokens")
    param = "max_completion_tokens" if data.get("max_completion_tokens") else "max_tokens"
    max_tokens = _resolve_max_tokens(requested, settings.SLUICE_DEFAULT_MAX_TOKENS, param=param)
    tools = tool_plan_for(data.get("tools"), data.get("tool_choice"), data.get("parallel_tool_calls"))
    # A forced call is decoded under its own grammar here; a remote upstream is sent the tools themselves.
    grammar = (tool_grammar(tools) if engine.constrains_locally else None) or data.get("response_format")
    params = _sampling_params(data, max_tokens=max_tokens, engine=engine, logprobs=bool(data.get("logprobs")),
                              top_logprobs=data.get("top_logprobs") or 0, grammar=grammar, tools=tools)
    messages = tuple(_chat_message(message) for message in data["messages"])
    prompt_ids = _chat_prompt_ids(engine, messages, tools)
    _check_lengths(engine, prompt_ids, params, param="messages")
    include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
    return GenerationJob(ENDPOINT_CHAT, data["model"], prompt_ids, params, include_usage, messages=messages,
                         tools=tools, tier=_tier(data), engine=engine)


def job_for_completion(*, data: dict) -> GenerationJob:
    engine = _engine_for(data["model"])
    max_tokens = _resolve_max_tokens(data.get("max_tokens"), 16, param="max_tokens")  # OpenAI's default
    # The legacy `logprobs` is the number of alternatives (0-5); sent at all, it asks for logprobs.
    params = _sampling_params(data, max_tokens=max_tokens, engine=engine, logprobs=data.get("logprobs") is not None,
                              top_logprobs=data.get("logprobs") or 0)
    prompt = data["prompt"][0]
    prompt_ids = engine.encode(prompt)
    _check_lengths(engine, prompt_ids, params, param="prompt")
    include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
    return GenerationJob(ENDPOINT_COMPLETIONS, data["model"], prompt_ids, params, include_usage, prompt=prompt,
                         tier=_tier(data), engine=engine)


def job_for_generate(*, data: dict) -> GenerationJob:
    """The Flask example's contract: the text is the user's message, the reply is the assistant's."""
    engine = default_engine()
    max_tokens = _resolve_max_tokens(data.get("max_tokens"), settings.SLUICE_DEFAULT_MAX_TOKENS, param="max_tokens")
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    messages = ({"role": "user", "content": data["text"]},)
    prompt_ids = engine.encode_chat(list(messages))
    _check_lengths(engine, prompt_ids, params, param="text")
    return GenerationJob(ENDPOINT_GENERATE, engine.model_id, prompt_ids, params, messages=messages, engine=engine)


@dataclass
class RunningGeneration:
    """An admitted generation whose text is being produced. Iterate ``pieces()``; then read ``result``.

    Text is released only after output moderation has checked it (``moderation.guard``); a block ends the
    generation with finish_reason "content_filter".
    """

    job: GenerationJob
    admission: Admission
    text_stream: TextStream
    guard: OutputGuard
    headers: dict[str, str]
    result: Generated | None = None
    _pieces: list[str] = field(default_factory=list)
    _released_chars: int = 0
    _logprobs: LogprobCursor | None = None

    def _release(self, text: str) -> Iterator[str]:
        if text:
            if not self._pieces:
                observation_current().first_token()
            self._pieces.append(text)
            self._released_chars += len(text)
            yield text

    def logprobs_released(self, *, final: bool = False) -> list[LogprobEntry] | None:
        """The logprob entries of the tokens whose text has been released since the last call (None when the
        request did not ask). ``final``: also those whose text was only partly released."""
        entries = getattr(self.text_stream, "logprob_entries", None)
        if not self.job.params.logprobs or entries is None:
            return None
        if self._logprobs is None:
            self._logprobs = LogprobCursor(entries)
        return self._logprobs.take(self._released_chars, final=final)

    def pieces(self) -> Iterator[str]:
        status_code, error_code, reason = 200, "", None
        try:
            for piece in self.text_stream:
                yield from self._release(self.guard.push(piece))
                if self.guard.blocked:
                    self.text_stream.cancel()
                    break
            if not self.guard.blocked:
                yield from self._release(self.guard.finish())
            if self.guard.blocked:
                reason = "content_filter"
            elif self.text_stream.finish_reason == "error":
                # A remote engine says how its upstream failed (502/504); a local one failed itself (500).
                status_code = getattr(self.text_stream, "error_status", None) or 500
                error_code = getattr(self.text_stream, "error_code", None) or "engine_error"
        finally:
            # Runs when the stream ends, fails, or the client disconnects (the generator is closed):
            # charge exactly what the model generated.
            reason = reason or self.text_stream.finish_reason or "cancelled"
            if reason == "cancelled" and status_code == 200:
                status_code, error_code = 499, "client_disconnected"
            self.result = Generated(
                text="".join(self._pieces),
                finish_reason=_PUBLIC_FINISH_REASONS.get(reason, reason),
                # A remote engine's upstream counts the prompt it really ran; settle to that when reported.
                prompt_tokens=getattr(self.text_stream, "prompt_tokens", None) or len(self.job.prompt_ids),
                completion_tokens=self.text_stream.completion_tokens,
            )
            self.result.tools = self.job.tools
            self.result.upstream_tool_calls = getattr(self.text_stream, "tool_calls", None) or None
            if self.job.params.logprobs:
                entries = getattr(self.text_stream, "logprob_entries", None) or []
                self.result.logprobs = LogprobCursor(entries).take(self._released_chars, final=True)
            observation = observation_current()
            observation.prompt_tokens, observation.completion_tokens = self.result.prompt_tokens, self.result.completion_tokens
            observation.finish_reason = reason
            request_settle(
                admission=self.admission,
                prompt_tokens=self.result.prompt_tokens,
                completion_tokens=self.result.completion_tokens,
                status_code=status_code,
                finish_reason=reason,
                error_code=error_code,
            )


def _moderate_input(job: GenerationJob, context: ModerationContext, policy, engine: Engine) -> GenerationJob:
    """Block (400, nothing charged, no model run) or redact the prompt before anything else happens."""
    try:
        verdicts = moderation_check(texts=job.input_texts, direction="input", context=context, policy=policy,
                                    detect=moderation_scorer(engine))
    except ModerationLogFailed:
        raise ApiError("The request could not be checked; retry shortly.", status_code=503, type="server_error",
                       code="moderation_unavailable", headers={"Retry-After": "1"}) from None
    for verdict in verdicts if policy.check_input else ():
        metrics.MODERATION_ACTIONS.labels("input", verdict.action).inc()
    if any(v.blocked for v in verdicts):
        categories = sorted({c for v in verdicts for c in v.categories})
        raise ApiError(
            f"The prompt was blocked by the content policy ({', '.join(categories)}).",
            param="messages" if job.messages is not None else "prompt",
            code="content_filter",
        )
    texts = [v.text for v in verdicts]
    return job.with_input_texts(texts, engine) if texts != job.input_texts else job


def moderation_scorer(engine: Engine):
    """Moderation's scoring for ``moderation_check``, run by ``engine`` where it would otherwise compete with
    the model for the CPU (every check made while serving one of its models goes through here)."""
    return lambda texts: engine.run_exclusive(lambda: moderation_scores(texts))


def _output_guard(context: ModerationContext, policy, *, streaming: bool, engine: Engine) -> OutputGuard:
    """A stream releases text window by window as it is checked; a whole response is checked once, whole."""
    if not policy.check_output:  # nothing to check: release each piece as it comes, holding nothing back
        return OutputGuard(lambda text: Verdict(action="allow", text=text), hold_chars=0, first_window_chars=1,
                           max_window_chars=1)

    def check(text: str) -> Verdict:
        try:
            verdict = moderation_check(texts=[text], direction="output", context=context, policy=policy,
                                       count_allowed=False, detect=moderation_scorer(engine))[0]
        except ModerationLogFailed:  # never release what could not be logged
            verdict = Verdict(action="block", text="")
        metrics.MODERATION_ACTIONS.labels("output", verdict.action).inc()
        return verdict

    return OutputGuard(check, hold_chars=settings.SLUICE_MODERATION_HOLD_CHARS if streaming else math.inf,
                       on_all_allowed=lambda: moderation_count_allowed("output"))


def generation_start(*, key: ApiKey, request_id: str, job: GenerationJob, streaming: bool = True) -> RunningGeneration:
    """Moderate the input, admit the job (limits, quota, usage row) and start it on the engine."""
    try:
        key_check_access(key=key, model=job.model, endpoint=job.endpoint)
    except AccessRefused as refused:
        raise ApiError(str(refused), status_code=403, type="permission_error", code="model_not_allowed", param="model")
    engine = job.engine or _engine_for(job.model)
    observation_current().model = job.model
    context = ModerationContext(account=key.account, api_key=key, request_id=request_id, endpoint=job.endpoint)
    policy = policy_for(key.account)
    job = _moderate_input(job, context, policy, engine)
    admission = request_admit(
        key=key,
        request_id=request_id,
        endpoint=job.endpoint,
        model=job.model,
        prompt_tokens=len(job.prompt_ids),
        max_tokens=job.params.max_tokens,
    )
    deadline = time.monotonic() + settings.SLUICE_REQUEST_TIMEOUT_S
    try:
        text_stream = engine.stream(
            job.prompt_ids, job.params, deadline=deadline, messages=list(job.messages) if job.messages else None,
            prompt=job.prompt if job.messages is None else None, share=share_for(key=key, tier=job.tier),
        )
    except AccountLimitExceeded as limited:  # nothing was generated: charge nothing
        request_settle(admission=admission, prompt_tokens=0, completion_tokens=0, status_code=429,
                       error_code="rate_limit_exceeded")
        raise account_limited_error(limited, admission.headers) from None
    except EngineError as failed:  # nothing was generated: charge nothing
        request_settle(admission=admission, prompt_tokens=0, completion_tokens=0, status_code=failed.status_code,
                       error_code=failed.code)
        headers = {**admission.headers, **({"Retry-After": str(failed.retry_after)} if failed.retry_after else {})}
        raise ApiError(failed.message, status_code=failed.status_code, code=failed.code, headers=headers,
                       type="invalid_request_error" if failed.status_code < 500 else "server_error") from None
    except EngineBusy:
        request_settle(
            admission=admission, prompt_tokens=0, completion_tokens=0, status_code=503, error_code="engine_overloaded"
        )
        raise ApiError(
            "The engine is currently overloaded; retry shortly.",
            status_code=503,
            type="server_error",
            code="engine_overloaded",
            headers={"Retry-After": "1", **admission.headers},
        ) from None
    return RunningGeneration(
        job=job, admission=admission, text_stream=text_stream,
        guard=_output_guard(context, policy, streaming=streaming, engine=engine),
        headers=admission.headers,
    )


def generation_complete(*, key: ApiKey, request_id: str, job: GenerationJob) -> tuple[Generated, dict[str, str]]:
    """Run a job to the end (non-streaming)."""
    running = generation_start(key=key, request_id=request_id, job=job, streaming=False)
    for _ in running.pieces():
        pass
    if running.text_stream.finish_reason == "error" and not running.guard.blocked:
        status_code = getattr(running.text_stream, "error_status", None) or 500
        code = getattr(running.text_stream, "error_code", None) or "engine_error"
        raise ApiError("The model failed while generating.", status_code=status_code, type="server_error", code=code)
    return running.result, running.headers
