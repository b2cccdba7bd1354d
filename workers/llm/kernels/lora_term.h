// The LoRA term of a projection for a few rows that each use their own adapters, shared by the
// stand-alone kernel (lora_delta.cc) and the 4-bit matmuls that add it in the same call
// (quantized_matmul.cc):
//   y[m] += sum_j weight[m, j] * (x[m] @ A[layer, slot[m, j]]) @ B[layer, slot[m, j]]
//
// Slot table layout (the engine's, see workers/llm/model.py: init_lora_state):
//   a      [L, S, K, R]   slot s of layer l: the adapter's A, transposed
//   b      [L, S, R, N]   with the adapter's alpha / r scaling folded in
//   float32 or bfloat16 (half the bytes: a decode batch of 16 rows on 16 adapters is bound by
//   reading them), computed in float32; or int8 (a quarter), in pairs:
//   a      [L, S, K/2, R, 2]   inputs 2i and 2i + 1 of rank c side by side
//   b      [L, S, R/2, N, 2]   ranks 2c and 2c + 1 of output o side by side
//   scale  [L, S, R]           float32: rank c's A column and B row are int8 multiples of their
//                              own steps, and scale is the product of the two (lora.py:
//                              quantize_slot_arrays)
//   computed in integers: x (per row) and the rank vector h go to 16-bit integers, and one
//   16-bit multiply-add (vpmaddwd, or AVX512-VNNI's vpdpwssd) takes a pair of the sum's terms
//   per 32-bit lane, 2 instructions per 32 products where widening int8 to float32 for FMAs
//   took 4 per 16.
// Slot 0 means "no adapter"; it and zero weights cost nothing.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "simd.h"
#include "xla/ffi/api/ffi.h"

namespace liminal::lora {

// Float adapter weights are float32 or bfloat16 (uint16_t here: the upper half of a float32).
inline float to_float(float v) { return v; }
inline float to_float(uint16_t v) {
  const uint32_t bits = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

#if defined(LIMINAL_SIMD)
struct Vec : simd::Floats {  // the slots' 16-bit format is bfloat16
  using Floats::load;
  static T load(const uint16_t* a) { return load_bf16(a); }
};

#endif

#if defined(__AVX512F__)
// h[16] = x[K] @ A[K, 16] for bfloat16 A (K even): one 64-byte load holds inputs i and i + 1,
// split into even and odd ranks by a shift and a mask (instead of two widenings and two
// shifts) and multiplied by x[i] in the low half and x[i + 1] in the high half.
inline void down_project_rank16_bf16_avx512(const float* __restrict x,
                                            const uint16_t* __restrict a, int64_t k,
                                            float* __restrict h) {
  const __m512i high_half = _mm512_set1_epi32(int32_t(0xFFFF0000u));
  __m512 even0 = _mm512_setzero_ps(), odd0 = even0, even1 = even0, odd1 = even0;
  auto pair = [&](int64_t i, __m512& even, __m512& odd) {
    const __m512i v = _mm512_loadu_si512(a + i * 16);
    const __m512 xx = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(x[i])),
                                         _mm256_set1_ps(x[i + 1]), 1);
    even = _mm512_fmadd_ps(xx, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), even);
    odd = _mm512_fmadd_ps(xx, _mm512_castsi512_ps(_mm512_and_si512(v, high_half)), odd);
  };
  int64_t i = 0;
  for (; i + 3 < k; i += 4) {
    pair(i, even0, odd0);
    pair(i + 2, even1, odd1);
  }
  for (; i + 1 < k; i += 2) pair(i, even0, odd0);
  const __m512 even = _mm512_add_ps(even0, even1), odd = _mm512_add_ps(odd0, odd1);
  // Lanes j and j + 8 hold rank 2j (even) or 2j + 1 (odd) of inputs i and i + 1: add the
  // halves, then interleave even and odd ranks.
  const __m256 e = _mm256_add_ps(_mm512_castps512_ps256(even), _mm512_extractf32x8_ps(even, 1));
  const __m256 o = _mm256_add_ps(_mm512_castps512_ps256(odd), _mm512_extractf32x8_ps(odd, 1));
  const __m512i interleave = _mm512_set_epi32(15, 7, 14, 6, 13, 5, 12, 4, 11, 3, 10, 2, 9, 1, 8, 0);
  _mm512_storeu_ps(h, _mm512_permutexvar_ps(
                          interleave, _mm512_insertf32x8(_mm512_castps256_ps512(e), o, 1)));
}
#endif

