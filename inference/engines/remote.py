"""A model served by upstream OpenAI-compatible servers (vLLM, TGI, llama-server, Ollama, another Sluice).

The platform keeps everything it owns (keys, limits, quotas, moderation, usage rows) and forwards only the
generation: the request goes upstream as a streamed completion asking for ``stream_options.include_usage``,
and the text comes back chunk by chunk through the same TextStream-like interface a local engine returns.
Settlement uses the upstream's ``usage``; when it reports none (or the stream was cut short) the completion
is counted from the text received, with the local tokenizer or an estimate (``inference.engines.token_counting``).

Several upstreams per model: each request goes to the healthy one with the fewest requests in flight. A
request that could not even connect is retried on another upstream (nothing was sent, so nothing can run
twice), and so is one an upstream refused as overloaded (429/503) before generating anything; a request
whose stream has started is never retried. A failed connection takes its upstream out of rotation; the
health probe (``GET {url}/models`` every SLUICE_UPSTREAM_HEALTH_INTERVAL_S) brings it back.

Errors reach the client as OpenAI-shaped 502/503/504 (``EngineError``) whose messages never name an
internal address; server logs and metrics do name the upstream (host:port), for operators.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from urllib.parse import urlparse

import httpx
from django.conf import settings

from inference import metrics
from inference.engines.base import Engine, EngineError
from inference.logprob_entries import LogprobEntry, from_openai
from inference.fair_queue import CapacityFull, FairGate
from inference.observation import observation_current
from inference.sampling import SamplingParams
from inference.engines.token_counting import EstimatedCounter, counter_for

logger = logging.getLogger(__name__)

UNKNOWN_CONTEXT_WINDOW = 1 << 30  # not configured: the upstream enforces its own
OVERLOADED_STATUSES = {429, 503}
MAX_ERROR_BODY_BYTES = 8192
MAX_LINE_BYTES = 1 << 20

_ADDRESS = re.compile(r"(?:https?://|wss?://)\S+|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b|\[[0-9a-fA-F:]+\](?::\d+)?")


class _RetryElsewhere(Exception):
    """Nothing was generated on this upstream; another may take the request."""

    def __init__(self, overloaded: bool = False, retry_after: int | None = None):
        self.overloaded = overloaded
        self.retry_after = retry_after


class _StreamBroken(Exception):
    """The upstream's stream cannot be read further (garbage, an error event, a timeout, a dropped connection)."""

    def __init__(self, why: str, *, status_code: int = 502, code: str = "upstream_error"):
        super().__init__(why)
        self.why = why
        self.status_code = status_code
        self.code = code


class Upstream:
    def __init__(self, url: str):
        self.url = url
        self.label = urlparse(url).netloc  # operators' name for it (metrics, logs); never shown to clients
        self.healthy = True
        self.outstanding = 0


def _public_message(message: str, upstreams: Sequence[Upstream]) -> str:
    """An upstream's own error text, with anything that looks like an address taken out."""
    for upstream in upstreams:
        message = message.replace(upstream.url, "<backend>").replace(upstream.label, "<backend>")
    return _ADDRESS.sub("<backend>", message)[:500]


