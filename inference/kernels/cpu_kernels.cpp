// Sluice's CPU kernels (AVX-512), loaded by inference/kernels/__init__.py as torch.ops.sluice.*.
//
// 1. y = x @ W.T for W held in GGUF's own blocks, on AVX-512: Q4_1 (the packaged model's matrices) and Q8_0 (its
// tied embedding / LM head). Activations, accumulation and the result are float32; the weights are expanded to
// float32 in registers as they stream in, so a decode step reads ~5 bits a weight and rounds nothing but what
// the GGUF file already rounded. torch ships no such kernel: its int4 and int8 CPU kernels take and return
// bfloat16, which cost greedy agreement with float32 (see inference/weight_formats.py).
//
// Layout (made by inference/weight_formats.py): the output rows are cut in panels of 16, the input in blocks
// of 32, and each (panel, block) is one record, panels outermost:
//   Q4_1 (320 bytes): 16 pairs of input positions (2t, 2t+1), each 16 bytes, byte i = q[row i][2t] | q[row i][2t+1] << 4;
//                     then the 16 rows' scales d, then their offsets m, as float16 (w = d * q + m, q in 0..15).
//   Q8_0 (544 bytes): 32 input positions, each 16 int8 (one per row); then the 16 rows' scales d as float16 (w = d * q).
// One register holds one weight for 16 output rows, multiplied by a broadcast activation: no horizontal sums.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t kPanel = 16;
constexpr int64_t kBlock = 32;
constexpr int64_t kQ41Bytes = 256 + 32 + 32;
constexpr int64_t kQ80Bytes = 512 + 32;
constexpr int64_t kGroup = 4;  // panels a thread takes at a time
constexpr int64_t kMaxRows = 12;  // activation rows a tile multiplies at once

// rows x NP panels of output, over the whole input: acc[r][p] holds out[r][16p .. 16p+15]. Per block,
// sum_k x_k (d q_k + m) = d * sum_k x_k q_k + m * sum_k x_k: the 4-bit values go to float by a table lookup
// (vpermps reads only an index's low 4 bits), are multiplied unscaled, and each block's sums are scaled once.
template <int ROWS, int NP>
void q41_tile(const float* x, int64_t ldx, const float* sums, const uint8_t* w, int64_t panel_stride, int64_t blocks,
              float* out, int64_t ldo) {
  __m512 acc[ROWS][NP];
  for (int r = 0; r < ROWS; ++r)
    for (int p = 0; p < NP; ++p) acc[r][p] = _mm512_setzero_ps();
  const __m512 values = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int64_t j = 0; j < blocks; ++j) {
    const uint8_t* record[NP];
    for (int p = 0; p < NP; ++p) record[p] = w + p * panel_stride + j * kQ41Bytes;
    const float* xj = x + j * kBlock;
    __m512 dot[ROWS][NP];
    for (int r = 0; r < ROWS; ++r)
      for (int p = 0; p < NP; ++p) dot[r][p] = _mm512_setzero_ps();
    for (int t = 0; t < 16; ++t) {
      for (int p = 0; p < NP; ++p) {
        const __m512i pair = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(record[p] + t * 16)));
        const __m512 q0 = _mm512_permutexvar_ps(pair, values);
        const __m512 q1 = _mm512_permutexvar_ps(_mm512_srli_epi32(pair, 4), values);
        for (int r = 0; r < ROWS; ++r) {
          dot[r][p] = _mm512_fmadd_ps(_mm512_set1_ps(xj[r * ldx + 2 * t]), q0, dot[r][p]);
          dot[r][p] = _mm512_fmadd_ps(_mm512_set1_ps(xj[r * ldx + 2 * t + 1]), q1, dot[r][p]);
        }
      }
    }
    __m512 block_sum[ROWS];
    for (int r = 0; r < ROWS; ++r) block_sum[r] = _mm512_set1_ps(sums[r * blocks + j]);
    for (int p = 0; p < NP; ++p) {
      const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(record[p] + 256)));
      const __m512 m = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(record[p] + 288)));
      for (int r = 0; r < ROWS; ++r)
        acc[r][p] = _mm512_fmadd_ps(block_sum[r], m, _mm512_fmadd_ps(dot[r][p], d, acc[r][p]));
    }
  }
  for (int r = 0; r < ROWS; ++r)
    for (int p = 0; p < NP; ++p) _mm512_storeu_ps(out + r * ldo + p * kPanel, acc[r][p]);
}