// h[R] = x[K] @ A[K, R]
template <class W>
void down_project(const float* __restrict x, const W* __restrict a, int64_t k, int64_t r,
                  float* __restrict h) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<W, uint16_t>) {
    if (r == 16 && k % 2 == 0) return down_project_rank16_bf16_avx512(x, a, k, h);
  }
#endif
#if defined(LIMINAL_SIMD)
  if (r % Vec::kWidth == 0) {
    for (int64_t c = 0; c < r; c += Vec::kWidth) {
      // Four accumulators so that the FMA latency does not serialise the loop over inputs.
      typename Vec::T acc0 = Vec::zero(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
      int64_t i = 0;
      for (; i + 3 < k; i += 4) {
        acc0 = Vec::fma(Vec::broadcast(x[i]), Vec::load(a + i * r + c), acc0);
        acc1 = Vec::fma(Vec::broadcast(x[i + 1]), Vec::load(a + (i + 1) * r + c), acc1);
        acc2 = Vec::fma(Vec::broadcast(x[i + 2]), Vec::load(a + (i + 2) * r + c), acc2);
        acc3 = Vec::fma(Vec::broadcast(x[i + 3]), Vec::load(a + (i + 3) * r + c), acc3);
      }
      for (; i < k; ++i) acc0 = Vec::fma(Vec::broadcast(x[i]), Vec::load(a + i * r + c), acc0);
      Vec::store(h + c, Vec::add(Vec::add(acc0, acc1), Vec::add(acc2, acc3)));
    }
    return;
  }
#endif
  for (int64_t c = 0; c < r; ++c) h[c] = 0.0f;
  for (int64_t i = 0; i < k; ++i) {
    const float xi = x[i];
    const W* row = a + i * r;
    for (int64_t c = 0; c < r; ++c) h[c] += xi * to_float(row[c]);
  }
}

#if defined(__AVX512F__)
// y[0:columns] += h[R] @ B[R, 0:columns] for bfloat16 B (rows `stride` apart), 32 outputs at a time:
// one 64-byte load holds 32 weights of a rank, split into its even and odd outputs by a shift
// and a mask (2 operations per 32 weights instead of 2 widenings and 2 shifts), accumulated in
// registers over the ranks and interleaved back once per 32 outputs.
inline int64_t up_project_bf16_avx512(const float* __restrict h, const uint16_t* __restrict b,
                                      int64_t r, int64_t stride, int64_t n, float* __restrict y) {
  const __m512i high_half = _mm512_set1_epi32(int32_t(0xFFFF0000u));
  const __m512i first = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i second = _mm512_add_epi32(first, _mm512_set1_epi32(8));
  int64_t o = 0;
  for (; o + 32 <= n; o += 32) {
    // Two accumulator pairs (even and odd ranks) so that the FMA latency does not serialise
    // the loop over ranks.
    __m512 even0 = _mm512_setzero_ps(), odd0 = even0, even1 = even0, odd1 = even0;
    int64_t c = 0;
    for (; c + 1 < r; c += 2) {
      const __m512i v0 = _mm512_loadu_si512(b + c * stride + o);
      const __m512i v1 = _mm512_loadu_si512(b + (c + 1) * stride + o);
      const __m512 h0 = _mm512_set1_ps(h[c]), h1 = _mm512_set1_ps(h[c + 1]);
      even0 = _mm512_fmadd_ps(h0, _mm512_castsi512_ps(_mm512_slli_epi32(v0, 16)), even0);
      odd0 = _mm512_fmadd_ps(h0, _mm512_castsi512_ps(_mm512_and_si512(v0, high_half)), odd0);
      even1 = _mm512_fmadd_ps(h1, _mm512_castsi512_ps(_mm512_slli_epi32(v1, 16)), even1);
      odd1 = _mm512_fmadd_ps(h1, _mm512_castsi512_ps(_mm512_and_si512(v1, high_half)), odd1);
    }
    if (c < r) {
      const __m512i v0 = _mm512_loadu_si512(b + c * stride + o);
      const __m512 h0 = _mm512_set1_ps(h[c]);
      even0 = _mm512_fmadd_ps(h0, _mm512_castsi512_ps(_mm512_slli_epi32(v0, 16)), even0);
      odd0 = _mm512_fmadd_ps(h0, _mm512_castsi512_ps(_mm512_and_si512(v0, high_half)), odd0);
    }
    const __m512 even = _mm512_add_ps(even0, even1), odd = _mm512_add_ps(odd0, odd1);
    _mm512_storeu_ps(y + o, _mm512_add_ps(_mm512_loadu_ps(y + o),
                                          _mm512_permutex2var_ps(even, first, odd)));
    _mm512_storeu_ps(y + o + 16, _mm512_add_ps(_mm512_loadu_ps(y + o + 16),
                                               _mm512_permutex2var_ps(even, second, odd)));
  }
  return o;
}
#endif

