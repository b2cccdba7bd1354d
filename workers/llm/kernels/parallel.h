// Splitting a kernel's work across XLA's intra-op thread pool (shared by the kernels here).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace liminal {

// The size of each range run_in_shares(pool, n, shares, ...) makes (the last may be smaller).
inline int64_t share_size(int64_t n, int64_t shares) {
  shares = std::max<int64_t>(1, std::min<int64_t>(shares, n));
  return (n + shares - 1) / shares;
}

// How many ranges (calls of `work`) run_in_shares(pool, n, shares, ...) makes.
inline int64_t share_count(int64_t n, int64_t shares) {
  const int64_t share = share_size(n, shares);
  return std::max<int64_t>(1, (n + share - 1) / share);
}

// Runs work(begin, end) over [0, n) in `shares` equal ranges (at least one), one per pool task;
// the calling thread takes the first range and waits (spinning: a range takes tens of
// microseconds) for the others.
template <class Work>
void run_in_shares(xla::ffi::ThreadPool& pool, int64_t n, int64_t shares, const Work& work) {
  const int64_t share = share_size(n, shares);
  std::atomic<int64_t> pending(0);
  for (int64_t begin = share; begin < n; begin += share) {
    const int64_t end = std::min(n, begin + share);
    pending.fetch_add(1, std::memory_order_relaxed);
    pool.Schedule([&work, &pending, begin, end] {
      work(begin, end);
      pending.fetch_sub(1, std::memory_order_release);
    });
  }
  work(0, std::min(n, share));
  while (pending.load(std::memory_order_acquire) > 0) {
#if defined(__AVX2__) || defined(__AVX512F__)
    _mm_pause();
#endif
  }
}

}  // namespace liminal
