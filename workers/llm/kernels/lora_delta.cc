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
//   slot   int32 [M, J], weight float [M, J]: each row's adapters (slot 0 = none)
//   layer  int32 scalar
//   then the slot table of one projection (lora_term.h): A [L, S, K, R] and B [L, S, R, N],
//   float32 or bfloat16, or int8 followed by their scale [L, S, R]
//   -> y   float [M, N]
// Rows are split across XLA's intra-op thread pool.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "lora_term.h"
#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

template <class W>
ffi::Error LoraDelta(ffi::ThreadPool& pool, const float* x, int64_t m, int64_t k,
                     const liminal::lora::RowAdapters& rows, int64_t layer,
                     const ffi::RemainingArgs& table, float* y, int64_t n) {
  std::vector<liminal::lora::Target<W>> targets;
  if (auto error = liminal::lora::read_targets(table, layer, k, n, targets); error.failure())
    return error;
  if (targets.size() != 1) return ffi::Error::InvalidArgument("lora_delta: one slot table");
  std::fill(y, y + m * n, 0.0f);
  liminal::run_in_shares(pool, m, pool.num_threads(), [&](int64_t begin, int64_t end) {
    liminal::lora::add_rows(targets[0], x, rows, y, n, begin, end);
  });
  return ffi::Error::Success();
}

ffi::Error LoraDeltaImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                         ffi::Buffer<ffi::S32> slot, ffi::Buffer<ffi::F32> weight,
                         ffi::Buffer<ffi::S32> layer, ffi::RemainingArgs table,
                         ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions(), sd = slot.dimensions(), wd = weight.dimensions();
  const auto yd = y->dimensions();
  if (xd.size() != 2 || sd.size() != 2 || wd.size() != 2 || yd.size() != 2)
    return ffi::Error::InvalidArgument("lora_delta: bad ranks");
  const int64_t m = xd[0], k = xd[1], n = yd[1];
  if (sd[0] != m || wd[0] != m || wd[1] != sd[1] || yd[0] != m)
    return ffi::Error::InvalidArgument("lora_delta: slot/weight must be [M, J]");
  const liminal::lora::RowAdapters rows{slot.typed_data(), weight.typed_data(), sd[1]};
  const int64_t l = layer.typed_data()[0];
  const auto type = liminal::lora::slot_type(table);
  if (!type.has_value()) return type.error();
  switch (*type) {
    case ffi::DataType::BF16:
      return LoraDelta<uint16_t>(pool, x.typed_data(), m, k, rows, l, table, y->typed_data(), n);
    case ffi::DataType::S8:
      return LoraDelta<int8_t>(pool, x.typed_data(), m, k, rows, l, table, y->typed_data(), n);
    default:
      return LoraDelta<float>(pool, x.typed_data(), m, k, rows, l, table, y->typed_data(), n);
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LiminalLoraDelta, LoraDeltaImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .RemainingArgs()
                                  .Ret<ffi::Buffer<ffi::F32>>());