// y[0:n] += h[R] @ B[R, 0:n], B's rows `stride` apart (n of its columns)
template <class W>
void up_project(const float* __restrict h, const W* __restrict b, int64_t r, int64_t stride,
                int64_t n, float* __restrict y) {
  int64_t done = 0;  // outputs [0, done) handled by a specialised loop
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<W, uint16_t>) done = up_project_bf16_avx512(h, b, r, stride, n, y);
#endif
  for (int64_t c = 0; c < r && done < n; ++c) {
    const float hc = h[c];
    if (hc == 0.0f) continue;  // zero-padded ranks of smaller adapters
    const W* row = b + c * stride;
    int64_t o = done;
#if defined(LIMINAL_SIMD)
    const typename Vec::T scale = Vec::broadcast(hc);
    for (; o + Vec::kWidth <= n; o += Vec::kWidth)
      Vec::store(y + o, Vec::fma(scale, Vec::load(row + o), Vec::load(y + o)));
#endif
    for (; o < n; ++o) y[o] += hc * to_float(row[o]);
  }
}

// --- int8 tables in pairs --------------------------------------------------------------------

// q[0:n] = v / step rounded to nearest (even on ties), |q| <= limit, and returns step (0 for an
// all-zero v, q then 0). Vectorised: it runs per row and projection, and a scalar loop over
// the inputs took longer than the 16-bit products it feeds.
inline float quantize_to_int16(const float* __restrict v, int64_t n, int32_t limit,
                               int16_t* __restrict q) {
  float largest = 0.0f;
  int64_t i = 0;
#if defined(__AVX512F__)
  __m512 top = _mm512_setzero_ps();
  for (; i + 16 <= n; i += 16) top = _mm512_max_ps(top, _mm512_abs_ps(_mm512_loadu_ps(v + i)));
  largest = _mm512_reduce_max_ps(top);
#endif
  for (; i < n; ++i) largest = std::max(largest, std::fabs(v[i]));
  if (largest == 0.0f) {
    std::fill(q, q + n, int16_t{0});
    return 0.0f;
  }
  const float inverse = float(limit) / largest;
  i = 0;
#if defined(__AVX512F__)
  const __m512 inverse16 = _mm512_set1_ps(inverse);
  for (; i + 16 <= n; i += 16)  // |v · inverse| <= limit: the narrowing never saturates
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i),
                        _mm512_cvtepi32_epi16(_mm512_cvtps_epi32(
                            _mm512_mul_ps(_mm512_loadu_ps(v + i), inverse16))));
#endif
  for (; i < n; ++i) q[i] = int16_t(std::nearbyint(v[i] * inverse));
  return largest / float(limit);
}