template <int ROWS, int NP>
void q80_tile(const float* x, int64_t ldx, const float* /*sums*/, const uint8_t* w, int64_t panel_stride,
              int64_t blocks, float* out, int64_t ldo) {
  __m512 acc[ROWS][NP];
  for (int r = 0; r < ROWS; ++r)
    for (int p = 0; p < NP; ++p) acc[r][p] = _mm512_setzero_ps();
  for (int64_t j = 0; j < blocks; ++j) {
    const uint8_t* record[NP];
    __m512 d[NP];
    for (int p = 0; p < NP; ++p) {
      record[p] = w + p * panel_stride + j * kQ80Bytes;
      d[p] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(record[p] + 512)));
    }
    const float* xj = x + j * kBlock;
    for (int k = 0; k < 32; ++k) {
      for (int p = 0; p < NP; ++p) {
        const __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(record[p] + k * 16)));
        const __m512 wk = _mm512_mul_ps(_mm512_cvtepi32_ps(q), d[p]);
        for (int r = 0; r < ROWS; ++r) acc[r][p] = _mm512_fmadd_ps(_mm512_set1_ps(xj[r * ldx + k]), wk, acc[r][p]);
      }
    }
  }
  for (int r = 0; r < ROWS; ++r)
    for (int p = 0; p < NP; ++p) _mm512_storeu_ps(out + r * ldo + p * kPanel, acc[r][p]);
}

using Tile = void (*)(const float*, int64_t, const float*, const uint8_t*, int64_t, int64_t, float*, int64_t);

template <int ROWS, int NP>
struct Q41 {
  static constexpr bool kBlockSums = true;
  static void run(const float* x, int64_t ldx, const float* sums, const uint8_t* w, int64_t s, int64_t b, float* o,
                  int64_t ldo) {
    q41_tile<ROWS, NP>(x, ldx, sums, w, s, b, o, ldo);
  }
};
template <int ROWS, int NP>
struct Q80 {
  static constexpr bool kBlockSums = false;
  static void run(const float* x, int64_t ldx, const float* sums, const uint8_t* w, int64_t s, int64_t b, float* o,
                  int64_t ldo) {
    q80_tile<ROWS, NP>(x, ldx, sums, w, s, b, o, ldo);
  }
};

// The panels one call takes for a tile of this many rows: few rows take several panels, so that enough
// independent sums are in flight; 5 to 12 rows give enough on one panel (12 rows use 24 of the 32 registers).
inline int64_t panels_per_call(int64_t rows) { return rows <= 2 ? 4 : rows <= 4 ? 2 : 1; }

template <template <int, int> class Kernel, int NP>
Tile tile_for_rows(int64_t rows) {
  switch (rows) {
    case 1: return Kernel<1, NP>::run;
    case 2: return Kernel<2, NP>::run;
    case 3: return Kernel<3, NP>::run;
    case 4: return Kernel<4, NP>::run;
    case 5: return Kernel<5, 1>::run;
    case 6: return Kernel<6, 1>::run;
    case 7: return Kernel<7, 1>::run;
    case 8: return Kernel<8, 1>::run;
    case 9: return Kernel<9, 1>::run;
    case 10: return Kernel<10, 1>::run;
    case 11: return Kernel<11, 1>::run;
    default: return Kernel<12, 1>::run;
  }
}

