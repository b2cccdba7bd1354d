// Causal attention of a few query rows over the KV cache, read in place: the attention of the
// decode and verify steps of workers/llm.
//
// Why a kernel: XLA:CPU slices every layer's cache window out of the scan carry and runs the
// grouped-query einsums as many tiny batched dots, so a decode step of 16 rows spent 9 ms in
// attention at 128 cached positions and 26 ms at 512 (the keys and values it reads take about
// 1 ms and 3.5 ms). Here each query reads the keys and values of its own row up to its own
// position, once, straight from the cache.
//
// Layout (workers/llm/model.py):
//   q          float [B, T, H, D]        queries after RoPE; head h reads KV head h / (H / KVH)
//   cache_k/v  [L, S, KVH, M, D]         the cache, already holding this step's keys and values:
//                                        float32, or float16 (target LiminalAttentionF16)
//   slot       int32 [B]                 each row's cache slot
//   position   int32 [B, T]              each query's absolute position: it sees keys [0, pos]
//   layer      int32 scalar
//   scale      attribute: the score scale (1 / sqrt(D))
//   -> out     float [B, T, H, D]
// A query whose position is negative (a padding row) gets zeros. Softmax runs in float32 with
// its maximum subtracted, as jax.nn.softmax does. (row, KV head) pairs are split across XLA's
// intra-op thread pool.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "parallel.h"
#include "simd.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

template <class C>
struct AttentionProblem {
  const float* q;
  const C* k;  // [S, KVH, M, D] of the chosen layer
  const C* v;
  const int32_t* slot;
  const int32_t* position;
  float* out;
  int64_t t, heads, kv_heads, max_len, dim, slots;
  float scale;
};

#if defined(LIMINAL_SIMD)
struct Vec : liminal::simd::Floats {  // the cache's 16-bit format is float16
  using Floats::load;
  static T load(const uint16_t* a) { return load_f16(a); }
#if defined(__AVX512F__)
  // exp(x) for x <= 0 (scores minus their maximum): 2^n * p(r), r = x - n ln2 in [-ln2/2, ln2/2],
  // p a degree-6 polynomial (Cephes' expf coefficients, ~1 ulp). Below -87, 0.
  static T exp(T x) {
    const T low = _mm512_set1_ps(-87.0f);
    const __mmask16 underflow = _mm512_cmp_ps_mask(x, low, _CMP_LT_OQ);
    x = _mm512_max_ps(x, low);
    const T n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    T r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    T p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n),
                                                            _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mul_ps(~underflow, p, _mm512_castsi512_ps(bits));
  }
#else
  static T exp(T x) {  // as the AVX-512 version
    const T low = _mm256_set1_ps(-87.0f);
    const T underflow = _mm256_cmp_ps(x, low, _CMP_LT_OQ);
    x = _mm256_max_ps(x, low);
    const T n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    T r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    T p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n),
                                                            _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)));
  }
#endif
};
#endif

// The cache holds float32 or float16 (uint16_t here).
inline float to_float(float v) { return v; }
inline float to_float(uint16_t h) {  // IEEE half to float, subnormals included
  const uint32_t sign = uint32_t(h & 0x8000) << 16, exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(float(mantissa), -24);
  } else if (exponent == 31) {
    magnitude = mantissa ? NAN : INFINITY;
  } else {
    magnitude = std::ldexp(float(mantissa | 0x400), int(exponent) - 25);
  }
  uint32_t bits;
  std::memcpy(&bits, &magnitude, sizeof bits);
  bits |= sign;
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

template <class C>
float dot(const float* a, const C* b, int64_t n) {
#if defined(LIMINAL_SIMD)
  if (n % Vec::kWidth == 0) {
    typename Vec::T acc = Vec::zero();
    for (int64_t i = 0; i < n; i += Vec::kWidth) acc = Vec::fma(Vec::load(a + i), Vec::load(b + i), acc);
    return Vec::sum(acc);
  }
#endif
  float total = 0.0f;
  for (int64_t i = 0; i < n; ++i) total += a[i] * to_float(b[i]);
  return total;
}

// p[0, n) = exp(p - max), returning their sum.
float exp_minus_max(float* p, int64_t n, float max) {
  int64_t i = 0;
  float total = 0.0f;
#if defined(LIMINAL_SIMD)
  typename Vec::T sum = Vec::zero();
  const typename Vec::T shift = Vec::broadcast(max);
  for (; i + Vec::kWidth <= n; i += Vec::kWidth) {
    const typename Vec::T e = Vec::exp(Vec::sub(Vec::load(p + i), shift));
    Vec::store(p + i, e);
    sum = Vec::add(sum, e);
  }
  total = Vec::sum(sum);
#endif
  for (; i < n; ++i) {
    p[i] = std::exp(p[i] - max);
    total += p[i];
  }
  return total;
}

