"""A lean forward pass for Llama-architecture generators over packed weights (see ``inference.weight_formats``).

transformers' Llama runs ~1,200 small tensor operations per decode step of SmolLM2's 30 layers, and on two
CPU cores that Python and dispatch work costs as much as the arithmetic at one stream. This module computes
the same function with fewer, larger operations: the query, key and value matrices are one matrix, the gate
and up matrices are one, rotary embeddings turn the queries and keys in one go, and the cosines and sines are
computed once per step, not per layer. The residual stream, the norms and attention stay float32; only the
matrices are packed. Where Sluice's CPU kernels run (``inference.kernels``), a decode step calls them for the
norms, the rotation with the cache write and the attention, and the scheduler's cache is float16.

It is called the way the batch scheduler calls a transformers model (``input_ids``, a boolean 4D
``attention_mask`` or None for plain causal, ``position_ids``, a ``past_key_values`` object with
``update(key, value, layer)``) and answers ``.logits`` and ``.past_key_values``, so the scheduler runs either.

A packed model is saved once beside the converted model (``weights-<format>.safetensors``) and later starts load that
file directly, without building the float32 model first.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from safetensors.torch import save_file

from inference.weight_formats import (LM_HEAD_FORMATS, BlockInt8Embedding, PackedLinear, Q80Linear, linear_from_state,
                                      pack_linear)

logger = logging.getLogger(__name__)

PACKED_FILE_VERSION = 1


def supports(config) -> bool:
    """Whether this module computes the same function as transformers for a model of ``config``."""
    rope = getattr(config, "rope_parameters", None) or {}
    return (getattr(config, "model_type", None) == "llama" and rope.get("rope_type", "default") == "default"
            and not getattr(config, "attention_bias", False) and not getattr(config, "mlp_bias", False)
            and getattr(config, "hidden_act", "silu") == "silu")


@dataclass
class FastLlamaOutput:
    logits: torch.Tensor
    past_key_values: object


class _Layer(nn.Module):
    def __init__(self, qkv: PackedLinear, o: PackedLinear, gate_up: PackedLinear, down: PackedLinear,
                 input_norm: torch.Tensor, post_norm: torch.Tensor) -> None:
        super().__init__()
        self.qkv, self.o, self.gate_up, self.down = qkv, o, gate_up, down
        self.input_norm = nn.Parameter(input_norm.to(torch.float32), requires_grad=False)
        self.post_norm = nn.Parameter(post_norm.to(torch.float32), requires_grad=False)


class FastLlama(nn.Module):
    """The generator; ``config`` and ``generation_config`` are transformers' own objects for it."""

    def __init__(self, config, generation_config, layers: list[_Layer], embed: nn.Module, lm_head: PackedLinear,
                 final_norm: torch.Tensor, weight_format: str) -> None:
        super().__init__()
        self.config, self.generation_config = config, generation_config
        self.weight_format = weight_format
        self.layers = nn.ModuleList(layers)
        self.embed, self.lm_head = embed, lm_head
        self.final_norm = nn.Parameter(final_norm.to(torch.float32), requires_grad=False)
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = float(config.rms_norm_eps)
        theta = config.rope_parameters["rope_theta"]
        inv_freq = 1.0 / (theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float) / self.head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        from inference import kernels

        # RMS norm and a decode step's attention on Sluice's kernels where they run (any weight format).
        self.small_kernels = kernels.available()

    @property
    def kv_cache_dtype(self) -> torch.dtype:
        """What the batch scheduler's key/value cache holds: float16 where the decode step runs on the kernels
        (they read and write it; half the memory of float32, as llama.cpp's default cache), float32 otherwise."""
        return torch.float16 if self.small_kernels else torch.float32

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32  # the residual stream's and the cache's; the matrices are in weight_format

    def get_output_embeddings(self) -> SimpleNamespace:
        """transformers' accessor, for callers that read the vocabulary's size from it: the LM head's shape,
        as a weight on the meta device (the packed matrix has no plain weight to hand out)."""
        return SimpleNamespace(weight=torch.empty(self.lm_head.out_features, self.lm_head.in_features, device="meta"))

    # --- building, saving, loading ---
    @classmethod
    def from_transformers(cls, model, weight_format: str, lm_head_format: str | None = None) -> "FastLlama":
        """Pack a transformers Llama's weights (float) into ``weight_format``."""
        config = model.config
        if not supports(config):
            raise ValueError(f"not a plain Llama model: {config.model_type}")
        lm_head_format = lm_head_format or LM_HEAD_FORMATS.get(weight_format, weight_format)
        layers = []
        with torch.no_grad():
            for block in model.model.layers:
                attention, mlp = block.self_attn, block.mlp
                qkv = torch.cat([attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight])
                gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
                layers.append(_Layer(pack_linear(qkv, weight_format), pack_linear(attention.o_proj.weight, weight_format),
                                     pack_linear(gate_up, weight_format), pack_linear(mlp.down_proj.weight, weight_format),
                                     block.input_layernorm.weight.detach().clone(),
                                     block.post_attention_layernorm.weight.detach().clone()))
            table = model.model.embed_tokens.weight.detach()
            head = model.lm_head.weight.detach()
            lm_head = pack_linear(head, lm_head_format)
            if weight_format == "float32" and lm_head_format == "float32" and head.data_ptr() == table.data_ptr():
                embed = _Float32Embedding(lm_head.weight)  # tied: one table for both
            elif weight_format == "float32":
                embed = _Float32Embedding(table.to(torch.float32).contiguous())
            elif isinstance(lm_head, Q80Linear) and head.data_ptr() == table.data_ptr():
                embed = _TiedQ80Embedding(lm_head)  # tied: the LM head's blocks are looked up too
            else:
                embed = BlockInt8Embedding.quantize(table)
            return cls(config, model.generation_config, layers, embed, lm_head,
                       model.model.norm.weight.detach().clone(), weight_format)

    def save(self, path: Path) -> None:
        """Write the packed weights to ``path`` atomically (a killed worker never leaves half a file)."""
        tensors: dict[str, torch.Tensor] = {"final_norm": self.final_norm.data}
        formats: dict[str, str] = {}
        for index, layer in enumerate(self.layers):
            for name in ("qkv", "o", "gate_up", "down"):
                matrix = getattr(layer, name)
                formats[f"{index}.{name}"] = matrix.format
                for key, value in matrix.state().items():
                    tensors[f"{index}.{name}.{key}"] = value
            tensors[f"{index}.input_norm"] = layer.input_norm.data
            tensors[f"{index}.post_norm"] = layer.post_norm.data
        formats["lm_head"] = self.lm_head.format
        for key, value in self.lm_head.state().items():
            tensors[f"lm_head.{key}"] = value
        if isinstance(self.embed, _TiedQ80Embedding):
            formats["embed"] = "tied_q8_0"
        elif isinstance(self.embed, BlockInt8Embedding):
            formats["embed"] = "block_int8"
            tensors["embed.qweight"], tensors["embed.scales"] = self.embed.qweight, self.embed.scales
        else:
            formats["embed"] = "tied" if self.embed.weight.data_ptr() == getattr(self.lm_head, "weight",
                                                                                  torch.empty(0)).data_ptr() else "float32"
            if formats["embed"] == "float32":
                tensors["embed.weight"] = self.embed.weight
        metadata = {"version": str(PACKED_FILE_VERSION), "weight_format": self.weight_format,
                    "formats": json.dumps(formats), "layers": str(len(self.layers))}
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, staging = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        os.close(handle)
        try:
            save_file({key: value.contiguous() for key, value in tensors.items()}, staging, metadata=metadata)
            os.replace(staging, path)
        finally:
            if os.path.exists(staging):
                os.unlink(staging)

    @classmethod
    def load(cls, path: Path, config, generation_config) -> "FastLlama":
        # Tensors are read one at a time into fresh memory and each is dropped once packed: loading never holds
        # the file and the packed model at once (peak RSS), and the file is read, not mapped, so its page-cache
        # pages do not count against the process.
        stream = _TensorStream(path)
        metadata = stream.metadata
        if metadata.get("version") != str(PACKED_FILE_VERSION):
            raise ValueError(f"{path}: packed weights of version {metadata.get('version')}, expected {PACKED_FILE_VERSION}")
        formats = json.loads(metadata["formats"])

        def matrix(prefix: str) -> PackedLinear:
            state = {name[len(prefix) + 1:]: stream.get(name) for name in stream.names if name.startswith(prefix + ".")}
            return linear_from_state(formats[prefix], state)

        layers = []
        for i in range(int(metadata["layers"])):
            qkv, o, gate_up, down = (matrix(f"{i}.{name}") for name in ("qkv", "o", "gate_up", "down"))
            layers.append(_Layer(qkv, o, gate_up, down, stream.get(f"{i}.input_norm"), stream.get(f"{i}.post_norm")))
        lm_head = matrix("lm_head")
        if formats["embed"] == "block_int8":
            embed = BlockInt8Embedding(stream.get("embed.qweight"), stream.get("embed.scales"))
        elif formats["embed"] == "tied_q8_0":
            embed = _TiedQ80Embedding(lm_head)
        elif formats["embed"] == "tied":
            embed = _Float32Embedding(lm_head.weight)
        else:
            embed = _Float32Embedding(stream.get("embed.weight"))
        return cls(config, generation_config, layers, embed, lm_head, stream.get("final_norm"), metadata["weight_format"])

    # --- the forward pass ---
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past_key_values=None, use_cache: bool = True,
                logits_to_keep: int = 0, **_ignored) -> FastLlamaOutput:
        batch, length = input_ids.shape
        if (self.small_kernels and length == 1 and hasattr(past_key_values, "decode_slot") and position_ids is not None
                and (attention_mask is None or attention_mask.dtype == torch.bool) and not logits_to_keep):
            return self._decode_on_kernels(input_ids, attention_mask, position_ids, past_key_values)
        if past_key_values is None:
            from transformers import DynamicCache

            past_key_values = DynamicCache()
        if position_ids is None:
            start = past_key_values.get_seq_length()
            position_ids = torch.arange(start, start + length, device=input_ids.device)[None].expand(batch, -1)
        freqs = position_ids[..., None].to(torch.float32) * self.inv_freq
        angles = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, T, D], shared by every layer
        cos, sin = angles.cos(), angles.sin()
        heads, kv_heads, head_dim = self.heads, self.kv_heads, self.head_dim
        rotated_heads = heads + kv_heads
        half = head_dim // 2
        causal = attention_mask is None and length > 1
        decoding = length == 1
        hidden = self.embed(input_ids)
        if self.small_kernels:  # Sluice's own (inference/kernels): the same function, a fraction of the overhead
            def rms_norm(x, _shape, weight, eps):
                return torch.ops.sluice.rms_norm(x, weight, eps)
        else:
            rms_norm = torch.nn.functional.rms_norm
        one_query_kernel = (self.small_kernels and decoding
                            and (attention_mask is None or attention_mask.dtype == torch.bool))
        attend = torch.nn.functional.scaled_dot_product_attention
        for index, layer in enumerate(self.layers):
            x = rms_norm(hidden, (hidden.shape[-1],), layer.input_norm, self.eps)
            qkv = layer.qkv(x).view(batch, length, rotated_heads + kv_heads, head_dim).transpose(1, 2)
            qk, value = qkv[:, :rotated_heads], qkv[:, rotated_heads:]
            qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin
            query, key = qk[:, :heads], qk[:, heads:]
            if not decoding:
                key, value = key.contiguous(), value.contiguous()
            key, value = past_key_values.update(key, value, index)
            if one_query_kernel:
                attended = torch.ops.sluice.decode_attention(query, key, value, attention_mask)
            else:
                attended = attend(query, key, value, attn_mask=attention_mask, is_causal=causal, enable_gqa=True)
                attended = attended.transpose(1, 2).reshape(batch, length, heads * head_dim)
            hidden = hidden + layer.o(attended)
            x = rms_norm(hidden, (hidden.shape[-1],), layer.post_norm, self.eps)
            gate, up = layer.gate_up(x).chunk(2, dim=-1)
            hidden = hidden + layer.down(torch.nn.functional.silu(gate) * up)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        hidden = rms_norm(hidden, (hidden.shape[-1],), self.final_norm, self.eps)
        return FastLlamaOutput(logits=self.lm_head(hidden), past_key_values=past_key_values)


    def _decode_on_kernels(self, input_ids, attention_mask, position_ids, cache) -> FastLlamaOutput:
        """One new token per row, on 2-D activations and Sluice's kernels: the rotation, the cache write and
        the attention are one call each, and the matrices are called without the 3-D reshaping."""
        ops = torch.ops.sluice
        batch = input_ids.shape[0]
        eps, heads, kv_heads = self.eps, self.heads, self.kv_heads
        hidden = self.embed(input_ids[:, 0])  # [rows, hidden]
        freqs = position_ids.reshape(batch, 1).to(torch.float32) * self.inv_freq  # [rows, head_dim / 2]
        cos, sin = freqs.cos(), freqs.sin()
        for index, layer in enumerate(self.layers):
            x = ops.rms_norm(hidden, layer.input_norm, eps)
            keys, values, column, window = cache.decode_slot(index)
            query = ops.rope_write_kv(layer.qkv.matmul(x).float(), cos, sin, keys, values, column, heads, kv_heads)
            attended = ops.decode_attention(query, keys[:batch, :, window], values[:batch, :, window], attention_mask)
            hidden = hidden + layer.o.matmul(attended.view(batch, -1))
            gate, up = layer.gate_up.matmul(ops.rms_norm(hidden, layer.post_norm, eps)).chunk(2, dim=-1)
            hidden = hidden + layer.down.matmul(torch.nn.functional.silu(gate) * up)
        logits = self.lm_head.matmul(ops.rms_norm(hidden, self.final_norm, eps))
        return FastLlamaOutput(logits=logits.view(batch, 1, -1), past_key_values=cache)