// The largest |x| step count for which a sum of k products of x and int8 values stays within
// int32: 16-bit integers up to k = 516, fewer bits beyond (13 for 1536 inputs, 11 for 8192).
inline int32_t input_limit(int64_t k) {
  return int32_t(std::min<int64_t>(32767, std::max<int64_t>(1, 2147483647 / (127 * std::max<int64_t>(k, 1)))));
}

inline int32_t load_pair(const int16_t* p) {  // two 16-bit integers as one 32-bit lane
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Vectors of 32-bit lanes that each hold a pair of 16-bit integers, for the int8 pair loops:
// 16 lanes with AVX-512BW, 8 with AVX2.
#if defined(__AVX512BW__)
struct Pairs512 {
  using T = __m512i;
  static constexpr int64_t kLanes = 16;
  static T zero() { return _mm512_setzero_si512(); }
  static T broadcast(const int16_t* pair) { return _mm512_set1_epi32(load_pair(pair)); }
  static T widen(const int8_t* p) {  // 2 * kLanes int8 → int16
    return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static T add_products(T acc, T a, T b) {  // acc + each lane's two 16-bit products
#if defined(__AVX512VNNI__)
    return _mm512_dpwssd_epi32(acc, a, b);
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(a, b));
#endif
  }
  static T add(T a, T b) { return _mm512_add_epi32(a, b); }
  static void store(int32_t* out, T v) { _mm512_storeu_si512(out, v); }
  static void add_scaled(float* y, T sum, float step) {  // y += sum · step
    _mm512_storeu_ps(y, _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(step),
                                        _mm512_loadu_ps(y)));
  }
};
#endif
#if defined(__AVX2__)
struct Pairs256 {
  using T = __m256i;
  static constexpr int64_t kLanes = 8;
  static T zero() { return _mm256_setzero_si256(); }
  static T broadcast(const int16_t* pair) { return _mm256_set1_epi32(load_pair(pair)); }
  static T widen(const int8_t* p) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static T add_products(T acc, T a, T b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)); }
  static T add(T a, T b) { return _mm256_add_epi32(a, b); }
  static void store(int32_t* out, T v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), v); }
  static void add_scaled(float* y, T sum, float step) {
    _mm256_storeu_ps(y, _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(step),
                                        _mm256_loadu_ps(y)));
  }
};
#endif

// down_project_pairs' ranks [c, ...) in whole vectors of P; returns where they end.
template <class P>
int64_t down_project_pair_vectors(const int16_t* __restrict xq, const int8_t* __restrict a,
                                  int64_t k, int64_t r, int32_t* __restrict acc, int64_t c) {
  const int64_t pairs = k / 2;
  for (; c + P::kLanes <= r; c += P::kLanes) {
    typename P::T s0 = P::zero(), s1 = s0;  // two chains: the adds' latency
    int64_t p = 0;
    for (; p + 1 < pairs; p += 2) {
      s0 = P::add_products(s0, P::widen(a + (p * r + c) * 2), P::broadcast(xq + 2 * p));
      s1 = P::add_products(s1, P::widen(a + ((p + 1) * r + c) * 2), P::broadcast(xq + 2 * p + 2));
    }
    if (p < pairs) s0 = P::add_products(s0, P::widen(a + (p * r + c) * 2), P::broadcast(xq + 2 * p));
    P::store(acc + c, P::add(s0, s1));
  }
  return c;
}

// acc[c] = sum_i xq[i] * A[i, c], A [K/2, R, 2] (k even)
inline void down_project_pairs(const int16_t* __restrict xq, const int8_t* __restrict a,
                               int64_t k, int64_t r, int32_t* __restrict acc) {
  int64_t c = 0;
#if defined(__AVX512BW__)
  c = down_project_pair_vectors<Pairs512>(xq, a, k, r, acc, c);
#endif
#if defined(__AVX2__)
  c = down_project_pair_vectors<Pairs256>(xq, a, k, r, acc, c);
#endif
  const int64_t pairs = k / 2;
  for (; c < r; ++c) {
    int32_t sum = 0;
    for (int64_t p = 0; p < pairs; ++p)
      sum += int32_t(xq[2 * p]) * a[(p * r + c) * 2] + int32_t(xq[2 * p + 1]) * a[(p * r + c) * 2 + 1];
    acc[c] = sum;
  }
}