template <template <int, int> class Kernel>
Tile tile_for(int64_t rows, int64_t panels) {
  if (panels == 4 && rows <= 2) return tile_for_rows<Kernel, 4>(rows);
  if (panels == 2 && rows <= 4) return tile_for_rows<Kernel, 2>(rows);
  return tile_for_rows<Kernel, 1>(rows);
}

template <template <int, int> class Kernel>
at::Tensor block_linear(const at::Tensor& x, const at::Tensor& packed, int64_t record_bytes, const char* name) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, name, ": x must be a 2-D float32 tensor");
  TORCH_CHECK(packed.dim() == 3 && packed.scalar_type() == at::kByte && packed.size(2) == record_bytes && packed.is_contiguous(),
              name, ": packed weights must be contiguous uint8 [panels, blocks, ", record_bytes, "]");
  const at::Tensor input = x.contiguous();
  const int64_t rows = input.size(0), in_features = input.size(1);
  const int64_t panels = packed.size(0), blocks = packed.size(1);
  TORCH_CHECK(in_features == blocks * kBlock, name, ": x has ", in_features, " features, the weights ", blocks * kBlock);
  const int64_t out_features = panels * kPanel;
  at::Tensor out = at::empty({rows, out_features}, input.options());
  if (rows == 0) return out;
  const float* x_data = input.data_ptr<float>();
  const uint8_t* w_data = packed.data_ptr<uint8_t>();
  float* out_data = out.data_ptr<float>();
  const int64_t panel_stride = blocks * record_bytes;
  // Q4_1's offsets multiply each block's sum of x: [rows, blocks], once per call.
  std::vector<float> sums(Kernel<1, 1>::kBlockSums ? rows * blocks : 0);
  for (int64_t i = 0; i < static_cast<int64_t>(sums.size()); ++i) {
    const float* xb = x_data + i * kBlock;  // row-major [rows, blocks, 32] is the input itself
    sums[i] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_loadu_ps(xb), _mm512_loadu_ps(xb + 16)));
  }
  const float* sums_data = sums.data();
  const int64_t groups = (panels + kGroup - 1) / kGroup;
  at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      const int64_t first = g * kGroup, last = std::min(panels, first + kGroup);
      for (int64_t r0 = 0; r0 < rows; r0 += kMaxRows) {
        const int64_t tile_rows = std::min(kMaxRows, rows - r0);
        const int64_t step = panels_per_call(tile_rows);
        const Tile tile = tile_for<Kernel>(tile_rows, step), single = tile_for<Kernel>(tile_rows, 1);
        for (int64_t p = first; p < last;) {
          const bool whole = p + step <= last;  // a group's last panels, when fewer than a call takes, one at a time
          (whole ? tile : single)(x_data + r0 * in_features, in_features, sums_data + r0 * blocks,
                                  w_data + p * panel_stride, panel_stride, blocks, out_data + r0 * out_features + p * kPanel,
                                  out_features);
          p += whole ? step : 1;
        }
      }
    }
  });
  return out;
}

at::Tensor q4_1_linear(const at::Tensor& x, const at::Tensor& packed) {
  return block_linear<Q41>(x, packed, kQ41Bytes, "q4_1_linear");
}

at::Tensor q8_0_linear(const at::Tensor& x, const at::Tensor& packed) {
  return block_linear<Q80>(x, packed, kQ80Bytes, "q8_0_linear");
}

// 2. The small operations of a decode step (one new token per row), without torch's general-case overhead ---

inline float horizontal_sum(__m512 v) { return _mm512_reduce_add_ps(v); }

// e^x for x <= 0 (Cephes' expf: 2^n e^r, |r| <= ln 2 / 2, degree-5 polynomial; relative error ~1e-7);
// x below -87 (and -inf) gives 0.
inline __m512 exp_nonpositive(__m512 x) {
  const __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ);
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~tiny), _mm512_scalef_ps(p, n));
}