_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I8": torch.int8,
                       "U8": torch.uint8, "I64": torch.int64, "I32": torch.int32}


class _TensorStream:
    """A safetensors file read tensor by tensor into fresh memory (no mmap)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        with open(path, "rb") as file:
            (size,) = struct.unpack("<Q", file.read(8))
            self._entries = json.loads(file.read(size))
        self._base = 8 + size
        self.metadata = dict(self._entries.pop("__metadata__", {}))
        self.names = list(self._entries)

    def get(self, name: str) -> torch.Tensor:
        entry = self._entries[name]
        start, end = entry["data_offsets"]
        tensor = torch.empty(entry["shape"], dtype=_SAFETENSORS_DTYPES[entry["dtype"]])
        if end > start:
            with open(self._path, "rb") as file:
                file.seek(self._base + start)
                file.readinto(memoryview(tensor.view(-1).view(torch.uint8).numpy()))
        return tensor


class _Float32Embedding(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.embedding(ids, self.weight)


class _TiedQ80Embedding(nn.Module):
    """The input embedding read from the tied LM head's Q8_0 blocks (the table is held once)."""

    def __init__(self, lm_head: Q80Linear) -> None:
        super().__init__()
        self.lm_head = [lm_head]  # a list, so the head is not registered (nor saved) twice

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head[0].embed(ids)


def packed_path(folder: Path, weight_format: str) -> Path:
    return Path(folder) / f"weights-{weight_format}.safetensors"


def load_or_pack(model_path: str, packed: Path, weight_format: str, config, generation_config) -> FastLlama:
    """The packed model of the transformers model at ``model_path``: from the file ``packed``, written once
    (from the float32 model) when missing."""
    if not packed.exists():
        from transformers import AutoModelForCausalLM

        logger.info("Packing %s into %s weights (once; later starts load %s)", model_path, weight_format, packed)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        FastLlama.from_transformers(model.eval(), weight_format).save(packed)
        del model
    return FastLlama.load(packed, config, generation_config)