// up_project_pairs' outputs in whole vectors of P, four vectors at a time while they last;
// returns where they end.
template <class P>
int64_t up_project_pair_vectors(const int16_t* __restrict hq, float step,
                                const int8_t* __restrict b, int64_t rank_pairs, int64_t stride,
                                int64_t n, float* __restrict y) {
  constexpr int64_t L = P::kLanes;
  int64_t o = 0;
  for (; o + 4 * L <= n; o += 4 * L) {  // four accumulators of outputs over the ranks
    typename P::T s0 = P::zero(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t c = 0; c < rank_pairs; ++c) {
      const int8_t* row = b + (c * stride + o) * 2;
      const typename P::T h = P::broadcast(hq + 2 * c);
      s0 = P::add_products(s0, P::widen(row), h);
      s1 = P::add_products(s1, P::widen(row + 2 * L), h);
      s2 = P::add_products(s2, P::widen(row + 4 * L), h);
      s3 = P::add_products(s3, P::widen(row + 6 * L), h);
    }
    P::add_scaled(y + o, s0, step);
    P::add_scaled(y + o + L, s1, step);
    P::add_scaled(y + o + 2 * L, s2, step);
    P::add_scaled(y + o + 3 * L, s3, step);
  }
  for (; o + L <= n; o += L) {
    typename P::T s0 = P::zero();
    for (int64_t c = 0; c < rank_pairs; ++c)
      s0 = P::add_products(s0, P::widen(b + (c * stride + o) * 2), P::broadcast(hq + 2 * c));
    P::add_scaled(y + o, s0, step);
  }
  return o;
}

// y[o] += step * sum_c hq[c] * B[c, o] for o in [0, n), over ranks [0, 2 * rank_pairs), B
// [R/2, N, 2] with N = stride (n of its outputs)
inline void up_project_pairs(const int16_t* __restrict hq, float step, const int8_t* __restrict b,
                             int64_t rank_pairs, int64_t stride, int64_t n, float* __restrict y) {
  int64_t o = 0;
#if defined(__AVX512BW__)
  o = up_project_pair_vectors<Pairs512>(hq, step, b, rank_pairs, stride, n, y);
#elif defined(__AVX2__)
  o = up_project_pair_vectors<Pairs256>(hq, step, b, rank_pairs, stride, n, y);
#endif
  for (; o < n; ++o) {
    int32_t sum = 0;
    for (int64_t c = 0; c < rank_pairs; ++c)
      sum += int32_t(hq[2 * c]) * b[(c * stride + o) * 2] +
             int32_t(hq[2 * c + 1]) * b[(c * stride + o) * 2 + 1];
    y[o] += step * float(sum);
  }
}

// One projection's slot table at one layer.
template <class W>
struct Target {
  const W* a;  // [S, K, R]
  const W* b;  // [S, R, N]
  int64_t slots, k, r, n;
  const float* scale = nullptr;  // [S, R] for int8 tables, else none
};

// Whether tables read as Target<W> are int8 in pairs with a scale per rank (see the top).
template <class W>
constexpr bool kScaled = std::is_same_v<W, int8_t>;

// Each row's adapters: slot [M, J] (0 = none) and weight [M, J].
struct RowAdapters {
  const int32_t* slot;
  const float* weight;
  int64_t j;
  bool used(int64_t m, int64_t t, int64_t slots) const {
    const int64_t s = slot[m * j + t];
    return s > 0 && s < slots && weight[m * j + t] != 0.0f;
  }
};

