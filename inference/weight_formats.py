"""How the generator's weight matrices are held in memory and multiplied: the weight format.

De-quantized to float32, SmolLM2-135M reads ~540 MB of weights per decode step, and one stream is bound by
memory bandwidth. These formats keep the matrices smaller and multiply them with kernels torch itself ships.
This CPU (AMD EPYC, AVX-512 with VNNI and BF16, no AMX) runs torch's int8, int4 and bfloat16 kernels fast only
with bfloat16 activations, and they return bfloat16; a matrix's input is cast for them and the result cast
back to the residual stream's float32:

- ``q4_1``: int4 in GGUF's Q4_1 blocks (32 inputs, ``w = d*q + m``, d and m float16) with float32 activations
  and result, multiplied by Sluice's own AVX-512 kernel (``inference/kernels/cpu_kernels.cpp``), with the tied
  LM head and input embedding in Q8_0 blocks (one table for both): a Q4_1 GGUF's matrices exactly as stored, at
  ~5 bits a weight, nothing else rounded (the default where the CPU has AVX-512: fastest at every batch size
  measured and passes the quality check in ``inference.weight_quality``; ``float16`` elsewhere);
- ``float32``: the de-quantized weights as they are (the reference the others are checked against);
- ``float16``: float16 weights, float32 activations and result (fbgemm);
- ``bfloat16``: bfloat16 weights and activations (oneDNN);
- ``int8``: int8 per output channel with a bfloat16 scale (``aten._weight_int8pack_mm``);
- ``int4``: int4 in groups of 32 along the input with a scale and an offset per group
  (``aten._weight_int4pack_mm_for_cpu``), its scale and offset rounded to bfloat16.

A packed matrix is a small module with the ``nn.Linear`` call shape; ``pack_linear`` makes one from a float
weight. Packing is deterministic, so a packed model is cached on disk once (see ``inference.fast_llama``).
"""

from __future__ import annotations

import torch
from torch import nn

WEIGHT_FORMATS = ("q4_1", "float32", "float16", "bfloat16", "int8", "int4")
NEEDS_KERNELS = ("q4_1",)  # formats that run on inference/kernels
INT4_GROUP = 32  # Q4_1's block width
# The tied embedding / LM head (49,152 x 576 for SmolLM2) is float16 in every format but float32 and q4_1: the logits
# must come out in float32. Rounded to bfloat16 (what the bfloat16, int8 and int4 kernels return) a logit near
# 16 moves in steps of 0.125 and near-ties flip: 14 of 20 greedy continuations agreed with float32 when every
# matrix's output was rounded so, 20 of 20 when all but the LM head's were. The table looked up for the input
# embedding is block int8 in every format but float32 (GGUF's Q8_0 layout, so that table comes back exactly).
LM_HEAD_FORMATS = {"float16": "float16", "bfloat16": "float16", "int8": "float16", "int4": "float16", "q4_1": "q8_0"}


