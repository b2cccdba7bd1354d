// The LoRA term of a projection for a few rows that each use their own adapters:
//   y[m] = sum_j weight[m, j] * (x[m] @ A[layer, slot[m, j]]) @ B[layer, slot[m, j]]
//
// Why a kernel: in a decode batch every row may name a different adapter. XLA:CPU evaluates the
// per-row gather of adapter slots by copying each gathered [in, r] and [r, out] slice before the
// small dots, so 16 rows on 16 adapters moved every adapter's bytes three times per step and made
// LoRA batches far slower than base ones. Here each (row, adapter) pair reads its slot in place,
// once, and slot 0 ("no adapter") or a zero weight costs nothing.
//
// The row math is lora_term.h's (shared with the 4-bit matmuls that add the term in their own
// call, the engine's path when its weights are 4-bit); this stand-alone call serves the others.
//   x      float [M, K]
//   a, b   the slot table of one projection, [L, S, K, R] and [L, S, R, N] (lora_term.h), float32
//          (target LiminalLoraDelta) or bfloat16 (LiminalLoraDeltaBf16)
//   slot   int32 [M, J], weight float [M, J]: each row's adapters (slot 0 = none)
//   layer  int32 scalar
//   -> y   float [M, N]
// Rows are split across XLA's intra-op thread pool.

#include <algorithm>
#include <cstdint>

#include "lora_term.h"
#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

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
  const liminal::lora::Target<W> target{a_data + l * slots * k * r, b_data + l * slots * r * n,
                                        slots, k, r, n};
  const liminal::lora::RowAdapters rows{slot.typed_data(), weight.typed_data(), sd[1]};
  float* out = y->typed_data();
  std::fill(out, out + m * n, 0.0f);
  liminal::run_in_shares(pool, m, pool.num_threads(), [&](int64_t begin, int64_t end) {
    liminal::lora::add_rows(target, x.typed_data(), rows, out, n, begin, end);
  });
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