// add_rows for int8 tables (in pairs, see the top): x's row and then each rank vector go to
// 16-bit integers with a step of their own, the products are summed in int32.
inline void add_rows_in_pairs(const Target<int8_t>& t, const float* x, const RowAdapters& rows,
                              float* y, int64_t y_stride, int64_t begin, int64_t end,
                              int64_t o_begin, int64_t o_end) {
  // Per thread (rows run in XLA's pool), reused across calls: this runs per row and projection.
  thread_local struct {
    std::vector<int16_t> xq, hq;
    std::vector<int32_t> acc;
    std::vector<float> h;
  } buffers;
  buffers.xq.resize(t.k);
  buffers.hq.resize(t.r);
  buffers.acc.resize(t.r);
  buffers.h.resize(t.r);
  int16_t* const xq = buffers.xq.data();
  int16_t* const hq = buffers.hq.data();
  int32_t* const acc = buffers.acc.data();
  float* const h = buffers.h.data();
  const int32_t limit = input_limit(t.k);
  for (int64_t m = begin; m < end; ++m) {
    float x_step = -1.0f;  // x's row is quantized once, for its first adapter
    for (int64_t u = 0; u < rows.j; ++u) {
      if (!rows.used(m, u, t.slots)) continue;
      if (x_step < 0) x_step = quantize_to_int16(x + m * t.k, t.k, limit, xq);
      if (x_step == 0.0f) break;  // a zero row: every term is zero
      const int64_t s = rows.slot[m * rows.j + u];
      down_project_pairs(xq, t.a + s * t.k * t.r, t.k, t.r, acc);
      const float factor = x_step * rows.weight[m * rows.j + u];
      const float* scale = t.scale + s * t.r;
      int64_t rank = 0;  // ranks past the last non-zero one (zero-padded ones) are skipped
      for (int64_t c = 0; c < t.r; ++c) {
        h[c] = float(acc[c]) * factor * scale[c];
        if (h[c] != 0.0f) rank = c + 1;
      }
      const int64_t rank_pairs = (rank + 1) / 2;  // t.r is even, so h[2 * rank_pairs - 1] exists
      const float h_step = quantize_to_int16(h, 2 * rank_pairs, 32767, hq);
      if (h_step == 0.0f) continue;
      up_project_pairs(hq, h_step, t.b + s * t.r * t.n + o_begin * 2, rank_pairs, t.n,
                       o_end - o_begin, y + m * y_stride + o_begin);
    }
  }
}

// add_rows for float32 and bfloat16 tables.
template <class W>
void add_rows_in_floats(const Target<W>& t, const float* x, const RowAdapters& rows, float* y,
                        int64_t y_stride, int64_t begin, int64_t end, int64_t o_begin,
                        int64_t o_end) {
  // On the stack for the usual ranks: this runs per row and projection, thousands of times
  // per decode step.
  float stack_h[64];
  std::vector<float> heap_h(t.r > 64 ? t.r : 0);
  float* const h = t.r > 64 ? heap_h.data() : stack_h;
  for (int64_t m = begin; m < end; ++m) {
    for (int64_t u = 0; u < rows.j; ++u) {
      if (!rows.used(m, u, t.slots)) continue;
      const int64_t s = rows.slot[m * rows.j + u];
      down_project(x + m * t.k, t.a + s * t.k * t.r, t.k, t.r, h);
      for (int64_t c = 0; c < t.r; ++c) h[c] *= rows.weight[m * rows.j + u];
      int64_t rank = t.r;  // an adapter of a smaller rank than the table's is zero-padded
      while (rank > 0 && h[rank - 1] == 0.0f) --rank;
      up_project(h, t.b + s * t.r * t.n + o_begin, rank, t.n, o_end - o_begin,
                 y + m * y_stride + o_begin);
    }
  }
}

// y[m, o] += the term of rows m in [begin, end), outputs o in [o_begin, o_end) (none when
// o_begin >= o_end); x rows are K apart, y rows y_stride apart (so y may be a column range of a
// wider output). A part of the outputs still costs the whole down-projection (x A), but only
// its columns of B.
template <class W>
void add_rows_in_columns(const Target<W>& t, const float* x, const RowAdapters& rows, float* y,
                         int64_t y_stride, int64_t begin, int64_t end, int64_t o_begin,
                         int64_t o_end) {
  if (o_begin >= o_end) return;
  if constexpr (std::is_same_v<W, int8_t>) {
    add_rows_in_pairs(t, x, rows, y, y_stride, begin, end, o_begin, o_end);
  } else {
    add_rows_in_floats(t, x, rows, y, y_stride, begin, end, o_begin, o_end);
  }
}