// out[D] = sum_s p[s] * v[s, D] / total
template <class C>
void weighted_values(const float* p, const C* v, int64_t n, int64_t dim, float total,
                     float* out) {
  const float inverse = 1.0f / total;
#if defined(LIMINAL_SIMD)
  if (dim % Vec::kWidth == 0 && dim <= 8 * Vec::kWidth) {
    typename Vec::T acc[8];
    const int64_t chunks = dim / Vec::kWidth;
    for (int64_t c = 0; c < chunks; ++c) acc[c] = Vec::zero();
    for (int64_t s = 0; s < n; ++s) {
      const typename Vec::T weight = Vec::broadcast(p[s]);
      const C* row = v + s * dim;
      for (int64_t c = 0; c < chunks; ++c) acc[c] = Vec::fma(weight, Vec::load(row + c * Vec::kWidth), acc[c]);
    }
    const typename Vec::T scale = Vec::broadcast(inverse);
    for (int64_t c = 0; c < chunks; ++c) Vec::store(out + c * Vec::kWidth, Vec::mul(acc[c], scale));
    return;
  }
#endif
  std::fill(out, out + dim, 0.0f);
  for (int64_t s = 0; s < n; ++s)
    for (int64_t d = 0; d < dim; ++d) out[d] += p[s] * to_float(v[s * dim + d]);
  for (int64_t d = 0; d < dim; ++d) out[d] *= inverse;
}

// Every query of row b that reads KV head h.
template <class C>
void attend(const AttentionProblem<C>& p, int64_t b, int64_t h, std::vector<float>& scores) {
  const int64_t group = p.heads / p.kv_heads, dim = p.dim;
  const int64_t slot = p.slot[b];
  const C* keys = p.k + ((slot * p.kv_heads + h) * p.max_len) * dim;
  const C* values = p.v + ((slot * p.kv_heads + h) * p.max_len) * dim;
  for (int64_t t = 0; t < p.t; ++t) {
    const int64_t position = std::min<int64_t>(p.position[b * p.t + t], p.max_len - 1);
    for (int64_t g = 0; g < group; ++g) {
      const int64_t head = h * group + g;
      const float* q = p.q + ((b * p.t + t) * p.heads + head) * dim;
      float* out = p.out + ((b * p.t + t) * p.heads + head) * dim;
      if (position < 0 || slot < 0 || slot >= p.slots) {
        std::fill(out, out + dim, 0.0f);
        continue;
      }
      const int64_t n = position + 1;
      float max = -INFINITY;
      for (int64_t s = 0; s < n; ++s) {
        scores[s] = dot(q, keys + s * dim, dim) * p.scale;
        max = std::max(max, scores[s]);
      }
      const float total = exp_minus_max(scores.data(), n, max);
      weighted_values(scores.data(), values, n, dim, total, out);
    }
  }
}

template <ffi::DataType T, class C>
ffi::Error AttentionImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q,
                         ffi::Buffer<T> cache_k, ffi::Buffer<T> cache_v,
                         ffi::Buffer<ffi::S32> slot, ffi::Buffer<ffi::S32> position,
                         ffi::Buffer<ffi::S32> layer, float scale,
                         ffi::ResultBuffer<ffi::F32> out) {
  const auto qd = q.dimensions(), kd = cache_k.dimensions(), vd = cache_v.dimensions();
  const auto sd = slot.dimensions(), pd = position.dimensions();
  if (qd.size() != 4 || kd.size() != 5 || vd.size() != 5 || sd.size() != 1 || pd.size() != 2)
    return ffi::Error::InvalidArgument("attention: bad ranks");
  for (int i = 0; i < 5; ++i)
    if (kd[i] != vd[i]) return ffi::Error::InvalidArgument("attention: cache k and v differ");
  const int64_t rows = qd[0], t = qd[1], heads = qd[2], dim = qd[3];
  const int64_t stack = kd[0], slots = kd[1], kv_heads = kd[2], max_len = kd[3];
  if (kd[4] != dim || heads % kv_heads)
    return ffi::Error::InvalidArgument("attention: q [B, T, H, D] does not fit the cache");
  if (sd[0] != rows || pd[0] != rows || pd[1] != t)
    return ffi::Error::InvalidArgument("attention: slot [B] and position [B, T] expected");
  const int64_t l = layer.typed_data()[0];
  if (l < 0 || l >= stack) return ffi::Error::InvalidArgument("attention: layer out of range");

  const int64_t per_layer = slots * kv_heads * max_len * dim;
  const AttentionProblem<C> p{q.typed_data(),
                              reinterpret_cast<const C*>(cache_k.untyped_data()) + l * per_layer,
                              reinterpret_cast<const C*>(cache_v.untyped_data()) + l * per_layer,
                              slot.typed_data(),
                           position.typed_data(), out->typed_data(), t, heads, kv_heads,
                           max_len, dim, slots, scale};
  liminal::run_in_shares(pool, rows * kv_heads, pool.num_threads(), [&p](int64_t begin, int64_t end) {
    std::vector<float> scores(p.max_len);
    for (int64_t i = begin; i < end; ++i) attend(p, i / p.kv_heads, i % p.kv_heads, scores);
  });
  return ffi::Error::Success();
}

}  // namespace

#define LIMINAL_ATTENTION_HANDLER(name, type, storage)                    \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, (AttentionImpl<type, storage>),    \
                                ffi::Ffi::Bind()                        \
                                    .Ctx<ffi::ThreadPool>()             \
                                    .Arg<ffi::Buffer<ffi::F32>>()       \
                                    .Arg<ffi::Buffer<type>>()           \
                                    .Arg<ffi::Buffer<type>>()           \
                                    .Arg<ffi::Buffer<ffi::S32>>()       \
                                    .Arg<ffi::Buffer<ffi::S32>>()       \
                                    .Arg<ffi::Buffer<ffi::S32>>()       \
                                    .Attr<float>("scale")               \
                                    .Ret<ffi::Buffer<ffi::F32>>());

LIMINAL_ATTENTION_HANDLER(LiminalAttention, ffi::F32, float)
LIMINAL_ATTENTION_HANDLER(LiminalAttentionF16, ffi::F16, uint16_t)
