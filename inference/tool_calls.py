"""Tool calls: the tools put into the prompt, forced calls constrained, and the model's calls read back.

A model whose chat template has no tool format (SmolLM2's) gets the format of inference/tool_calling.json: the
tools' JSON signatures in the system message, each call a ``{"name", "arguments"}`` object between
``<tool_call>`` tags, each result a ``tool`` message between ``<tool_response>`` tags; an assistant message
that carried tool calls is written back as those calls.

``tool_choice``:
  none       the tools are left out of the prompt; the reply is text.
  auto       the model decides; ``<tool_call>`` blocks in its reply that hold a valid call of a listed tool
             become ``tool_calls``, the rest stays content.
  required   the reply starts inside ``<tool_call>`` and is decoded under a grammar: one call of one of the
             tools, its arguments valid for that tool's parameters schema.
  {function} the prompt ends with ``<tool_call>{"name": "<it>", "arguments": `` and the reply is decoded under
             that function's parameters schema: it is the arguments, streamed as they are generated.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from inference.grammar_spec import GrammarSpec

AUTO, REQUIRED, NAMED = "auto", "required", "named"
EMPTY_PARAMETERS = {"type": "object", "properties": {}}


@cache
def tool_format() -> dict:
    return json.loads(Path(__file__).with_name("tool_calling.json").read_text())


@dataclass(frozen=True)
class ToolPlan:
    """What a request's ``tools`` / ``tool_choice`` ask for (None when there are no tools or the choice is none)."""

    mode: str  # AUTO, REQUIRED or NAMED
    tools_json: str  # the request's tools, as JSON text (OpenAI's shape)
    forced: str | None = None  # NAMED: the function
    tool_choice_json: str = '"auto"'  # as the request sent it (a remote upstream gets it unchanged)
    parallel: bool | None = None

    @property
    def tools(self) -> list[dict]:
        return json.loads(self.tools_json)

    @property
    def functions(self) -> dict[str, dict]:
        return {tool["function"]["name"]: tool["function"] for tool in self.tools}

    def parameters(self, name: str) -> dict:
        return self.functions[name].get("parameters") or EMPTY_PARAMETERS


def tool_plan_for(tools: list[dict] | None, tool_choice, parallel: bool | None) -> ToolPlan | None:
    """``tools`` and ``tool_choice`` as the serializer validated them."""
    if not tools or tool_choice == "none":
        return None
    choice = tool_choice if tool_choice is not None else AUTO
    if isinstance(choice, dict):
        return ToolPlan(NAMED, json.dumps(tools), choice["function"]["name"], json.dumps(choice), parallel)
    return ToolPlan(choice, json.dumps(tools), None, json.dumps(choice), parallel)


def call_schema(name: str, parameters: dict) -> dict:
    return {"type": "object", "properties": {"name": {"const": name}, "arguments": parameters},
            "required": ["name", "arguments"], "additionalProperties": False}


def tool_grammar(plan: ToolPlan | None) -> GrammarSpec | None:
    """The grammar a forced call is decoded under (None for auto)."""
    if plan is None or plan.mode == AUTO:
        return None
    if plan.mode == NAMED:
        return GrammarSpec.for_schema(plan.parameters(plan.forced))
    calls = [call_schema(name, plan.parameters(name)) for name in plan.functions]
    return GrammarSpec.for_schema(calls[0] if len(calls) == 1 else {"anyOf": calls})


def prompt_suffix(plan: ToolPlan | None) -> str:
    """Text after the template's generation prompt: a forced call starts inside its tags."""
    if plan is None or plan.mode == AUTO:
        return ""
    if plan.mode == REQUIRED:
        return tool_format()["call_open"]
    return tool_format()["call_open"] + '{"name": ' + json.dumps(plan.forced) + ', "arguments": '


def _signature(tool: dict) -> dict:
    function = tool["function"]
    signature = {"type": "function", "function": {"name": function["name"]}}
    if function.get("description"):
        signature["function"]["description"] = function["description"]
    signature["function"]["parameters"] = function.get("parameters") or EMPTY_PARAMETERS
    return signature


def _written_call(call: dict) -> str:
    function = call.get("function") or {}
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except ValueError:
        arguments = function.get("arguments")
    form = tool_format()
    return form["call_open"] + json.dumps({"name": function.get("name"), "arguments": arguments}) + form["call_close"]