class PackedLinear(nn.Module):
    """y = x @ W.T for a weight held in some packed form; x [..., in_features] of any float dtype."""

    format = ""

    def __init__(self, out_features: int, in_features: int) -> None:
        super().__init__()
        self.out_features, self.in_features = out_features, in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out = self.matmul(x.reshape(-1, shape[-1]))
        return out.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def matmul(self, x2d: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state(self) -> dict[str, torch.Tensor]:
        """The tensors that rebuild this matrix with ``from_state``."""
        return {name: buffer for name, buffer in self.named_buffers(recurse=False)}

    def extra_repr(self) -> str:
        return f"{self.format}, in_features={self.in_features}, out_features={self.out_features}"


class _DenseLinear(PackedLinear):
    """The weight as a plain matrix of ``dtype``, multiplied in that dtype."""

    dtype = torch.float32

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__(*weight.shape)
        self.register_buffer("weight", weight.to(self.dtype).contiguous())

    @classmethod
    def from_state(cls, state):
        return cls(state["weight"])

    def matmul(self, x2d):
        return torch.nn.functional.linear(x2d.to(self.dtype), self.weight)


class Float32Linear(_DenseLinear):
    format, dtype = "float32", torch.float32


class BFloat16Linear(_DenseLinear):
    format, dtype = "bfloat16", torch.bfloat16


class Float16Linear(PackedLinear):
    """float16 weights, float32 activations, accumulation and result (fbgemm's fp16 GEMM,
    ``quantized::linear_dynamic_fp16``): half of float32's memory and nothing rounded but the weights. Only
    fbgemm's packed copy is kept; ``state`` unpacks it for saving."""

    format = "float16"

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__(*weight.shape)
        self._packed = torch.ops.quantized.linear_prepack_fp16(weight.to(torch.float16).to(torch.float32), None)

    @classmethod
    def from_state(cls, state):
        return cls(state["weight"])

    def state(self):
        return {"weight": torch.ops.quantized.linear_unpack_fp16(self._packed)[0].to(torch.float16)}

    def matmul(self, x2d):
        return torch.ops.quantized.linear_dynamic_fp16(x2d.to(torch.float32), self._packed)


class Int8Linear(PackedLinear):
    """Symmetric int8 per output row; the kernel wants bfloat16 activations and scales."""

    format = "int8"

    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor) -> None:
        super().__init__(*qweight.shape)
        self.register_buffer("qweight", qweight.contiguous())
        self.register_buffer("scales", scales.to(torch.bfloat16).contiguous())

    @classmethod
    def quantize(cls, weight: torch.Tensor) -> "Int8Linear":
        weight = weight.to(torch.float32)
        scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12)
        qweight = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
        return cls(qweight, scales)

    @classmethod
    def from_state(cls, state):
        return cls(state["qweight"], state["scales"])

    def matmul(self, x2d):
        return torch.ops.aten._weight_int8pack_mm(x2d.to(torch.bfloat16), self.qweight, self.scales)


