// The LoRA term of a projection for a few rows that each use their own adapters:
//   y[m] = sum_j weight[m, j] * (x[m] @ A[layer, slot[m, j]]) @ B[layer, slot[m, j]]
//
// Why a kernel: in a decode batch every row may name a different adapter. XLA:CPU evaluates the
// per-row gather of adapter slots by copying each gathered [in, r] and [r, out] slice before the
// small dots, so 16 rows on 16 adapters moved every adapter's bytes three times per step and made
// LoRA batches far slower than base ones. Here each (row, adapter) pair reads its slot in place,
// once, and slot 0 ("no adapter") or a zero weight costs nothing.
//
// Layout (the engine's slot table, see workers/llm/model.py: init_lora_state):
//   x      float [M, K]
//   a      [L, S, K, R]   slot s of layer l: the adapter's A, transposed
//   b      [L, S, R, N]   with the adapter's alpha / r scaling folded in
//          (a and b float32, or bfloat16: the target LiminalLoraDeltaBf16; half the bytes,
//          and a decode batch of 16 rows on 16 adapters is bound by reading them)
//   slot   int32 [M, J], weight float [M, J]: each row's adapters (slot 0 = none)
//   layer  int32 scalar
//   -> y   float [M, N]
// Rows are split across XLA's intra-op thread pool.

#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Adapter weights are float32 or bfloat16 (uint16_t here: the upper half of a float32).
inline float to_float(float v) { return v; }
inline float to_float(uint16_t v) {
  const uint32_t bits = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

template <class W>
struct LoraProblem {
  const float* x;
  const W* a;  // [S, K, R] of the chosen layer
  const W* b;  // [S, R, N] of the chosen layer
  const int32_t* slot;
  const float* weight;
  float* y;
  int64_t k, r, n, j, slots;
};

#if defined(__AVX512F__)
struct Vec {  // 16 floats
  using T = __m512;
  static constexpr int kWidth = 16;
  static T zero() { return _mm512_setzero_ps(); }
  static T load(const float* a) { return _mm512_loadu_ps(a); }
  static T load(const uint16_t* a) {
    const __m256i half = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
  }
  static T fma(T a, T b, T acc) { return _mm512_fmadd_ps(a, b, acc); }
  static T broadcast(float x) { return _mm512_set1_ps(x); }
  static T add(T u, T v) { return _mm512_add_ps(u, v); }
  static void store(float* h, T v) { _mm512_storeu_ps(h, v); }
};
#elif defined(__AVX2__) && defined(__FMA__)
struct Vec {  // 8 floats
  using T = __m256;
  static constexpr int kWidth = 8;
  static T zero() { return _mm256_setzero_ps(); }
  static T load(const float* a) { return _mm256_loadu_ps(a); }
  static T load(const uint16_t* a) {
    const __m128i half = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(half), 16));
  }
  static T fma(T a, T b, T acc) { return _mm256_fmadd_ps(a, b, acc); }
  static T broadcast(float x) { return _mm256_set1_ps(x); }
  static T add(T u, T v) { return _mm256_add_ps(u, v); }
  static void store(float* h, T v) { _mm256_storeu_ps(h, v); }
};
#endif