// y = x / sqrt(mean(x^2) + eps) * weight, per row of x [rows, width] (width a multiple of 16).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat, "rms_norm: float32 only");
  const at::Tensor input = x.contiguous();
  const int64_t width = input.size(-1), rows = input.numel() / width;
  TORCH_CHECK(width % 16 == 0 && weight.numel() == width, "rms_norm: width must be a multiple of 16 and match the weight");
  const at::Tensor w = weight.contiguous();
  at::Tensor out = at::empty_like(input);
  const float* src = input.data_ptr<float>();
  const float* wd = w.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = src + r * width;
      __m512 squares = _mm512_setzero_ps();
      for (int64_t i = 0; i < width; i += 16) {
        const __m512 v = _mm512_loadu_ps(row + i);
        squares = _mm512_fmadd_ps(v, v, squares);
      }
      const __m512 scale = _mm512_set1_ps(1.0f / std::sqrt(horizontal_sum(squares) / width + static_cast<float>(eps)));
      for (int64_t i = 0; i < width; i += 16)
        _mm512_storeu_ps(dst + r * width + i,
                         _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(row + i), scale), _mm512_loadu_ps(wd + i)));
    }
  });
  return out;
}

// float32 or float16 cache elements, 16 at a time.
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const at::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline void store16(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
inline void store16(at::Half* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

template <typename T>
void decode_attention_rows(const float* q, int64_t qs0, int64_t qs1, const T* k, int64_t ks0, int64_t ks1, int64_t ks2,
                           const T* v, int64_t vs0, int64_t vs1, int64_t vs2, const bool* m, int64_t m_row,
                           int64_t m_col, int64_t rows, int64_t heads, int64_t group, int64_t length, int64_t dim,
                           float* o) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  const int64_t grain = std::max<int64_t>(1, 131072 / std::max<int64_t>(1, length * dim));  // ~0.1 ms a chunk
  const int64_t padded = (length + 15) / 16 * 16;
  at::parallel_for(0, rows * heads, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(padded, -INFINITY);  // the padding past `length` stays -inf
    std::vector<__m512> acc(dim / 16);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t r = task / heads, h = task % heads, kvh = h / group;
      const float* qv = q + r * qs0 + h * qs1;
      const T* kr = k + r * ks0 + kvh * ks1;
      const T* vr = v + r * vs0 + kvh * vs1;
      float best = -INFINITY;
      for (int64_t l = 0; l < length; ++l) {
        if (m && !m[r * m_row + l * m_col]) {
          scores[l] = -INFINITY;
          continue;
        }
        __m512 dot = _mm512_setzero_ps();
        for (int64_t i = 0; i < dim; i += 16) dot = _mm512_fmadd_ps(_mm512_loadu_ps(qv + i), load16(kr + l * ks2 + i), dot);
        scores[l] = horizontal_sum(dot) * scale;
        best = std::max(best, scores[l]);
      }
      for (auto& a : acc) a = _mm512_setzero_ps();
      float total = 0.0f;
      if (best > -INFINITY) {
        // Softmax weights 16 at a time (masked and padding columns give exactly 0), then the weighted values.
        const __m512 top = _mm512_set1_ps(best);
        __m512 sum = _mm512_setzero_ps();
        std::vector<float> weights(padded);
        for (int64_t l = 0; l < padded; l += 16) {
          const __m512 w = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(scores.data() + l), top));
          _mm512_storeu_ps(weights.data() + l, w);
          sum = _mm512_add_ps(sum, w);
        }
        total = horizontal_sum(sum);
        for (int64_t l = 0; l < length; ++l) {
          const float p = weights[l];
          if (p == 0.0f) continue;
          const __m512 pv = _mm512_set1_ps(p);
          for (int64_t i = 0; i < dim; i += 16) acc[i / 16] = _mm512_fmadd_ps(pv, load16(vr + l * vs2 + i), acc[i / 16]);
        }
      }
      // A row that attends to nothing gets zeros (torch's SDPA would give NaN; no live row is ever so).
      const __m512 norm = _mm512_set1_ps(total > 0.0f ? 1.0f / total : 0.0f);
      float* dst = o + r * heads * dim + h * dim;
      for (int64_t i = 0; i < dim; i += 16) _mm512_storeu_ps(dst + i, _mm512_mul_ps(acc[i / 16], norm));
    }
  });
}