class Int4Linear(PackedLinear):
    """Asymmetric int4 in groups of 32 along the input: w = (q - 8) * scale + zero, torch's CPU int4 layout."""

    format = "int4"

    def __init__(self, packed: torch.Tensor, scale_zero: torch.Tensor, out_features: int, in_features: int) -> None:
        super().__init__(out_features, in_features)
        self.register_buffer("packed", packed)
        self.register_buffer("scale_zero", scale_zero.to(torch.bfloat16).contiguous())

    @classmethod
    def quantize(cls, weight: torch.Tensor, group: int = INT4_GROUP) -> "Int4Linear":
        weight = weight.to(torch.float32)
        rows, cols = weight.shape
        if cols % group:
            raise ValueError(f"in_features {cols} is not a multiple of the int4 group {group}")
        groups = weight.view(rows, cols // group, group)
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)
        # A Q4_1 block is d * q + m with q in 0..15 and (nearly always) both ends used, so min/max give back d, m.
        scale = ((high - low) / 15).clamp(min=1e-12)
        q = torch.round((groups - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32).view(rows, cols)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        zero = low + 8 * scale  # the kernel subtracts 8 from q
        scale_zero = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()  # [groups, rows, 2]
        return cls(packed, scale_zero, rows, cols)

    @classmethod
    def from_state(cls, state):
        out_features, in_features = (int(v) for v in state["shape"].tolist())
        return cls(state["packed"], state["scale_zero"], out_features, in_features)

    def state(self):
        return {"packed": self.packed, "scale_zero": self.scale_zero,
                "shape": torch.tensor([self.out_features, self.in_features])}

    def matmul(self, x2d):
        # The input goes in as two bfloat16 halves (x = high + low), multiplied in one call: rounding it to
        # bfloat16 alone flipped greedy choices (16 of 20 continuations agreed; 18 of 20 with both halves).
        x2d = x2d.to(torch.float32)
        high = x2d.to(torch.bfloat16)
        low = (x2d - high.to(torch.float32)).to(torch.bfloat16)
        both = torch.ops.aten._weight_int4pack_mm_for_cpu(torch.cat([high, low]), self.packed, INT4_GROUP,
                                                          self.scale_zero)
        rows = x2d.shape[0]
        return both[:rows].to(torch.float32) + both[rows:].to(torch.float32)


class BlockInt8Embedding(nn.Module):
    """An embedding table as int8 in blocks of 32 with a float32 scale per block (GGUF's Q8_0 layout): a
    Q8_0 table comes back exactly, at a quarter of float32's memory; rows are de-quantized as they are looked up."""

    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("qweight", qweight.contiguous())
        self.register_buffer("scales", scales.to(torch.float32).contiguous())

    @classmethod
    def quantize(cls, weight: torch.Tensor, group: int = 32) -> "BlockInt8Embedding":
        rows, cols = weight.shape
        blocks = weight.to(torch.float32).view(rows, cols // group, group)
        scales = (blocks.abs().amax(dim=-1) / 127).clamp(min=1e-12)
        qweight = torch.round(blocks / scales[..., None]).clamp(-127, 127).to(torch.int8).view(rows, cols)
        return cls(qweight, scales)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.qweight[ids].to(torch.float32)
        scales = self.scales[ids]
        return (rows.view(*ids.shape, scales.shape[-1], -1) * scales[..., None]).view(*ids.shape, -1)


# --- GGUF's own blocks, multiplied by Sluice's AVX-512 kernels (inference/kernels/cpu_kernels.cpp) ---
PANEL = 16  # output rows per record
Q4_1_RECORD = 256 + 32 + 32
Q8_0_RECORD = 512 + 32


def _panels(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """[rows, blocks, ...] -> [rows / 16, blocks, ..., 16]: a record holds one block of 16 consecutive rows."""
    panels = tensor.reshape(rows // PANEL, PANEL, *tensor.shape[1:])
    return panels.movedim(1, -1)


def _float16_bytes(values: torch.Tensor, rows: int) -> torch.Tensor:
    """Per-(row, block) scales [rows, blocks] as the records' float16 bytes [panels, blocks, 32]."""
    return _panels(values.to(torch.float16), rows).contiguous().view(torch.uint8)


class _BlockRecordsLinear(PackedLinear):
    """A matrix held as records of 16 output rows x 32 inputs (see the kernels' header), one uint8 tensor."""

    def __init__(self, packed: torch.Tensor) -> None:
        panels, blocks, _ = packed.shape
        super().__init__(panels * PANEL, blocks * INT4_GROUP)
        self.register_buffer("packed", packed.contiguous())

    @classmethod
    def from_state(cls, state):
        return cls(state["packed"])

    @classmethod
    def _blocks(cls, weight: torch.Tensor) -> tuple[int, int, torch.Tensor]:
        """rows, inputs and the float32 weight as [rows, inputs / 32, 32]; a shape the records cannot hold is refused."""
        rows, cols = weight.shape
        if rows % PANEL or cols % INT4_GROUP:
            raise ValueError(f"{cls.format} needs rows in 16s and inputs in 32s, not {rows} x {cols}")
        return rows, cols, weight.to(torch.float32).reshape(rows, cols // INT4_GROUP, INT4_GROUP)


class Q41Linear(_BlockRecordsLinear):
    """int4 in GGUF's Q4_1 blocks (32 inputs, w = d * q + m, d and m float16), float32 in and out: a Q4_1 GGUF's
    matrices exactly as stored, ~5 bits a weight. Needs this CPU's AVX-512 and Sluice's kernel."""

    format = "q4_1"

    @classmethod
    def quantize(cls, weight: torch.Tensor) -> "Q41Linear":
        rows, cols, groups = cls._blocks(weight)
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)
        # A Q4_1 block uses q = 0 and q = 15 (its encoder takes min and max), so min and (max - min) / 15 give
        # back its m and d, which were float16 to begin with.
        scale = ((high - low) / 15).to(torch.float16).to(torch.float32)
        offset = low.to(torch.float16).to(torch.float32)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.round((groups - offset[..., None]) / safe[..., None]).clamp(0, 15).to(torch.uint8)
        # Records: 16 pairs of input positions, byte i = q[row i][2t] | q[row i][2t + 1] << 4.
        pairs = _panels(q.view(rows, cols // INT4_GROUP, 16, 2), rows)  # [panels, blocks, 16, 2, 16]
        nibbles = (pairs[:, :, :, 0] | (pairs[:, :, :, 1] << 4)).reshape(rows // PANEL, cols // INT4_GROUP, 256)
        packed = torch.cat([nibbles, _float16_bytes(scale, rows), _float16_bytes(offset, rows)], dim=-1)
        return cls(packed)

    def dequantize(self) -> torch.Tensor:
        """The float32 weight [out, in] this matrix multiplies by (for checks)."""
        panels, blocks, _ = self.packed.shape
        nibbles = self.packed[..., :256].view(panels, blocks, 16, 16)  # [p, j, t, row]
        q = torch.stack([nibbles & 0x0F, nibbles >> 4], dim=3).to(torch.float32)  # [p, j, t, 2, row]
        d = self.packed[..., 256:288].contiguous().view(torch.float16).to(torch.float32)  # [p, j, row]
        m = self.packed[..., 288:].contiguous().view(torch.float16).to(torch.float32)
        w = q * d[:, :, None, None] + m[:, :, None, None]
        return w.permute(0, 4, 1, 2, 3).reshape(self.out_features, self.in_features)

    def matmul(self, x2d):
        return torch.ops.sluice.q4_1_linear(x2d.to(torch.float32), self.packed)


class Q80Linear(_BlockRecordsLinear):
    """int8 in GGUF's Q8_0 blocks (32 inputs, w = d * q, d float16), float32 in and out: the packaged GGUF's
    tied embedding / LM head exactly as stored. Its rows are also looked up as the input embedding (``embed``),
    so the table is held once."""

    format = "q8_0"

    @classmethod
    def quantize(cls, weight: torch.Tensor) -> "Q80Linear":
        rows, cols, blocks = cls._blocks(weight)
        scale = (blocks.abs().amax(dim=-1) / 127).to(torch.float16).to(torch.float32)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.round(blocks / safe[..., None]).clamp(-127, 127).to(torch.int8)
        values = _panels(q, rows).reshape(rows // PANEL, cols // INT4_GROUP, 512).view(torch.uint8)
        return cls(torch.cat([values, _float16_bytes(scale, rows)], dim=-1))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` of the weight, de-quantized: [..., in_features] float32."""
        return torch.ops.sluice.q8_0_rows(self.packed, ids)

    def dequantize(self) -> torch.Tensor:
        return self.embed(torch.arange(self.out_features))

    def matmul(self, x2d):
        return torch.ops.sluice.q8_0_linear(x2d.to(torch.float32), self.packed)


def require_kernels(weight_format: str) -> None:
    """Refuse, saying why, a format whose kernel cannot run on this machine."""
    from inference import kernels

    if not kernels.available():
        raise RuntimeError(f"the {weight_format} weight format needs Sluice's AVX-512 kernels: "
                           f"{kernels.why_unavailable()}")


_CLASSES = {cls.format: cls for cls in (Float32Linear, Float16Linear, BFloat16Linear, Int8Linear, Int4Linear,
                                        Q41Linear, Q80Linear)}


def pack_linear(weight: torch.Tensor, weight_format: str) -> PackedLinear:
    """A packed matrix of ``weight`` ([out, in]) in ``weight_format``."""
    if weight_format not in _CLASSES:
        raise ValueError(f"unknown weight format {weight_format!r}; one of {', '.join(WEIGHT_FORMATS)}")
    cls = _CLASSES[weight_format]
    if cls in (Q41Linear, Q80Linear):
        require_kernels(weight_format)
    return cls.quantize(weight) if hasattr(cls, "quantize") else cls(weight)


def linear_from_state(weight_format: str, state: dict[str, torch.Tensor]) -> PackedLinear:
    if _CLASSES[weight_format] in (Q41Linear, Q80Linear):
        require_kernels(weight_format)
    return _CLASSES[weight_format].from_state(state)