class RemoteEngine(Engine):
    constrains_locally = False  # the upstream gets response_format and tools, and applies them
    def __init__(
        self,
        *,
        model_id: str,
        urls: Sequence[str],
        api_key: str = "",
        upstream_model: str | None = None,
        counter=None,
        context_window: int | None = None,
        connect_timeout: float = 3.0,
        read_timeout: float = 120.0,
        health_interval: float = 10.0,
        max_connections: int = 256,
        transport: httpx.BaseTransport | None = None,
        defaults: dict | None = None,
        fair_sharing: bool = True,
        fair_burst: int = 4,
    ):
        if not urls:
            raise ValueError("a remote model needs at least one upstream URL")
        self.model_id = model_id
        self.upstream_model = upstream_model or model_id
        self.operator_defaults = dict(defaults or {})  # the entry's sampling defaults (inference.sampling_defaults)
        self.context_window = context_window or UNKNOWN_CONTEXT_WINDOW
        self.upstreams = [Upstream(url.rstrip("/")) for url in urls]
        self._counter = counter or EstimatedCounter()
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        timeout = httpx.Timeout(read_timeout, connect=connect_timeout, write=read_timeout, pool=connect_timeout)
        # Outstanding requests by account, so one account cannot take every connection (inference.fair_queue);
        # accounts with none outstanding may go ``fair_burst`` past max_connections, so the pool has that room.
        self._gate = FairGate(max_connections, burst=fair_burst) if fair_sharing else None
        pool = max_connections + (fair_burst if fair_sharing else 0)
        limits = httpx.Limits(max_connections=pool, max_keepalive_connections=min(64, pool))
        self._client = httpx.Client(timeout=timeout, limits=limits, transport=transport, trust_env=False)
        self._probe_timeout = httpx.Timeout(max(connect_timeout, 1.0), connect=connect_timeout)
        self._health_interval = health_interval
        self._lock = threading.Lock()
        self._turn = 0
        self._stop = threading.Event()
        self._prober: threading.Thread | None = None
        self._retired = False
        for upstream in self.upstreams:
            metrics.UPSTREAM_HEALTHY.labels(model_id, upstream.label).set(1)
            metrics.UPSTREAM_OUTSTANDING.labels(model_id, upstream.label).set(0)

    @classmethod
    def from_settings(cls, model_id: str, config: dict, *, local_engine=None) -> "RemoteEngine":
        """``config`` is one entry of SLUICE_REMOTE_MODELS, as ``platform.env.remote_models_from_env`` returns it;
        ``local_engine`` returns this worker's local engine, whose tokenizer counts a "local" tokenizer's prompts."""
        return cls(
            model_id=model_id,
            urls=config["urls"],
            api_key=config["api_key"],
            upstream_model=config["upstream_model"],
            counter=counter_for(config["tokenizer"], local_engine=local_engine),
            context_window=config["context_window"],
            connect_timeout=settings.SLUICE_UPSTREAM_CONNECT_TIMEOUT_S,
            read_timeout=settings.SLUICE_UPSTREAM_READ_TIMEOUT_S,
            health_interval=settings.SLUICE_UPSTREAM_HEALTH_INTERVAL_S,
            max_connections=settings.SLUICE_UPSTREAM_MAX_CONNECTIONS,
            defaults=config.get("defaults"),
            fair_sharing=settings.SLUICE_FAIR_SHARING,
            fair_burst=settings.SLUICE_FAIR_BURST_ROWS,
        )

    # --- counting (admission needs a prompt count before anything is sent) ---
    def encode(self, text: str) -> list[int]:
        return self._counter.encode(text)

    def encode_chat(self, messages: list[dict]) -> list[int]:
        return self._counter.encode_chat(messages)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self._counter.decode(token_ids)

    def count_text(self, text: str) -> int:
        return self._counter.count(text) if text else 0

    def warm_up(self) -> None:
        self._counter.warm_up()

    def submit(self, prompt_ids, params, *, deadline=None, share=None):
        raise NotImplementedError("a remote engine generates text upstream; use stream()")

    # --- generation ---
    def stream(self, prompt_ids, params: SamplingParams, *, deadline=None, messages=None, prompt=None,
               share=None) -> "RemoteTextStream":
        """Raises ``inference.fair_queue.AccountLimitExceeded`` when ``share``'s account holds all it may of this
        model's connections, EngineError for the rest."""
        if (messages is None) == (prompt is None):
            raise ValueError("a remote engine forwards either messages (chat) or a prompt (completion)")
        path, body = self._upstream_request(params, messages=messages, prompt=prompt)
        if self._gate is None:
            return self._stream_upstream(path, body, chat=messages is not None, deadline=deadline)
        with self._lock:
            try:
                self._gate.acquire(share)
            except CapacityFull:
                raise EngineError(f"The model '{self.model_id}' is overloaded; retry shortly.", status_code=503,
                                  code="upstream_overloaded", retry_after=1) from None
        try:
            text_stream = self._stream_upstream(path, body, chat=messages is not None, deadline=deadline)
        except BaseException:
            self._share_done(share)
            raise
        text_stream.on_release = lambda: self._share_done(share)
        return text_stream

    def _share_done(self, share) -> None:
        with self._lock:
            self._gate.release(share)

    def _stream_upstream(self, path: str, body: dict, *, chat: bool, deadline) -> "RemoteTextStream":
        if self._client.is_closed:  # retired between choosing this engine and starting on it
            raise EngineError(f"The model '{self.model_id}' was just reconfigured; retry.", status_code=503,
                              code="upstream_unavailable", retry_after=1)
        tried: list[Upstream] = []
        overloaded, retry_after = False, None
        while True:
            upstream = self._choose(exclude=tried)
            if upstream is None:
                break
            tried.append(upstream)
            try:
                text_stream = self._open(upstream, path, body, chat=chat, deadline=deadline)
            except _RetryElsewhere as refused:
                overloaded = overloaded or refused.overloaded
                retry_after = refused.retry_after or retry_after
                continue
            observation_current().upstream = upstream.label
            return text_stream
        if overloaded:
            raise EngineError(
                f"The model '{self.model_id}' is overloaded; retry shortly.",
                status_code=503, code="upstream_overloaded", retry_after=min(retry_after or 1, 60),
            )
        raise EngineError(
            f"The model '{self.model_id}' is temporarily unavailable: none of its backends could be reached. "
            "Retry shortly.",
            status_code=503, code="upstream_unavailable", retry_after=1,
        )

    def _upstream_request(self, params: SamplingParams, *, messages, prompt) -> tuple[str, dict]:
        body = {
            "model": self.upstream_model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params.max_tokens,
        }
        for name in ("temperature", "top_p", "top_k"):  # what nobody set is the upstream's to choose
            if name not in params.unset and (name != "top_k" or params.top_k):
                body[name] = getattr(params, name)
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if params.min_tokens:  # vLLM's extensions, sent only when asked for
            body["min_tokens"] = params.min_tokens
        if params.ignore_eos:
            body["ignore_eos"] = True
        if params.grammar is not None:  # the upstream enforces it (vLLM, llama-server and Sluice all do)
            body["response_format"] = params.grammar.as_response_format()
        if messages is not None:
            body["messages"] = [{"role": m["role"], "content": m["content"],
                                 **{k: m[k] for k in ("tool_calls", "tool_call_id", "name") if m.get(k)}}
                                for m in messages]
            if params.tools is not None:  # the upstream renders and parses them (its own model's format)
                body["tools"] = params.tools.tools
                body["tool_choice"] = json.loads(params.tools.tool_choice_json)
                if params.tools.parallel is not None:
                    body["parallel_tool_calls"] = params.tools.parallel
            if params.logprobs:
                body["logprobs"] = True
                if params.top_logprobs:
                    body["top_logprobs"] = params.top_logprobs
            return "/chat/completions", body
        body["prompt"] = prompt
        if params.logprobs:
            body["logprobs"] = params.top_logprobs
        return "/completions", body

    def _open(self, upstream: Upstream, path: str, body: dict, *, chat: bool, deadline) -> "RemoteTextStream":
        try:
            request = self._client.build_request("POST", upstream.url + path, json=body, headers=self._headers)
            response = self._client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            self._finished(upstream, "connect_error")
            self._mark(upstream, healthy=False, why=f"connect failed: {type(error).__name__}")
            raise _RetryElsewhere() from None
        except httpx.TimeoutException:
            self._finished(upstream, "timeout")
            raise EngineError("The model's backend timed out.", status_code=504, code="upstream_timeout") from None
        except httpx.HTTPError as error:
            self._finished(upstream, "bad_response")
            logger.warning("Upstream %s of %s: %s: %s", upstream.label, self.model_id, type(error).__name__, error)
            raise EngineError("The model's backend sent an invalid response.") from None
        if response.status_code != 200:
            self._refused(upstream, response)
        self._mark(upstream, healthy=True, why="answered")
        if "text/event-stream" not in response.headers.get("content-type", ""):
            response.close()
            self._finished(upstream, "bad_response")
            logger.warning("Upstream %s of %s answered %r, not an event stream", upstream.label, self.model_id,
                           response.headers.get("content-type"))
            raise EngineError("The model's backend sent an invalid response.")
        text_stream = RemoteTextStream(self, upstream, response, chat=chat, deadline=deadline,
                                       logprobs="logprobs" in body)
        text_stream.open()
        return text_stream

    def _refused(self, upstream: Upstream, response: httpx.Response):
        status = response.status_code
        try:
            raw = b""
            for chunk in response.iter_bytes():
                raw += chunk
                if len(raw) > MAX_ERROR_BODY_BYTES:
                    break
        except httpx.HTTPError:
            raw = b""
        finally:
            response.close()
        self._finished(upstream, f"http_{status}")
        message = ""
        try:
            error = json.loads(raw).get("error")
            message = error.get("message", "") if isinstance(error, dict) else str(error or "")
        except (ValueError, AttributeError):
            pass
        logger.warning("Upstream %s of %s answered %s: %s", upstream.label, self.model_id, status, raw[:300])
        if status in OVERLOADED_STATUSES:
            retry_after = response.headers.get("retry-after", "")
            raise _RetryElsewhere(overloaded=True, retry_after=int(retry_after) if retry_after.isdigit() else None)
        if status in {400, 413, 422}:  # the request itself: the client can fix it
            detail = _public_message(message, self.upstreams) if message else "no reason given"
            raise EngineError(f"The model's backend rejected the request: {detail}", status_code=400,
                              code="upstream_rejected")
        if status == 504:
            raise EngineError("The model's backend timed out.", status_code=504, code="upstream_timeout")
        raise EngineError(f"The model's backend failed (status {status}).", status_code=502, code="upstream_error")

    # --- balancing and health ---
    def _choose(self, *, exclude: list[Upstream]) -> Upstream | None:
        """The healthy upstream with the fewest requests in flight (ties taken in turn); when none is healthy,
        the others still get a try rather than failing without one."""
        with self._lock:
            candidates = [u for u in self.upstreams if u not in exclude]
            if not candidates:
                return None
            pool = [u for u in candidates if u.healthy] or candidates
            count, start = len(self.upstreams), self._turn
            self._turn += 1
            chosen = min(pool, key=lambda u: (u.outstanding, (self.upstreams.index(u) - start) % count))
            chosen.outstanding += 1
            outstanding = chosen.outstanding
        metrics.UPSTREAM_OUTSTANDING.labels(self.model_id, chosen.label).set(outstanding)
        return chosen

    def _finished(self, upstream: Upstream, outcome: str) -> None:
        with self._lock:
            upstream.outstanding -= 1
            outstanding = upstream.outstanding
            idle_and_retired = self._retired and not any(u.outstanding for u in self.upstreams)
        if idle_and_retired:
            self.close()
        metrics.UPSTREAM_OUTSTANDING.labels(self.model_id, upstream.label).set(outstanding)
        metrics.UPSTREAM_REQUESTS.labels(self.model_id, upstream.label, outcome).inc()

    def _mark(self, upstream: Upstream, *, healthy: bool, why: str) -> None:
        with self._lock:
            changed = upstream.healthy != healthy
            upstream.healthy = healthy
        if changed:
            log = logger.info if healthy else logger.warning
            log("Upstream %s of %s is %s (%s)", upstream.label, self.model_id, "back in rotation" if healthy else "out of rotation", why)
        metrics.UPSTREAM_HEALTHY.labels(self.model_id, upstream.label).set(1 if healthy else 0)

    def probe(self) -> None:
        """Ask every upstream ``GET {url}/models``; a 200 puts it in rotation, anything else takes it out."""
        for upstream in self.upstreams:
            try:
                response = self._client.get(upstream.url + "/models", headers=self._headers, timeout=self._probe_timeout)
                healthy, why = response.status_code == 200, f"probe answered {response.status_code}"
            except httpx.HTTPError as error:
                healthy, why = False, f"probe failed: {type(error).__name__}"
            self._mark(upstream, healthy=healthy, why=why)

    def start_probes(self) -> None:
        if self._prober is not None:
            return

        def run():
            while not self._stop.wait(self._health_interval):
                try:
                    self.probe()
                except Exception:
                    logger.exception("Probing the upstreams of %s failed", self.model_id)

        self._prober = threading.Thread(target=run, name=f"probe-{self.model_id}", daemon=True)
        self._prober.start()

    def account_stats(self) -> list:
        """Per account: requests outstanding to this model (as running) and their recent share."""
        if self._gate is None:
            return []
        with self._lock:
            self._gate.sample()
            return self._gate.stats(self._gate.outstanding)

    def stats(self) -> dict:
        with self._lock:
            return {
                "outstanding": sum(u.outstanding for u in self.upstreams),
                "upstreams": len(self.upstreams),
                "healthy_upstreams": sum(1 for u in self.upstreams if u.healthy),
            }

    def close(self) -> None:
        self._stop.set()
        self._client.close()

    def retire(self) -> None:
        """The catalogue changed this model: stop probing, and close once the requests running here are done."""
        self._stop.set()
        with self._lock:
            self._retired = True
            idle = not any(u.outstanding for u in self.upstreams)
        if idle:
            self.close()