// Attention of one query per row over that row's cached keys and values, grouped-query (heads / kv_heads
// queries share a key/value head). query [rows, heads, 1, dim] float32; keys, values [rows, kv_heads, length,
// dim], float32 or float16 (any strides, dim contiguous: a window of the batch's cache); mask [rows, 1, 1,
// length] bool (true: attend) or undefined (attend to all). Returns [rows, 1, heads * dim] float32, what the
// output projection takes.
at::Tensor decode_attention(const at::Tensor& query, const at::Tensor& keys, const at::Tensor& values,
                            const c10::optional<at::Tensor>& mask) {
  TORCH_CHECK(query.scalar_type() == at::kFloat && keys.scalar_type() == values.scalar_type() &&
              (keys.scalar_type() == at::kFloat || keys.scalar_type() == at::kHalf),
              "decode_attention: a float32 query, float32 or float16 keys and values");
  TORCH_CHECK(query.dim() == 4 && query.size(2) == 1 && keys.dim() == 4 && values.sizes() == keys.sizes(),
              "decode_attention: one query per row, keys and values alike");
  const int64_t rows = query.size(0), heads = query.size(1), dim = query.size(3);
  const int64_t kv_heads = keys.size(1), length = keys.size(2);
  TORCH_CHECK(keys.size(0) == rows && keys.size(3) == dim && heads % kv_heads == 0 && dim % 16 == 0,
              "decode_attention: shapes do not fit");
  TORCH_CHECK(query.stride(3) == 1 && keys.stride(3) == 1 && values.stride(3) == 1, "decode_attention: dim must be contiguous");
  const bool masked = mask.has_value() && mask->defined();
  if (masked)
    TORCH_CHECK(mask->scalar_type() == at::kBool && mask->size(0) == rows && mask->size(-1) == length,
                "decode_attention: mask [rows, 1, 1, length] bool");
  at::Tensor out = at::empty({rows, 1, heads * dim}, query.options());
  const bool* m = masked ? mask->data_ptr<bool>() : nullptr;
  const int64_t m_row = masked ? mask->stride(0) : 0, m_col = masked ? mask->stride(-1) : 0;
  if (keys.scalar_type() == at::kHalf)
    decode_attention_rows<at::Half>(query.data_ptr<float>(), query.stride(0), query.stride(1), keys.data_ptr<at::Half>(),
                                    keys.stride(0), keys.stride(1), keys.stride(2), values.data_ptr<at::Half>(),
                                    values.stride(0), values.stride(1), values.stride(2), m, m_row, m_col, rows, heads,
                                    heads / kv_heads, length, dim, out.data_ptr<float>());
  else
    decode_attention_rows<float>(query.data_ptr<float>(), query.stride(0), query.stride(1), keys.data_ptr<float>(),
                                 keys.stride(0), keys.stride(1), keys.stride(2), values.data_ptr<float>(),
                                 values.stride(0), values.stride(1), values.stride(2), m, m_row, m_col, rows, heads,
                                 heads / kv_heads, length, dim, out.data_ptr<float>());
  return out;
}

