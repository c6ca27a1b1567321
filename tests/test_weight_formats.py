"""Weight formats and the lean forward pass: the same function as transformers' model, packed smaller.

The tiny-model tests run on a randomly initialised Llama (milliseconds); the `model` test checks the served
format of the packaged model against float32 on a slice of the quality check (inference/weight_quality.py;
the benchmark prints the full 20 prompts)."""

from __future__ import annotations

import pytest
import torch

from inference import kernels
from inference.fast_llama import FastLlama, load_or_pack, packed_path
from inference.weight_formats import NEEDS_KERNELS, WEIGHT_FORMATS, BlockInt8Embedding, pack_linear

# How far each format's logits may move from float32's on the tiny model (random weights, logits ~1).
TOLERANCE = {"float32": 1e-5, "float16": 0.02, "bfloat16": 0.1, "int8": 0.1, "int4": 0.3, "q4_1": 0.3}
needs_kernels = pytest.mark.skipif(not kernels.available(), reason=f"no AVX-512 kernels here: {kernels.why_unavailable()}")
FORMATS = [pytest.param(name, marks=needs_kernels) if name in NEEDS_KERNELS else name for name in WEIGHT_FORMATS]


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True)
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).eval()


def prompt(length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, 96, (1, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("weight_format", FORMATS)
def test_the_lean_forward_computes_what_transformers_computes(tiny_llama, weight_format):
    ids = prompt(12)
    with torch.inference_mode():
        expected = tiny_llama(input_ids=ids).logits
        got = FastLlama.from_transformers(tiny_llama, weight_format)(input_ids=ids).logits
    assert got.dtype == torch.float32
    assert (got - expected).abs().max().item() < TOLERANCE[weight_format]


def test_decoding_on_its_cache_gives_the_logits_of_the_whole_prompt(tiny_llama):
    fast = FastLlama.from_transformers(tiny_llama, "float32")
    ids = prompt(10)
    with torch.inference_mode():
        whole = fast(input_ids=ids).logits[0, -1]
        first = fast(input_ids=ids[:, :-1])
        step = fast(input_ids=ids[:, -1:], past_key_values=first.past_key_values, position_ids=torch.tensor([[9]]))
    assert torch.allclose(step.logits[0, -1], whole, atol=1e-5)


@pytest.mark.parametrize("weight_format", FORMATS)
def test_a_saved_packed_model_loads_back_the_same(tiny_llama, weight_format, tmp_path):
    packed = FastLlama.from_transformers(tiny_llama, weight_format)
    path = packed_path(tmp_path, weight_format)
    packed.save(path)
    loaded = FastLlama.load(path, tiny_llama.config, tiny_llama.generation_config)
    ids = prompt(8)
    with torch.inference_mode():
        assert torch.equal(loaded(input_ids=ids).logits, packed(input_ids=ids).logits)
    assert not list(tmp_path.glob(".*")), "no staging file left behind"


def test_a_missing_packed_file_is_made_once_from_the_model_folder(tiny_llama, tmp_path):
    tiny_llama.save_pretrained(tmp_path / "model")
    path = packed_path(tmp_path / "cache", "int8")
    first = load_or_pack(str(tmp_path / "model"), path, "int8", tiny_llama.config, tiny_llama.generation_config)
    written = path.stat().st_mtime_ns
    again = load_or_pack(str(tmp_path / "model"), path, "int8", tiny_llama.config, tiny_llama.generation_config)
    assert path.stat().st_mtime_ns == written
    ids = prompt(6)
    with torch.inference_mode():
        assert torch.equal(first(input_ids=ids).logits, again(input_ids=ids).logits)


def test_int4_gives_back_a_matrix_stored_as_q4_1_blocks():
    # Q4_1: w = d * q + m per block of 32, q in 0..15 (both ends used, as its quantizer leaves them).
    generator = torch.Generator().manual_seed(3)
    q = torch.randint(0, 16, (64, 4, 32), generator=generator)
    q[..., 0], q[..., 1] = 0, 15
    d = torch.rand(64, 4, 1, generator=generator) * 0.01 + 0.001
    m = -torch.rand(64, 4, 1, generator=generator) * 0.05
    weight = (d * q + m).view(64, 128)
    matrix = pack_linear(weight, "int4")
    recovered = matrix(torch.eye(128)).T  # I @ W.T, transposed: W as the kernel sees it
    # only the per-block scale and offset are rounded (to bfloat16, 8 significant bits)
    assert (recovered - weight).abs().max().item() < 0.01 * weight.abs().max().item()


def q4_1_matrix(rows: int, cols: int, seed: int) -> torch.Tensor:
    """A matrix made of Q4_1 blocks as the GGUF encoder leaves them (q = 0 and 15 used, d and m float16)."""
    generator = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (rows, cols // 32, 32), generator=generator)
    q[..., 0], q[..., 1] = 0, 15
    d = (torch.rand(rows, cols // 32, 1, generator=generator) * 0.01 + 0.001).half().float()
    m = (-torch.rand(rows, cols // 32, 1, generator=generator) * 0.05).half().float()
    return (d * q + m).view(rows, cols)


@needs_kernels
def test_q4_1_holds_a_q4_1_matrix_exactly_and_multiplies_it_in_float32():
    weight = q4_1_matrix(80, 96, seed=5)
    matrix = pack_linear(weight, "q4_1")
    assert torch.equal(matrix.dequantize(), weight)
    for rows in (1, 2, 3, 4, 5, 8, 12, 13, 25):  # every tile shape, and rows past a tile of 12
        x = torch.randn(rows, 96, generator=torch.Generator().manual_seed(rows))
        expected = x.double() @ weight.double().T
        assert (matrix(x).double() - expected).abs().max().item() < 1e-5 * expected.abs().max().item()


@needs_kernels
def test_q8_0_holds_the_tied_table_exactly_for_the_head_and_the_lookup():
    generator = torch.Generator().manual_seed(6)
    q = torch.randint(-127, 128, (48, 2, 32), generator=generator)
    q[..., 0] = 127
    scales = (torch.rand(48, 2, 1, generator=generator) * 0.01).half().float()
    table = (q * scales).view(48, 64)
    head = pack_linear(table, "q8_0")
    ids = torch.tensor([[3, 47, 0], [16, 17, 31]])
    assert torch.equal(head.embed(ids), table[ids])
    x = torch.randn(3, 64, generator=generator)
    assert torch.allclose(head(x), x @ table.T, rtol=1e-5, atol=1e-5)


@needs_kernels
def test_q4_1_refuses_a_shape_its_blocks_do_not_fit():
    with pytest.raises(ValueError, match="rows in 16s and inputs in 32s"):
        pack_linear(torch.zeros(24, 64), "q4_1")


def test_a_q8_0_embedding_table_comes_back_exactly():
    generator = torch.Generator().manual_seed(4)
    q = torch.randint(-127, 128, (10, 2, 32), generator=generator)
    q[..., 0] = 127
    scales = (torch.rand(10, 2, 1, generator=generator) * 0.01).half().float()
    table = (q * scales).view(10, 64)
    embed = BlockInt8Embedding.quantize(table)
    ids = torch.tensor([[3, 7, 0]])
    assert torch.allclose(embed(ids), table[ids], rtol=1e-6, atol=0)


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown weight format"):
        pack_linear(torch.zeros(4, 32), "int3")


@pytest.mark.model
def test_the_served_format_keeps_float32s_greedy_answers_and_likelihood(real_model_engine):
    from django.conf import settings

    from inference.model_files import load_model_and_tokenizer, model_source_from_settings
    from inference.weight_quality import compare

    source = model_source_from_settings(settings.SLUICE_MODEL_PATH, settings.SLUICE_MODEL_GGUF_FILE)
    reference, _ = load_model_and_tokenizer(source, dtype=torch.float32, cache_dir=settings.SLUICE_MODEL_CACHE_DIR)
    report = compare(reference, real_model_engine.model, real_model_engine.tokenizer, prompts=6)
    assert report.passes, report.summary()
    assert report.agreeing == report.prompts, report.summary()  # the slice's 6 of 6 (the full bar: 18 of 20)


@needs_kernels
def test_the_rms_norm_kernel_computes_torchs_rms_norm():
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(7))
    weight = torch.rand(64, generator=torch.Generator().manual_seed(8))
    expected = torch.nn.functional.rms_norm(x, (64,), weight, 1e-5)
    assert torch.allclose(torch.ops.sluice.rms_norm(x, weight, 1e-5), expected, rtol=1e-5, atol=1e-6)


@needs_kernels
@pytest.mark.parametrize("masked", [False, True])
def test_the_decode_attention_kernel_computes_sdpa_over_a_window_of_the_cache(masked):
    generator = torch.Generator().manual_seed(9)
    rows, heads, kv_heads, dim, capacity, start, end = 3, 6, 2, 32, 20, 4, 15
    query = torch.randn(rows, 1, heads, dim, generator=generator).transpose(1, 2)  # strided, as the model makes it
    cache_k, cache_v = (torch.randn(rows, kv_heads, capacity, dim, generator=generator) for _ in range(2))
    keys, values = cache_k[:, :, start:end], cache_v[:, :, start:end]  # a window: not contiguous
    mask = None
    if masked:
        mask = torch.rand(rows, 1, 1, end - start, generator=generator) > 0.3
        mask[..., -1] = True  # a row always sees its newest column
    expected = torch.nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=mask, enable_gqa=True)
    got = torch.ops.sluice.decode_attention(query, keys, values, mask)
    assert got.shape == (rows, 1, heads * dim)
    assert torch.allclose(got, expected.transpose(1, 2).reshape(rows, 1, heads * dim), rtol=1e-5, atol=1e-5)


@needs_kernels
@pytest.mark.parametrize("weight_format", ["q4_1", "float32"])
def test_a_decode_step_on_the_kernels_matches_the_general_path_on_the_schedulers_cache(tiny_llama, weight_format):
    from inference.scheduler import _BatchKV

    fast = FastLlama.from_transformers(tiny_llama, weight_format)
    ids = torch.cat([prompt(9, seed=2), prompt(9, seed=3)])
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, :3] = False  # the second row is left-padded

    def one_step(kernels: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        fast.small_kernels = kernels
        with torch.inference_mode():
            prefill = fast(input_ids=ids, attention_mask=mask[:, None, None, :] & torch.ones(9, 9, dtype=torch.bool).tril(),
                           position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
            cache = _BatchKV(4)
            cache.insert([layer.keys for layer in prefill.past_key_values.layers],
                         [layer.values for layer in prefill.past_key_values.layers], mask)
            attention = cache.prepare_decode()
            out = fast(input_ids=torch.tensor([[5], [7]]), attention_mask=attention, position_ids=torch.tensor([[9], [6]]),
                       past_key_values=cache)
            cache.advance()
        return out.logits, [k[:2, :, cache.start:cache.end].clone() for k in cache.keys]

    try:
        fused_logits, fused_keys = one_step(True)
        plain_logits, plain_keys = one_step(False)
    finally:
        fast.small_kernels = True
    assert torch.allclose(fused_logits, plain_logits, rtol=1e-4, atol=1e-4)
    for fused, plain in zip(fused_keys, plain_keys):
        assert torch.allclose(fused, plain, rtol=1e-5, atol=1e-5)