// h[R] = x[K] @ A[K, R]
template <class W>
void down_project(const float* __restrict x, const W* __restrict a, int64_t k, int64_t r,
                  float* __restrict h) {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
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

// y[N] += h[R] @ B[R, N]
template <class W>
void up_project(const float* __restrict h, const W* __restrict b, int64_t r, int64_t n,
                float* __restrict y) {
  for (int64_t c = 0; c < r; ++c) {
    const float hc = h[c];
    if (hc == 0.0f) continue;  // zero-padded ranks of smaller adapters
    const W* row = b + c * n;
    int64_t o = 0;
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
    const typename Vec::T scale = Vec::broadcast(hc);
    for (; o + Vec::kWidth <= n; o += Vec::kWidth)
      Vec::store(y + o, Vec::fma(scale, Vec::load(row + o), Vec::load(y + o)));
#endif
    for (; o < n; ++o) y[o] += hc * to_float(row[o]);
  }
}

template <class W>
void rows(const LoraProblem<W>& p, int64_t begin, int64_t end) {
  std::vector<float> h(p.r);
  for (int64_t m = begin; m < end; ++m) {
    float* y = p.y + m * p.n;
    for (int64_t o = 0; o < p.n; ++o) y[o] = 0.0f;
    for (int64_t t = 0; t < p.j; ++t) {
      const int64_t s = p.slot[m * p.j + t];
      const float w = p.weight[m * p.j + t];
      if (s <= 0 || s >= p.slots || w == 0.0f) continue;
      down_project(p.x + m * p.k, p.a + s * p.k * p.r, p.k, p.r, h.data());
      for (auto& v : h) v *= w;
      up_project(h.data(), p.b + s * p.r * p.n, p.r, p.n, y);
    }
  }
}

template <ffi::DataType T, class W>
ffi::Error LoraDeltaImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<T> a,
                         ffi::Buffer<T> b, ffi::Buffer<ffi::S32> slot,
                         ffi::Buffer<ffi::F32> weight, ffi::Buffer<ffi::S32> layer,
                         ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions(), ad = a.dimensions(), bd = b.dimensions();
  const auto sd = slot.dimensions(), wd = weight.dimensions();
  if (xd.size() != 2 || ad.size() != 4 || bd.size() != 4 || sd.size() != 2 || wd.size() != 2)
    return ffi::Error::InvalidArgument("lora_delta: bad ranks");
  const int64_t m = xd[0], k = xd[1], stack = ad[0], slots = ad[1], r = ad[3], n = bd[3];
  if (ad[2] != k || bd[0] != stack || bd[1] != slots || bd[2] != r)
    return ffi::Error::InvalidArgument("lora_delta: A [L, S, K, R] and B [L, S, R, N] disagree");
  if (sd[0] != m || wd[0] != m || wd[1] != sd[1])
    return ffi::Error::InvalidArgument("lora_delta: slot/weight must be [M, J]");
  const int64_t l = layer.typed_data()[0];
  if (l < 0 || l >= stack) return ffi::Error::InvalidArgument("lora_delta: layer out of range");

  const W* a_data = reinterpret_cast<const W*>(a.untyped_data());
  const W* b_data = reinterpret_cast<const W*>(b.untyped_data());
  const LoraProblem<W> p{x.typed_data(), a_data + l * slots * k * r, b_data + l * slots * r * n,
                         slot.typed_data(), weight.typed_data(), y->typed_data(), k, r, n, sd[1],
                         slots};
  liminal::run_in_shares(pool, m, pool.num_threads(),
                         [&p](int64_t begin, int64_t end) { rows(p, begin, end); });
  return ffi::Error::Success();
}

}  // namespace

#define LIMINAL_LORA_HANDLER(name, type, storage)                        \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, (LoraDeltaImpl<type, storage>), \
                                ffi::Ffi::Bind()                      \
                                    .Ctx<ffi::ThreadPool>()           \
                                    .Arg<ffi::Buffer<ffi::F32>>()     \
                                    .Arg<ffi::Buffer<type>>()         \
                                    .Arg<ffi::Buffer<type>>()         \
                                    .Arg<ffi::Buffer<ffi::S32>>()     \
                                    .Arg<ffi::Buffer<ffi::F32>>()     \
                                    .Arg<ffi::Buffer<ffi::S32>>()     \
                                    .Ret<ffi::Buffer<ffi::F32>>());

LIMINAL_LORA_HANDLER(LiminalLoraDelta, ffi::F32, float)
LIMINAL_LORA_HANDLER(LiminalLoraDeltaBf16, ffi::BF16, uint16_t)