// The rotary embedding of a decode step's queries and keys, and the cache write, in one pass. qkv [rows,
// (heads + 2 kv_heads) * dim] (the fused projection's output); cos, sin [rows, dim / 2] (each row's angles);
// keys, values: the layer's cache buffers [>= rows, kv_heads, columns, dim], dim contiguous. The rotated keys
// and the values go to column `column` of rows 0..rows-1; the rotated queries come back [rows, heads, 1, dim].
// Rotation as transformers' Llama: out[i] = x[i] cos - x[i + half] sin, out[i + half] = x[i + half] cos + x[i] sin.
template <typename T>
void rope_write_rows(const float* src, int64_t rows, int64_t width, int64_t heads, int64_t kv_heads, int64_t dim,
                     const float* c, const float* s, float* q, T* k, int64_t ks0, int64_t ks1, int64_t ks2, T* v,
                     int64_t vs0, int64_t vs1, int64_t vs2, int64_t column) {
  const int64_t half = dim / 2;
  std::vector<float> rotated(dim);
  for (int64_t r = 0; r < rows; ++r) {
    const float* cr = c + r * half;
    const float* sr = s + r * half;
    for (int64_t h = 0; h < heads + kv_heads; ++h) {
      const float* x = src + r * width + h * dim;
      float* out = h < heads ? q + (r * heads + h) * dim : rotated.data();
      for (int64_t i = 0; i < half; ++i) {
        const float x1 = x[i], x2 = x[i + half];
        out[i] = x1 * cr[i] - x2 * sr[i];
        out[i + half] = x2 * cr[i] + x1 * sr[i];
      }
      if (h >= heads) {
        T* key = k + r * ks0 + (h - heads) * ks1 + column * ks2;
        for (int64_t i = 0; i < dim; i += 16) store16(key + i, _mm512_loadu_ps(out + i));
      }
    }
    for (int64_t h = 0; h < kv_heads; ++h) {
      const float* x = src + r * width + (heads + kv_heads + h) * dim;
      T* value = v + r * vs0 + h * vs1 + column * vs2;
      for (int64_t i = 0; i < dim; i += 16) store16(value + i, _mm512_loadu_ps(x + i));
    }
  }
}

// The rotary embedding of a decode step's queries and keys, and the cache write, in one pass. qkv [rows,
// (heads + 2 kv_heads) * dim] (the fused projection's output); cos, sin [rows, dim / 2] (each row's angles);
// keys, values: the layer's cache buffers [>= rows, kv_heads, columns, dim], float32 or float16, dim contiguous.
// The rotated keys and the values go to column `column` of rows 0..rows-1; the rotated queries come back
// [rows, heads, 1, dim] float32. Rotation as transformers' Llama: out[i] = x[i] cos - x[i + half] sin,
// out[i + half] = x[i + half] cos + x[i] sin.
at::Tensor rope_write_kv(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, at::Tensor keys,
                         at::Tensor values, int64_t column, int64_t heads, int64_t kv_heads) {
  TORCH_CHECK(qkv.dim() == 2 && qkv.is_contiguous() && qkv.scalar_type() == at::kFloat, "rope_write_kv: qkv [rows, width] float32");
  const int64_t rows = qkv.size(0), width = qkv.size(1), all_heads = heads + 2 * kv_heads;
  TORCH_CHECK(width % all_heads == 0, "rope_write_kv: width is not heads x dim");
  const int64_t dim = width / all_heads, half = dim / 2;
  TORCH_CHECK(dim % 16 == 0, "rope_write_kv: head dim must be a multiple of 16");
  TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous() && cos.numel() == rows * half && sin.numel() == rows * half &&
              cos.scalar_type() == at::kFloat && sin.scalar_type() == at::kFloat, "rope_write_kv: cos, sin [rows, dim / 2] float32");
  TORCH_CHECK(keys.dim() == 4 && values.sizes() == keys.sizes() && keys.size(0) >= rows && keys.size(1) == kv_heads &&
              keys.size(3) == dim && column >= 0 && column < keys.size(2) && keys.stride(3) == 1 && values.stride(3) == 1 &&
              keys.scalar_type() == values.scalar_type() &&
              (keys.scalar_type() == at::kFloat || keys.scalar_type() == at::kHalf), "rope_write_kv: cache buffers do not fit");
  at::Tensor query = at::empty({rows, heads, 1, dim}, qkv.options());
  if (keys.scalar_type() == at::kHalf)
    rope_write_rows<at::Half>(qkv.data_ptr<float>(), rows, width, heads, kv_heads, dim, cos.data_ptr<float>(),
                              sin.data_ptr<float>(), query.data_ptr<float>(), keys.data_ptr<at::Half>(), keys.stride(0),
                              keys.stride(1), keys.stride(2), values.data_ptr<at::Half>(), values.stride(0),
                              values.stride(1), values.stride(2), column);
  else
    rope_write_rows<float>(qkv.data_ptr<float>(), rows, width, heads, kv_heads, dim, cos.data_ptr<float>(),
                           sin.data_ptr<float>(), query.data_ptr<float>(), keys.data_ptr<float>(), keys.stride(0),
                           keys.stride(1), keys.stride(2), values.data_ptr<float>(), values.stride(0), values.stride(1),
                           values.stride(2), column);
  return query;
}