// y[m, 0:N] += the term of rows [begin, end) (see add_rows_in_columns).
template <class W>
void add_rows(const Target<W>& t, const float* x, const RowAdapters& rows, float* y,
              int64_t y_stride, int64_t begin, int64_t end) {
  add_rows_in_columns(t, x, rows, y, y_stride, begin, end, 0, t.n);
}

// The cache lines of the slots that rows [0, M) use, so that a compute-bound kernel running
// before the LoRA term can pull them in while it works (prefetch instructions interleaved with
// its arithmetic): reading 16 adapters' slots from memory otherwise stalls the LoRA term for
// longer than it computes.
class SlotLines {
 public:
  // Row by row (each row's targets together), so that the first share of the lines is the
  // first rows' slots: a kernel that splits both its prefetching and the LoRA term's rows
  // into shares in order leaves each thread's rows in its own core's cache.
  template <class W>
  void add(const std::vector<Target<W>>& targets, const RowAdapters& rows, int64_t m) {
    std::vector<std::vector<bool>> seen;
    for (const auto& t : targets) seen.emplace_back(t.slots, false);
    row_ranges_.assign(1, 0);
    for (int64_t row = 0; row < m; ++row, row_ranges_.push_back(ranges_.size())) {
      for (size_t i = 0; i < targets.size(); ++i) {
        const Target<W>& t = targets[i];
        for (int64_t u = 0; u < rows.j; ++u) {
          if (!rows.used(row, u, t.slots)) continue;
          const int64_t s = rows.slot[row * rows.j + u];
          if (seen[i][s]) continue;
          seen[i][s] = true;
          range(t.a + s * t.k * t.r, t.k * t.r * sizeof(W));
          range(t.b + s * t.r * t.n, t.r * t.n * sizeof(W));
          if (t.scale != nullptr) range(t.scale + s * t.r, t.r * sizeof(float));
        }
      }
    }
  }
  struct Range {
    const char* start;  // 64-byte aligned
    int64_t lines;
  };
  // The ranges of rows [begin, end) (of the rows given to `add`): [first, last).
  std::pair<const Range*, const Range*> rows(int64_t begin, int64_t end) const {
    return {ranges_.data() + row_ranges_[begin], ranges_.data() + row_ranges_[end]};
  }

 private:
  void range(const void* begin, int64_t bytes) {
    const uintptr_t first = reinterpret_cast<uintptr_t>(begin) & ~uintptr_t(63);
    const uintptr_t last = (reinterpret_cast<uintptr_t>(begin) + bytes + 63) & ~uintptr_t(63);
    ranges_.push_back({reinterpret_cast<const char*>(first), int64_t(last - first) / 64});
  }
  std::vector<Range> ranges_;
  std::vector<size_t> row_ranges_;  // row i's ranges: [row_ranges_[i], row_ranges_[i + 1])
};