class RemoteTextStream:
    """One upstream stream as text pieces, like ``inference.engines.base.TextStream``.

    ``finish_reason`` ends as "stop", "length", "cancelled", "timeout" (the request's deadline) or "error" (the
    stream broke after it had started; ``error_status``/``error_code`` say how). ``prompt_tokens`` is the
    upstream's count when it reported one, else None; ``completion_tokens`` is the upstream's count, or the
    text received so far counted locally.
    """

    def __init__(self, engine: RemoteEngine, upstream: Upstream, response: httpx.Response, *, chat: bool, deadline,
                 logprobs: bool = False):
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.error_status: int | None = None
        self.error_code: str | None = None
        self.upstream = upstream.label
        self._engine = engine
        self._upstream = upstream
        self._response = response
        self._chat = chat
        self._deadline = deadline
        self._received: list[str] = []
        self._reported_completion: int | None = None
        self._upstream_finish: str | None = None
        self._events = self._read_events()
        self._first: dict | None = None
        self._released = False
        self._cancelled = False
        # The upstream's logprobs, placed in the text received (like a local TextStream's).
        self.logprob_entries: list[LogprobEntry] | None = [] if logprobs else None
        self.tool_calls: list[dict] = []  # the upstream's tool calls, their argument deltas joined
        self._received_chars = 0
        self.on_release = None  # the engine's: frees the account's place at this model (inference.fair_queue)

    @property
    def completion_tokens(self) -> int:
        if self._reported_completion is not None:
            return self._reported_completion
        return self._engine.count_text("".join(self._received))

    def open(self) -> None:
        """Read up to the first event, so that an upstream that fails before any token fails the request cleanly
        (a 502/504 status to the client) rather than a stream that breaks after its headers."""
        try:
            self._first = next(self._events, None)
        except _StreamBroken as broken:
            self._release("bad_response" if broken.status_code == 502 else "timeout")
            logger.warning("Upstream %s of %s: %s", self.upstream, self._engine.model_id, broken.why)
            message = "The model's backend timed out." if broken.status_code == 504 else "The model's backend sent an invalid response."
            raise EngineError(message, status_code=broken.status_code, code=broken.code) from None

    def cancel(self) -> None:
        self._cancelled = True
        self._response.close()

    def __iter__(self) -> Iterator[str]:
        try:
            payload = self._first
            while payload is not None:
                if self._deadline is not None and time.monotonic() >= self._deadline:
                    self.finish_reason = "timeout"
                    return
                text = self._take(payload)
                if text:
                    self._received.append(text)
                    yield text
                payload = next(self._events, None)
            if self._cancelled:
                self.finish_reason = "cancelled"
            else:
                self.finish_reason = "length" if self._upstream_finish == "length" else "stop"
        except _StreamBroken as broken:
            if self._cancelled:
                self.finish_reason = "cancelled"
            else:
                logger.warning("Upstream %s of %s broke mid-stream: %s", self.upstream, self._engine.model_id, broken.why)
                self.finish_reason, self.error_status, self.error_code = "error", broken.status_code, broken.code
        finally:
            if self.finish_reason is None:  # the consumer went away mid-stream
                self.finish_reason = "cancelled"
            self._release({"error": "stream_error", "cancelled": "cancelled"}.get(self.finish_reason, "ok"))

    def __del__(self):  # a stream dropped without being read to its end still frees its upstream slot
        if hasattr(self, "_released"):
            self._release("cancelled")

    def _release(self, outcome: str) -> None:
        if self._released:
            return
        self._released = True
        self._response.close()
        self._engine._finished(self._upstream, outcome)
        if self.on_release is not None:
            self.on_release()

    def _take(self, payload: dict) -> str:
        """The text of one chunk; notes its usage and finish reason."""
        usage = payload.get("usage")
        if isinstance(usage, dict):
            if isinstance(usage.get("prompt_tokens"), int):
                self.prompt_tokens = usage["prompt_tokens"]
            if isinstance(usage.get("completion_tokens"), int):
                self._reported_completion = usage["completion_tokens"]
        choices = payload.get("choices") or []
        if not choices:
            return ""
        choice = choices[0]
        if not isinstance(choice, dict):
            raise _StreamBroken("a choice that is not an object")
        if choice.get("finish_reason"):
            self._upstream_finish = choice["finish_reason"]
        if self._chat:
            delta = choice.get("delta") or {}
            text = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(delta, dict) and isinstance(delta.get("tool_calls"), list):
                self._note_tool_calls(delta["tool_calls"])
        else:
            text = choice.get("text")
        text = text if isinstance(text, str) else ""
        if self.logprob_entries is not None:
            self._note_logprobs(choice.get("logprobs"))
        self._received_chars += len(text)
        return text

    def _note_tool_calls(self, deltas: list) -> None:
        for delta in deltas:
            if not isinstance(delta, dict) or not isinstance(delta.get("index", 0), int):
                continue
            index = delta.get("index", 0)
            while len(self.tool_calls) <= index:
                self.tool_calls.append({"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
            call, function = self.tool_calls[index], delta.get("function") or {}
            if isinstance(delta.get("id"), str):
                call["id"] = delta["id"]
            if isinstance(function.get("name"), str):
                call["function"]["name"] += function["name"]
            if isinstance(function.get("arguments"), str):
                call["function"]["arguments"] += function["arguments"]

    def _note_logprobs(self, logprobs) -> None:
        """Chat's ``{"content": [token logprobs]}`` or the legacy ``{"tokens", "token_logprobs", "top_logprobs"}``."""
        if not isinstance(logprobs, dict):
            return
        items = logprobs.get("content")
        if not isinstance(items, list) and isinstance(logprobs.get("tokens"), list):
            tops = logprobs.get("top_logprobs") or []
            items = [{"token": token, "logprob": value,
                      "top_logprobs": [{"token": t, "logprob": v} for t, v in (top or {}).items()]
                      if isinstance(top, dict) else []}
                     for token, value, top in zip(logprobs["tokens"], logprobs.get("token_logprobs") or [],
                                                  list(tops) + [None] * len(logprobs["tokens"]))]
        start = self._received_chars
        for item in items or []:
            entry = from_openai(item, start=start) if isinstance(item, dict) else None
            if entry is not None:
                self.logprob_entries.append(entry)
                start = entry.end

    def _read_events(self) -> Iterator[dict]:
        """The JSON payloads of the upstream's server-sent events, up to ``data: [DONE]``."""
        data_lines: list[str] = []
        saw_finish = False
        lines = self._lines()
        for line in lines:
            if line == "":
                if not data_lines:
                    continue
                data, data_lines = "\n".join(data_lines), []
                if data.strip() == "[DONE]":
                    try:
                        for _ in zip(range(8), lines):  # read the body's end, so the connection can be reused
                            pass
                    except _StreamBroken:
                        pass
                    return
                try:
                    payload = json.loads(data)
                except ValueError:
                    raise _StreamBroken(f"an event that is not JSON: {data[:80]!r}") from None
                if not isinstance(payload, dict):
                    raise _StreamBroken(f"an event that is not an object: {data[:80]!r}")
                if payload.get("error"):
                    raise _StreamBroken(f"an error event: {str(payload['error'])[:200]}")
                if "choices" not in payload and "usage" not in payload:
                    raise _StreamBroken(f"an event that is not a completion chunk: {data[:80]!r}")
                saw_finish = saw_finish or any(
                    isinstance(c, dict) and c.get("finish_reason") for c in payload.get("choices") or []
                )
                yield payload
            elif line.startswith("data:"):
                data_lines.append(line[5:].removeprefix(" "))
            elif not line.startswith((":", "event:", "id:", "retry:")):  # comments and fields carry no data
                raise _StreamBroken(f"not an event stream: {line[:80]!r}")
        if not saw_finish:
            raise _StreamBroken("the stream ended before the generation did", code="upstream_error")

    def _lines(self) -> Iterator[str]:
        buffer = b""
        try:
            for chunk in self._response.iter_bytes():
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    yield line.rstrip(b"\r").decode("utf-8", errors="replace")
                if len(buffer) > MAX_LINE_BYTES:
                    raise _StreamBroken("a line longer than 1 MiB")
        except httpx.TimeoutException:
            raise _StreamBroken("no data within SLUICE_UPSTREAM_READ_TIMEOUT_S", status_code=504, code="upstream_timeout") from None
        except (httpx.HTTPError, httpx.StreamError) as error:  # StreamError: we closed it (cancel)
            raise _StreamBroken(f"{type(error).__name__}: {error}") from None
        if buffer.strip():
            yield buffer.rstrip(b"\r").decode("utf-8", errors="replace")
        yield ""
