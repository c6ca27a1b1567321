"""What a caller asks of one generation, independent of how the engine runs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inference.grammar_spec import GrammarSpec
    from inference.tool_calls import ToolPlan


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # vLLM extensions, so a benchmark can ask for exactly N tokens.
    min_tokens: int = 0
    ignore_eos: bool = False
    # Fields neither the request nor any default of the model set (see inference.sampling_defaults): a remote
    # engine leaves them out, so the upstream applies its own.
    unset: tuple[str, ...] = ()
    # Log-probabilities of each generated token and of its `top_logprobs` most likely alternatives.
    logprobs: bool = False
    top_logprobs: int = 0
    # What the output must match (a JSON schema, any JSON object), enforced by constrained decoding; see
    # inference.constrained. None: free text.
    grammar: "GrammarSpec | None" = None
    # Chat with tools (inference.tool_calls): a remote engine sends them upstream; a local one has already
    # written them into the prompt and, for a forced call, into ``grammar``.
    tools: "ToolPlan | None" = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