// Rows `ids` of a Q8_0 table held as q8_0_linear's records, de-quantized: [..., in_features] float32 (the
// input embedding, read from the tied LM head's table).
at::Tensor q8_0_rows(const at::Tensor& packed, const at::Tensor& ids) {
  TORCH_CHECK(packed.dim() == 3 && packed.scalar_type() == at::kByte && packed.size(2) == kQ80Bytes && packed.is_contiguous(),
              "q8_0_rows: packed weights must be contiguous uint8 [panels, blocks, 544]");
  const at::Tensor flat = ids.reshape(-1).to(at::kLong).contiguous();
  const int64_t n = flat.numel(), panels = packed.size(0), blocks = packed.size(1), width = blocks * kBlock;
  at::Tensor out = at::empty({n, width}, packed.options().dtype(at::kFloat));
  const int64_t* id = flat.data_ptr<int64_t>();
  const uint8_t* w = packed.data_ptr<uint8_t>();
  float* dst = out.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(id[i] >= 0 && id[i] < panels * kPanel, "q8_0_rows: id ", id[i], " out of range");
    const int64_t panel = id[i] / kPanel, lane = id[i] % kPanel;
    for (int64_t j = 0; j < blocks; ++j) {
      const uint8_t* record = w + (panel * blocks + j) * kQ80Bytes;
      const float d = static_cast<float>(reinterpret_cast<const at::Half*>(record + 512)[lane]);
      for (int64_t k = 0; k < kBlock; ++k)
        dst[i * width + j * kBlock + k] = static_cast<float>(static_cast<int8_t>(record[k * kPanel + lane])) * d;
    }
  }
  std::vector<int64_t> shape(ids.sizes().begin(), ids.sizes().end());
  shape.push_back(width);
  return out.view(shape);
}

}  // namespace

TORCH_LIBRARY(sluice, m) {
  m.def("q4_1_linear(Tensor x, Tensor packed) -> Tensor");
  m.def("q8_0_linear(Tensor x, Tensor packed) -> Tensor");
  m.def("q8_0_rows(Tensor packed, Tensor ids) -> Tensor");
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("decode_attention(Tensor query, Tensor keys, Tensor values, Tensor? mask) -> Tensor");
  m.def("rope_write_kv(Tensor qkv, Tensor cos, Tensor sin, Tensor(a!) keys, Tensor(b!) values, int column, int heads, "
        "int kv_heads) -> Tensor");
}

TORCH_LIBRARY_IMPL(sluice, CPU, m) {
  m.impl("q4_1_linear", &q4_1_linear);
  m.impl("q8_0_linear", &q8_0_linear);
  m.impl("q8_0_rows", &q8_0_rows);
  m.impl("rms_norm", &rms_norm);
  m.impl("decode_attention", &decode_attention);
  m.impl("rope_write_kv", &rope_write_kv);
}