// Reads the slot tables passed after a kernel's fixed arguments, at `layer`: one (A, B) pair
// per target, A [L, S, K, R] and B [L, S, R, N_t], all float32 or all bfloat16 (W = float or
// uint16_t), or one (A, B, scale) triple per target for int8 tables (W = int8_t): A
// [L, S, K/2, R, 2], B [L, S, R/2, N_t, 2] and scale [L, S, R] float32 (see the top). The N_t
// must add up to `n` (the targets' outputs side by side).
template <class W>
xla::ffi::Error read_targets(const xla::ffi::RemainingArgs& args, int64_t layer, int64_t k,
                             int64_t n, std::vector<Target<W>>& targets) {
  namespace ffi = xla::ffi;
  constexpr size_t per_target = kScaled<W> ? 3 : 2;
  if (args.size() % per_target)
    return ffi::Error::InvalidArgument(kScaled<W> ? "lora: int8 slot tables come as (A, B, scale) triples"
                                                  : "lora: slot tables come as (A, B) pairs");
  int64_t width = 0;
  for (size_t i = 0; i < args.size(); i += per_target) {
    auto a = args.get<ffi::AnyBuffer>(i);
    auto b = args.get<ffi::AnyBuffer>(i + 1);
    if (!a.has_value() || !b.has_value()) return ffi::Error::InvalidArgument("lora: bad slot table");
    const auto ad = a->dimensions(), bd = b->dimensions();
    const size_t dims = kScaled<W> ? 5 : 4;
    if (ad.size() != dims || bd.size() != dims || (kScaled<W> && (ad[4] != 2 || bd[4] != 2)))
      return ffi::Error::InvalidArgument(
          kScaled<W> ? "lora: int8 tables are A [L, S, K/2, R, 2] and B [L, S, R/2, N, 2]"
                     : "lora: A [L, S, K, R] and B [L, S, R, N] disagree");
    // [L, S, K, R] and [L, S, R, N], as float tables have them (int8 ones pair K and R)
    const int64_t pair = kScaled<W> ? 2 : 1;
    const int64_t a_dims[4] = {ad[0], ad[1], ad[2] * pair, ad[3]};
    const int64_t b_dims[4] = {bd[0], bd[1], bd[2] * pair, bd[3]};
    if (a_dims[0] != b_dims[0] || a_dims[1] != b_dims[1] || a_dims[3] != b_dims[2] ||
        a_dims[2] != k)
      return ffi::Error::InvalidArgument("lora: A [L, S, K, R] and B [L, S, R, N] disagree");
    if (layer < 0 || layer >= a_dims[0])
      return ffi::Error::InvalidArgument("lora: layer out of range");
    const int64_t slots = a_dims[1], r = a_dims[3], n_t = b_dims[3];
    const float* scale = nullptr;
    if constexpr (kScaled<W>) {
      auto s = args.get<ffi::AnyBuffer>(i + 2);
      if (!s.has_value()) return ffi::Error::InvalidArgument("lora: bad slot table");
      const auto sd = s->dimensions();
      if (sd.size() != 3 || sd[0] != a_dims[0] || sd[1] != slots || sd[2] != r)
        return ffi::Error::InvalidArgument("lora: the scale of an int8 table is not [L, S, R]");
      scale = reinterpret_cast<const float*>(s->untyped_data()) + layer * slots * r;
    }
    const W* a_data = reinterpret_cast<const W*>(a->untyped_data());
    const W* b_data = reinterpret_cast<const W*>(b->untyped_data());
    targets.push_back({a_data + layer * slots * k * r, b_data + layer * slots * r * n_t, slots, k,
                       r, n_t, scale});
    width += n_t;
  }
  if (width != n) return ffi::Error::InvalidArgument("lora: the targets' outputs do not add up to N");
  return ffi::Error::Success();
}

// The element type of the slot tables in `args`: F32 or BF16 (every operand of that type), S8
// ((A, B, scale) triples: S8, S8, F32), or an error.
inline xla::ffi::ErrorOr<xla::ffi::DataType> slot_type(const xla::ffi::RemainingArgs& args) {
  namespace ffi = xla::ffi;
  if (args.size() == 0) return ffi::DataType::F32;
  std::optional<ffi::DataType> type;
  for (size_t i = 0; i < args.size(); ++i) {
    auto buffer = args.get<ffi::AnyBuffer>(i);
    if (!buffer.has_value()) return ffi::Error::InvalidArgument("lora: bad slot table");
    if (!type) {
      type = buffer->element_type();
      if (*type != ffi::DataType::F32 && *type != ffi::DataType::BF16 && *type != ffi::DataType::S8)
        return ffi::Error::InvalidArgument("lora: slot tables must be float32, bfloat16 or int8");
    }
    const bool scale = *type == ffi::DataType::S8 && i % 3 == 2;
    if (buffer->element_type() != (scale ? ffi::DataType::F32 : *type))
      return ffi::Error::InvalidArgument("lora: slot tables of mixed dtypes");
  }
  return *type;
}

}  // namespace liminal::lora