def render_messages(messages, plan: ToolPlan | None) -> list[dict]:
    """The conversation as plain ``{"role", "content"}`` messages for a template without a tool format."""
    form = tool_format()
    rendered = []
    for message in messages:
        content = message.get("content") or ""
        if message["role"] == "assistant" and message.get("tool_calls"):
            calls = "\n".join(_written_call(call) for call in message["tool_calls"])
            content = f"{content}\n{calls}" if content else calls
        elif message["role"] == "tool":
            content = form["response_open"] + content + form["response_close"]
        rendered.append({"role": message["role"], "content": content})
    if plan is not None:
        tools = "\n".join(json.dumps(_signature(tool)) for tool in plan.tools)
        system = form["system"].replace("{tools}", tools)
        if rendered and rendered[0]["role"] == "system":
            rendered[0] = {"role": "system", "content": rendered[0]["content"] + "\n\n" + system}
        else:
            rendered.insert(0, {"role": "system", "content": system})
    return rendered


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


# Events of a parse: ("content", text), ("call", index, id, name), ("arguments", index, text).


class ToolCallParser:
    """Reads a reply as it is released, into content and tool calls (OpenAI's deltas)."""

    def __init__(self, plan: ToolPlan):
        self.plan = plan
        self.calls = 0
        self._buffer = ""
        self._inside = plan.mode == REQUIRED
        form = tool_format()
        self._open, self._close = form["call_open"].strip(), form["call_close"].strip()

    def push(self, text: str) -> list[tuple]:
        if self.plan.mode == NAMED:
            events = [] if self.calls else [("call", 0, new_call_id(), self.plan.forced)]
            self.calls = 1
            return events + ([("arguments", 0, text)] if text else [])
        self._buffer += text
        if self.plan.mode == REQUIRED:
            return []
        return self._scan()

    def finish(self) -> list[tuple]:
        if self.plan.mode == NAMED:
            return self.push("") if not self.calls else []
        events = []
        if self._inside:
            events = self._block(self._buffer, closed=False)
        elif self._buffer:
            events = [("content", self._buffer)]
        self._buffer, self._inside = "", False
        return events

    def _scan(self) -> list[tuple]:
        events = []
        while True:
            if not self._inside:
                start = self._buffer.find(self._open)
                if start == -1:
                    keep = _partial_suffix(self._buffer, self._open)
                    released = self._buffer[: len(self._buffer) - keep]
                    if released:
                        events.append(("content", released))
                    self._buffer = self._buffer[len(released):]
                    return events
                if start:
                    events.append(("content", self._buffer[:start]))
                self._buffer = self._buffer[start + len(self._open):]
                self._inside = True
            end = self._buffer.find(self._close)
            if end == -1:
                return events
            block, self._buffer = self._buffer[:end], self._buffer[end + len(self._close):]
            self._inside = False
            events.extend(self._block(block, closed=True))

    def _block(self, block: str, *, closed: bool) -> list[tuple]:
        """A call's text: a valid call of a listed tool becomes one; anything else stays content."""
        try:
            call = json.loads(block)
        except ValueError:
            call = None
        functions = self.plan.functions
        if isinstance(call, dict) and call.get("name") in functions and isinstance(call.get("arguments"), (dict, str)):
            arguments = call["arguments"] if isinstance(call["arguments"], str) else json.dumps(call["arguments"])
            index, self.calls = self.calls, self.calls + 1
            return [("call", index, new_call_id(), call["name"]), ("arguments", index, arguments)]
        if self.plan.mode == REQUIRED:  # cut short (max_tokens): what there is, as the call's arguments
            return [("content", block)]
        return [("content", self._open + block + (self._close if closed else ""))]


def _partial_suffix(text: str, tag: str) -> int:
    """The length of the longest end of ``text`` that could begin ``tag``."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0


def tool_calls_from_events(events: list[tuple]) -> tuple[str, list[dict]]:
    """A whole reply's content and its tool calls, from all the parse's events."""
    content, calls = "", {}
    for event in events:
        if event[0] == "content":
            content += event[1]
        elif event[0] == "call":
            calls[event[1]] = {"id": event[2], "type": "function", "function": {"name": event[3], "arguments": ""}}
        else:
            calls[event[1]]["function"]["arguments"] += event[2]
    return content, [calls[index] for index in sorted(calls)]
