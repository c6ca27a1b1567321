"""A local transformers model behind the Engine interface, its decoding shared by concurrent requests."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings

from inference.constrained import GrammarCompiler, GrammarError
from inference.engines.base import Engine, EngineBusy, EngineError
from inference.model_files import load_model_and_tokenizer, model_source_from_settings
from inference.sampling import SamplingParams
from inference.sampling_defaults import generation_config_defaults, model_card_defaults


class TransformersEngine(Engine):
    def __init__(self, *, model, tokenizer, model_id: str, max_batch_size: int, max_queue: int,
                 model_card_defaults: dict | None = None):
        from inference.fair_queue import FairQueue, FcfsQueue
        from inference.scheduler import BatchScheduler
        from inference.torch_threads import model_threads

        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.context_window = int(getattr(model.config, "max_position_embeddings", 2048))
        # The packaged GGUF's generation_config sets no sampling field; its card's advice fills in.
        self._defaults = generation_config_defaults(model.generation_config) or dict(model_card_defaults or {})
        eos_ids = {tokenizer.eos_token_id}
        if isinstance(model.generation_config.eos_token_id, int):
            eos_ids.add(model.generation_config.eos_token_id)
        elif model.generation_config.eos_token_id:
            eos_ids.update(model.generation_config.eos_token_id)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.grammars = GrammarCompiler(tokenizer, vocab_size=self.vocab_size)
        self._vocabulary_bytes: list[bytes] | None = None
        # Who joins the batch next: fair by account (issue 18), or first come first served.
        waiting = (FairQueue(max_batch_size, burst_rows=settings.SLUICE_FAIR_BURST_ROWS) if settings.SLUICE_FAIR_SHARING
                   else FcfsQueue(max_batch_size))
        # The scheduler's thread runs Python between kernel calls; behind request threads (streams, moderation)
        # it would wait up to the interpreter's 5 ms switch interval for the GIL at each. Over HTTP
        # (benchmarks/llama_server_bench.py, medians): 0.1 ms gave one stream 119 tokens/s against 108 with
        # 2 ms and ~98 with 0.5 ms; 4 streams 270 against ~215, 16 streams 392 against ~340.
        if settings.SLUICE_GIL_SWITCH_INTERVAL_S:
            sys.setswitchinterval(settings.SLUICE_GIL_SWITCH_INTERVAL_S)
        self.scheduler = BatchScheduler(
            model, eos_token_ids=eos_ids, pad_token_id=pad_id, max_batch_size=max_batch_size, max_queue=max_queue,
            threads=model_threads(), waiting_queue=waiting,
        )

    @classmethod
    def from_settings(cls) -> "TransformersEngine":
        import torch

        source = model_source_from_settings(settings.SLUICE_MODEL_PATH, settings.SLUICE_MODEL_GGUF_FILE)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[settings.SLUICE_MODEL_DTYPE]
        model, tokenizer = load_model_and_tokenizer(source, dtype=dtype, cache_dir=settings.SLUICE_MODEL_CACHE_DIR,
                                                    weight_format=settings.SLUICE_WEIGHT_FORMAT)
        return cls(
            model=model,
            tokenizer=tokenizer,
            model_id=settings.SLUICE_MODEL_ID,
            max_batch_size=settings.SLUICE_MAX_BATCH_SIZE,
            max_queue=settings.SLUICE_MAX_QUEUE,
            model_card_defaults=model_card_defaults(source.gguf_file or Path(source.path).name),
        )

    def generation_defaults(self) -> dict:
        return self._defaults

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def encode_chat(self, messages: list[dict]) -> list[int]:
        return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def token_bytes(self, token_id: int) -> bytes:
        if self._vocabulary_bytes is None:
            from inference.token_bytes import vocabulary_bytes

            self._vocabulary_bytes = vocabulary_bytes(self.tokenizer, self.vocab_size)
        return self._vocabulary_bytes[token_id] if 0 <= token_id < len(self._vocabulary_bytes) else b""

    def submit(self, prompt_ids: list[int], params: SamplingParams, *, deadline: float | None = None, share=None):
        from inference.scheduler import QueueFull

        guide = None
        if params.grammar is not None:
            try:  # compiled here, in the request's thread (cached per schema), never on the scheduler's
                guide = self.grammars.guide_for(params.grammar)
            except GrammarError as error:
                raise EngineError(f"The schema cannot be enforced: {error}", status_code=400,
                                  code="invalid_value") from None
        try:
            return self.scheduler.submit(prompt_ids, params, deadline=deadline, share=share, guide=guide)
        except QueueFull as full:
            raise EngineBusy(str(full)) from None

    def stats(self) -> dict:
        return self.scheduler.stats()

    def account_stats(self) -> list:
        return self.scheduler.account_stats()

    def run_exclusive(self, work):
        return self.scheduler.run_between_steps(work)
