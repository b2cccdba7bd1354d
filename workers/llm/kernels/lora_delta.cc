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
//   a      float [L, S, K, R]   slot s of layer l: the adapter's A, transposed
//   b      float [L, S, R, N]   with the adapter's alpha / r scaling folded in
//   slot   int32 [M, J], weight float [M, J]: each row's adapters (slot 0 = none)
//   layer  int32 scalar
//   -> y   float [M, N]
// Rows are split across XLA's intra-op thread pool.

#include <atomic>
#include <cstdint>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct LoraProblem {
  const float* x;
  const float* a;  // [S, K, R] of the chosen layer
  const float* b;  // [S, R, N] of the chosen layer
  const int32_t* slot;
  const float* weight;
  float* y;
  int64_t k, r, n, j, slots;
};

// h[R] = x[K] @ A[K, R]
void down_project(const float* __restrict x, const float* __restrict a, int64_t k, int64_t r,
                  float* __restrict h) {
#if defined(__AVX512F__)
  if (r % 16 == 0) {
    for (int64_t c = 0; c < r; c += 16) {
      // Four accumulators so that the FMA latency does not serialise the loop over inputs.
      __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
      int64_t i = 0;
      for (; i + 3 < k; i += 4) {
        acc0 = _mm512_fmadd_ps(_mm512_set1_ps(x[i]), _mm512_loadu_ps(a + i * r + c), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_set1_ps(x[i + 1]), _mm512_loadu_ps(a + (i + 1) * r + c), acc1);
        acc2 = _mm512_fmadd_ps(_mm512_set1_ps(x[i + 2]), _mm512_loadu_ps(a + (i + 2) * r + c), acc2);
        acc3 = _mm512_fmadd_ps(_mm512_set1_ps(x[i + 3]), _mm512_loadu_ps(a + (i + 3) * r + c), acc3);
      }
      for (; i < k; ++i)
        acc0 = _mm512_fmadd_ps(_mm512_set1_ps(x[i]), _mm512_loadu_ps(a + i * r + c), acc0);
      _mm512_storeu_ps(h + c, _mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
    }
    return;
  }
#elif defined(__AVX2__) && defined(__FMA__)
  if (r % 8 == 0) {
    for (int64_t c = 0; c < r; c += 8) {
      __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
      int64_t i = 0;
      for (; i + 3 < k; i += 4) {
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(x[i]), _mm256_loadu_ps(a + i * r + c), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(x[i + 1]), _mm256_loadu_ps(a + (i + 1) * r + c), acc1);
        acc2 = _mm256_fmadd_ps(_mm256_set1_ps(x[i + 2]), _mm256_loadu_ps(a + (i + 2) * r + c), acc2);
        acc3 = _mm256_fmadd_ps(_mm256_set1_ps(x[i + 3]), _mm256_loadu_ps(a + (i + 3) * r + c), acc3);
      }
      for (; i < k; ++i)
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(x[i]), _mm256_loadu_ps(a + i * r + c), acc0);
      _mm256_storeu_ps(h + c, _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    }
    return;
  }
#endif
  for (int64_t c = 0; c < r; ++c) h[c] = 0.0f;
  for (int64_t i = 0; i < k; ++i) {
    const float xi = x[i];
    const float* row = a + i * r;
    for (int64_t c = 0; c < r; ++c) h[c] += xi * row[c];
  }
}

// y[N] += h[R] @ B[R, N]
void up_project(const float* __restrict h, const float* __restrict b, int64_t r, int64_t n,
                float* __restrict y) {
  for (int64_t c = 0; c < r; ++c) {
    const float hc = h[c];
    if (hc == 0.0f) continue;  // zero-padded ranks of smaller adapters
    const float* row = b + c * n;
    for (int64_t o = 0; o < n; ++o) y[o] += hc * row[o];
  }
}

void rows(const LoraProblem& p, int64_t begin, int64_t end) {
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

ffi::Error LoraDeltaImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> a,
                         ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::S32> slot,
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

  const LoraProblem p{x.typed_data(), a.typed_data() + l * slots * k * r,
                      b.typed_data() + l * slots * r * n, slot.typed_data(), weight.typed_data(),
                      y->typed_data(), k, r, n, sd[1], slots};
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), m));
  const int64_t share = (m + threads - 1) / threads;
  std::atomic<int64_t> pending(0);
  for (int64_t begin = share; begin < m; begin += share) {
    const int64_t end = std::min(m, begin + share);
    pending.fetch_add(1, std::memory_order_relaxed);
    pool.Schedule([&p, &pending, begin, end] {
      rows(p, begin, end);
      pending.fetch_sub(1, std::memory_order_release);
    });
  }
  rows(p, 0, std::min(m, share));
  while (pending.load(std::memory_order_acquire) > 0) {
#if defined(__AVX2__)
    _mm_pause();
#endif
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LiminalLoraDelta, LoraDeltaImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
