// x @ W for a few rows of x, with W in 4-bit blocks (the decoder's matrices) or 8-bit blocks (the
// output head): the decode-time matmuls of workers/llm.
//
// Decoding one token reads every weight once and does a single multiply-add with it, so its
// speed is set by how many bytes the weights take. XLA's CPU backend has no fast low-precision
// matrix-vector product (it converts int8/bf16 weights to float32 in memory first), hence this
// kernel, called from the jitted decode step through XLA's FFI.
//
// Layout (Q4_1-style, one block per 32 consecutive inputs of one output column):
//   qs     uint8 [L, N, K/32, 16]: input j of a block in the low nibble of byte j (j < 16),
//                                  input j + 16 in the high nibble
//   scales float [L, N, K/32], mins float [L, N, K/32]: weight = scale * q + min
//   layer  int32 scalar: which of the L stacked matrices to use (so a scan over layers passes
//          the whole stack and no per-layer slice is copied)
//   x      float [B, K] -> y float [B, N]
// Output columns are split across XLA's intra-op thread pool. With AVX-512, row counts of 1, 2,
// 4, 8 and 16 (the engine's decode batch sizes) run vectorised; with AVX2 (and no AVX-512),
// every row count does; other CPUs take a portable loop. The 8-bit layout is described at
// Q8MatmulImpl. AVX-512 builds also have the panel layout (below), faster for batches.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "lora_term.h"
#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kBlock = 32;
constexpr int64_t kMaxRows = 16;

struct Problem {
  const float* x;       // [B, K]
  const float* xsum;    // [B, K/32]: sum of each row's inputs per block (if kUsesBlockSums)
  const uint8_t* qs;    // [N, K/32, 16] for the chosen layer
  const float* scales;  // [N, K/32]
  const float* mins;    // [N, K/32]
  float* y;             // [B, N]
  int64_t rows, k, n;
};

struct Rows {
  const float* x;  // [rows, k]
  float* y;        // [rows, n]
  int64_t rows, k, n;
};

void columns_scalar(const Problem& p, int64_t begin, int64_t end) {
  const int64_t blocks = p.k / kBlock;
  for (int64_t col = begin; col < end; ++col) {
    const uint8_t* q = p.qs + col * blocks * 16;
    for (int64_t r = 0; r < p.rows; ++r) {
      const float* xr = p.x + r * p.k;
      float total = 0.0f;
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* qb = q + b * 16;
        float dot = 0.0f;
        for (int j = 0; j < 16; ++j) {
          dot += float(qb[j] & 0x0F) * xr[b * kBlock + j];
          dot += float(qb[j] >> 4) * xr[b * kBlock + j + 16];
        }
        total += p.scales[col * blocks + b] * dot + p.mins[col * blocks + b] * p.xsum[r * blocks + b];
      }
      p.y[r * p.n + col] = total;
    }
  }
}

#if defined(__AVX512F__)
// R rows at once. With few rows, each row keeps several independent accumulators (blocks are
// taken in pairs) so that the FMA latency chain does not set the pace.
template <int R>
void columns_avx512(const Problem& p, int64_t begin, int64_t end) {
  constexpr bool kPairs = R < 8;
  const int64_t blocks = p.k / kBlock;
  const __m128i low_mask = _mm_set1_epi8(0x0F);
  for (int64_t col = begin; col < end; ++col) {
    const uint8_t* q = p.qs + col * blocks * 16;
    const float* scale = p.scales + col * blocks;
    __m512 acc[R][kPairs ? 4 : 2];
    for (int r = 0; r < R; ++r)
      for (auto& a : acc[r]) a = _mm512_setzero_ps();
    auto block = [&](int64_t b, int first) {
      const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + b * 16));
      const __m512 d = _mm512_set1_ps(scale[b]);
      const __m512 w_lo = _mm512_mul_ps(
          d, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(packed, low_mask))));
      const __m512 w_hi = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                                                _mm_and_si128(_mm_srli_epi16(packed, 4), low_mask))));
      for (int r = 0; r < R; ++r) {
        const float* xr = p.x + r * p.k + b * kBlock;
        acc[r][first] = _mm512_fmadd_ps(w_lo, _mm512_loadu_ps(xr), acc[r][first]);
        acc[r][first + 1] = _mm512_fmadd_ps(w_hi, _mm512_loadu_ps(xr + 16), acc[r][first + 1]);
      }
    };
    int64_t b = 0;
    if constexpr (kPairs) {
      for (; b + 1 < blocks; b += 2) {
        block(b, 0);
        block(b + 1, 2);
      }
    }
    for (; b < blocks; ++b) block(b, 0);
    for (int r = 0; r < R; ++r) {
      __m512 total = _mm512_add_ps(acc[r][0], acc[r][1]);
      if constexpr (kPairs) total = _mm512_add_ps(total, _mm512_add_ps(acc[r][2], acc[r][3]));
      float offset = 0.0f;
      const float* min = p.mins + col * blocks;
      for (int64_t k = 0; k < blocks; ++k) offset += min[k] * p.xsum[r * blocks + k];
      p.y[r * p.n + col] = _mm512_reduce_add_ps(total) + offset;
    }
  }
}
#endif

#if defined(__AVX2__) && defined(__FMA__)
// AVX2 (16 registers of 8 floats): a tile of R rows x C columns, one accumulator per (row,
// column), generic over the block format. Weights are dequantized in full (4-bit: scale * q +
// min), so no per-block input sums are needed. Each row's sum runs over the same blocks in the
// same order whatever R and C are, so a row's result does not depend on how many rows share the
// call. AVX-512 builds use this for the 8-bit format.
// The 32 weights of one block as four vectors: inputs 0-7, 8-15, 16-23, 24-31.
struct Q4Blocks {
  const uint8_t* qs;  // [n, k/32, 16]: input j in the low nibble of byte j, j + 16 in the high
  const float* scales;
  const float* mins;
  int64_t blocks;
  void operator()(int64_t col, int64_t b, __m256 w[4]) const {
    const int64_t i = col * blocks + b;
    const __m128i low_mask = _mm_set1_epi8(0x0F);
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs + i * 16));
    const __m128i lo = _mm_and_si128(packed, low_mask);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low_mask);
    const __m256 d = _mm256_set1_ps(scales[i]), m = _mm256_set1_ps(mins[i]);
    w[0] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), m);
    w[1] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), m);
    w[2] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), m);
    w[3] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), m);
  }
};

struct Q8Blocks {
  const int8_t* qs;  // [n, k/32, 32]
  const float* scales;
  int64_t blocks;
  void operator()(int64_t col, int64_t b, __m256 w[4]) const {
    const int64_t i = col * blocks + b;
    const __m256 d = _mm256_set1_ps(scales[i]);
    for (int part = 0; part < 4; ++part) {
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs + i * 32 + part * 8));
      w[part] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)));
    }
  }
};

inline float horizontal_sum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

template <class Blocks, int R, int C>
void tile_avx2(const Blocks& weights, const Rows& p, int64_t row0, int64_t col0) {
  const int64_t blocks = p.k / kBlock;
  __m256 acc[R][C];
  for (auto& row : acc)
    for (auto& a : row) a = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    for (int c = 0; c < C; ++c) {
      __m256 w[4];
      weights(col0 + c, b, w);
      for (int r = 0; r < R; ++r) {
        const float* xr = p.x + (row0 + r) * p.k + b * kBlock;
        __m256 a = acc[r][c];
        a = _mm256_fmadd_ps(w[0], _mm256_loadu_ps(xr), a);
        a = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xr + 8), a);
        a = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(xr + 16), a);
        acc[r][c] = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xr + 24), a);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) p.y[(row0 + r) * p.n + col0 + c] = horizontal_sum(acc[r][c]);
}

// Columns [begin, end) for all rows: up to 8 rows per tile (8 accumulators + 4 weight vectors
// fit the 16 registers); fewer rows take more columns per tile so that enough independent FMA
// chains are in flight.
template <class Blocks, int R, int C>
void columns_tiled(const Blocks& w, const Rows& p, int64_t row0, int64_t begin, int64_t end) {
  int64_t col = begin;
  for (; col + C <= end; col += C) tile_avx2<Blocks, R, C>(w, p, row0, col);
  for (; col < end; ++col) tile_avx2<Blocks, R, 1>(w, p, row0, col);
}

template <class Blocks>
void columns_avx2(const Blocks& w, const Rows& p, int64_t begin, int64_t end) {
  int64_t row = 0;
  for (; row + 8 <= p.rows; row += 8) columns_tiled<Blocks, 8, 1>(w, p, row, begin, end);
  switch (p.rows - row) {
    case 0: return;
    case 1: return columns_tiled<Blocks, 1, 4>(w, p, row, begin, end);
    case 2: return columns_tiled<Blocks, 2, 4>(w, p, row, begin, end);
    case 3: return columns_tiled<Blocks, 3, 2>(w, p, row, begin, end);
    case 4: return columns_tiled<Blocks, 4, 2>(w, p, row, begin, end);
    case 5: return columns_tiled<Blocks, 5, 1>(w, p, row, begin, end);
    case 6: return columns_tiled<Blocks, 6, 1>(w, p, row, begin, end);
    default: return columns_tiled<Blocks, 7, 1>(w, p, row, begin, end);
  }
}
#endif

// Whether this build's 4-bit path reads the per-block input sums (the AVX2 path folds the
// minimum into the dequantized weights instead).
constexpr bool kUsesBlockSums =
#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
    false;
#else
    true;
#endif

void columns(const Problem& p, int64_t begin, int64_t end) {
#if defined(__AVX512F__)
  switch (p.rows) {
    case 1: return columns_avx512<1>(p, begin, end);
    case 2: return columns_avx512<2>(p, begin, end);
    case 4: return columns_avx512<4>(p, begin, end);
    case 8: return columns_avx512<8>(p, begin, end);
    case 16: return columns_avx512<16>(p, begin, end);
    default: return columns_scalar(p, begin, end);
  }
#elif defined(__AVX2__) && defined(__FMA__)
  columns_avx2(Q4Blocks{p.qs, p.scales, p.mins, p.k / kBlock}, Rows{p.x, p.y, p.rows, p.k, p.n},
               begin, end);
#else
  columns_scalar(p, begin, end);
#endif
}

// One share of the columns per thread, but no share under 64 columns.
template <class Work>
void parallel_columns(ffi::ThreadPool& pool, int64_t n, const Work& work) {
  liminal::run_in_shares(pool, n, std::min<int64_t>(pool.num_threads(), n / 64), work);
}

// A 4-bit column matmul's operands, checked, for the chosen layer.
struct Q4ColumnCall {
  std::vector<float> xsum;
  Problem p;
};

ffi::Error prepare_q4_columns(ffi::Buffer<ffi::F32>& x, ffi::Buffer<ffi::U8>& qs,
                              ffi::Buffer<ffi::F32>& scales, ffi::Buffer<ffi::F32>& mins,
                              ffi::Buffer<ffi::S32>& layer, ffi::ResultBuffer<ffi::F32>& y,
                              Q4ColumnCall& call) {
  const auto x_dims = x.dimensions();
  const auto q_dims = qs.dimensions();
  if (x_dims.size() != 2 || q_dims.size() != 4 || q_dims[3] != 16) {
    return ffi::Error::InvalidArgument("q4_matmul: expected x [B, K] and qs [L, N, K/32, 16]");
  }
  const int64_t rows = x_dims[0], k = x_dims[1];
  const int64_t stack = q_dims[0], n = q_dims[1], blocks = q_dims[2];
  if (k != blocks * kBlock) return ffi::Error::InvalidArgument("q4_matmul: K != 32 * blocks");
  if (rows > kMaxRows) return ffi::Error::InvalidArgument("q4_matmul: at most 16 rows");
  const int64_t l = layer.typed_data()[0];
  if (l < 0 || l >= stack) return ffi::Error::InvalidArgument("q4_matmul: layer out of range");

  call.xsum.assign(kUsesBlockSums ? rows * blocks : 0, 0.0f);
  for (int64_t r = 0; r < (kUsesBlockSums ? rows : 0); ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      float s = 0.0f;
      for (int64_t j = 0; j < kBlock; ++j) s += x.typed_data()[r * k + b * kBlock + j];
      call.xsum[r * blocks + b] = s;
    }
  }
  call.p = Problem{x.typed_data(), call.xsum.data(), qs.typed_data() + l * n * blocks * 16,
                   scales.typed_data() + l * n * blocks, mins.typed_data() + l * n * blocks,
                   y->typed_data(), rows, k, n};
  return ffi::Error::Success();
}

ffi::Error Q4MatmulImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                        ffi::Buffer<ffi::U8> qs, ffi::Buffer<ffi::F32> scales,
                        ffi::Buffer<ffi::F32> mins, ffi::Buffer<ffi::S32> layer,
                        ffi::ResultBuffer<ffi::F32> y) {
  Q4ColumnCall call;
  if (auto error = prepare_q4_columns(x, qs, scales, mins, layer, y, call); error.failure())
    return error;
  const Problem& p = call.p;
  parallel_columns(pool, p.n, [&p](int64_t begin, int64_t end) { columns(p, begin, end); });
  return ffi::Error::Success();
}

// x [B, K] @ W [K, N] with W in 8-bit blocks (llama.cpp's Q8_0: 32 inputs of a column share a
// float scale): the output head, whose GGUF tensor usually is Q8_0.
//   qs int8 [N, K/32, 32], scales float [N, K/32] -> y float [B, N]
void columns_q8(const int8_t* qs, const float* scales, const Rows& p, int64_t begin, int64_t end) {
  const int64_t blocks = p.k / kBlock;
#if defined(__AVX2__) && defined(__FMA__)
  columns_avx2(Q8Blocks{qs, scales, blocks}, p, begin, end);
#else
  for (int64_t col = begin; col < end; ++col) {
    for (int64_t r = 0; r < p.rows; ++r) {
      float total = 0.0f;
      for (int64_t b = 0; b < blocks; ++b) {
        float dot = 0.0f;
        for (int64_t j = 0; j < kBlock; ++j)
          dot += float(qs[(col * blocks + b) * kBlock + j]) * p.x[r * p.k + b * kBlock + j];
        total += scales[col * blocks + b] * dot;
      }
      p.y[r * p.n + col] = total;
    }
  }
#endif
}

ffi::Error Q8MatmulImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S8> qs,
                        ffi::Buffer<ffi::F32> scales, ffi::ResultBuffer<ffi::F32> y) {
  const auto x_dims = x.dimensions();
  const auto q_dims = qs.dimensions();
  if (x_dims.size() != 2 || q_dims.size() != 3 || q_dims[2] != kBlock)
    return ffi::Error::InvalidArgument("q8_matmul: expected x [B, K] and qs [N, K/32, 32]");
  const int64_t rows = x_dims[0], k = x_dims[1], n = q_dims[0];
  if (k != q_dims[1] * kBlock) return ffi::Error::InvalidArgument("q8_matmul: K != 32 * blocks");
  if (rows > kMaxRows) return ffi::Error::InvalidArgument("q8_matmul: at most 16 rows");
  const Rows p{x.typed_data(), y->typed_data(), rows, k, n};
  const int8_t* q = qs.typed_data();
  const float* d = scales.typed_data();
  parallel_columns(pool, n, [&](int64_t begin, int64_t end) { columns_q8(q, d, p, begin, end); });
  return ffi::Error::Success();
}


// Panels: the layout for batches of rows (AVX-512 builds). A decode step of 16 rows does 16
// multiply-adds per weight, so it is bound by arithmetic, not by the bytes of the weights, and
// the column layout above (one input vector loaded per multiply-add, a horizontal sum per
// output) leaves the FMA units idle. A panel holds 16 consecutive output columns, interleaved
// along the input, so that one dequantized vector holds the weights of input k for all 16
// columns: it is multiplied by input k of every row (a broadcast, folded into the FMA's memory
// operand) into one accumulator per row, as in a GEMM micro-kernel, and no horizontal sums are
// needed. Measured on a 2-core Zen 4 (30 x [576, 3072]): 8.6 ms for 16 rows against 24 ms in
// columns and 16.8 ms in XLA's float32 GEMM; from 2 rows up, and for the 8-bit head from 1 row
// up, panels are the faster layout.
//   4-bit: qs uint8 [L, N/16, K/2, 16]: byte c of input pair i holds column c's weight for
//          input 2i (low nibble) and 2i + 1 (high nibble); scales, mins float [L, N/16, K/32, 16]
//   8-bit: qs int8 [N/16, K, 16]; scales float [N/16, K/32, 16]
// The rows of x are transposed first (xt [K, 16], missing rows zero), so the 16 broadcasts of
// one input read one cache line.
constexpr int64_t kPanel = 16;

struct Panels {
  const float* xt;  // [k, kPanel]: x transposed (rows <= kPanel)
  float* y;         // [rows, n]
  int64_t rows, k, n;
};

std::vector<float> transposed_rows(const float* x, int64_t rows, int64_t k) {
  std::vector<float> xt(k * kPanel, 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < k; ++i) xt[i * kPanel + r] = x[r * k + i];
  return xt;
}

#if defined(__AVX512F__)
struct Q4Panel {
  const uint8_t* qs;  // [n/16, k/2, 16]
  const float* scales;
  const float* mins;  // [n/16, k/32, 16]
  int64_t k;
  // The weights of inputs 2i and 2i + 1 (i: pair within block b) of panel g.
  struct Block {
    __m512 d, m;
    const uint8_t* q;
  };
  Block block(int64_t g, int64_t b) const {
    const int64_t i = g * (k / kBlock) + b;
    return {_mm512_loadu_ps(scales + i * kPanel), _mm512_loadu_ps(mins + i * kPanel),
            qs + (g * (k / 2) + b * (kBlock / 2)) * kPanel};
  }
  static constexpr int kInputsPerStep = 2;
  static void step(const Block& blk, int pair, __m512 w[2]) {
    const __m512i bytes = _mm512_cvtepu8_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.q + pair * kPanel)));
    const __m512i low = _mm512_and_si512(bytes, _mm512_set1_epi32(0x0F));
    w[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(low), blk.d, blk.m);
    w[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(bytes, 4)), blk.d, blk.m);
  }
};

struct Q8Panel {
  const int8_t* qs;  // [n/16, k, 16]
  const float* scales;  // [n/16, k/32, 16]
  int64_t k;
  struct Block {
    __m512 d;
    const int8_t* q;
  };
  Block block(int64_t g, int64_t b) const {
    const int64_t i = g * (k / kBlock) + b;
    return {_mm512_loadu_ps(scales + i * kPanel), qs + (g * k + b * kBlock) * kPanel};
  }
  static constexpr int kInputsPerStep = 1;
  static void step(const Block& blk, int i, __m512 w[1]) {
    const __m512i q = _mm512_cvtepi8_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.q + i * kPanel)));
    w[0] = _mm512_mul_ps(_mm512_cvtepi32_ps(q), blk.d);
  }
};

// Cache lines for a kernel to prefetch while its FMA units are busy (see SlotLines), spread
// evenly over the steps of its loop (a step: a block of 32 inputs of a group of panels, ~300
// cycles for 16 rows). A burst would stall it on the memory system, and running ahead at a
// line or two per step costs a little too, presumably because prefetches in flight hold miss
// buffers that the kernel's own weight stream needs (measured in one process against a line or
// two per step: 16-row, 4-step LoRA calls 1-1.5 ms faster in the median, of 92-97 ms; the best
// calls equal; 8-row calls 1.3 ms faster in the best).
struct Prefetch {
  using Range = liminal::lora::SlotLines::Range;
  static constexpr uint32_t kOne = 1 << 16;  // `rate` and `credit` are 16.16 fixed point

  // Ranges [first, last) over `steps` steps.
  static Prefetch spread(const Range* first, const Range* last, int64_t steps) {
    int64_t lines = 0;
    for (const Range* r = first; r != last; ++r) lines += r->lines;
    // Rounded up, so that the last line goes out before the last step; at most 128 lines a
    // step (a cap that the slots of one row, spread over a share of the panels, stay under).
    const int64_t rate = lines * kOne / std::max<int64_t>(steps, 1) + 1;
    return {first, last, nullptr, nullptr, uint32_t(std::min<int64_t>(rate, 128 * kOne)), 0};
  }

  const Range* range;  // the next range to start
  const Range* last;
  const char* line;
  const char* end;
  uint32_t rate, credit;

  __attribute__((always_inline)) void step() {
    for (credit += rate; credit >= kOne; credit -= kOne) next();
  }

 private:
  __attribute__((always_inline)) void next() {
    while (line == end) {  // (a range has lines, but an empty one must not derail the rest)
      if (range == last) return;
      line = range->start;
      end = line + range->lines * 64;
      ++range;
    }
    // Into L1 (T0): a row's slots are read right after the chunk that fetches them. Against
    // L2 only (T1), 16 rows on 16 int8 adapters took ~0.3 ms less per 30-layer step
    // (kernel-only, three paired runs); NTA was in between.
    _mm_prefetch(line, _MM_HINT_T0);
    line += 64;
  }
};

// R rows of G panels at a time: one accumulator per (panel, row). G * R >= 8 keeps enough
// independent FMA chains in flight to cover the FMA latency. `prefetch` takes a step per block
// of inputs of each group of panels; its state stays in memory (the empty asm below): held in
// registers across the loop, it made GCC spill the loop's pointers, and the panels ran ~5%
// slower whether or not there was anything to prefetch (16-row decode, 30 layers: ~0.5 ms per
// step), where now they run as fast as they did without it.
template <class Format, int R, int G>
void panels_avx512(const Format& f, const Panels& p, int64_t begin, int64_t end,
                   Prefetch& prefetch) {
  constexpr int S = Format::kInputsPerStep;
  const int64_t blocks = p.k / kBlock;
  int64_t g0 = begin;
  for (; g0 + G <= end; g0 += G) {
    __m512 acc[G][R];
    for (auto& panel : acc)
      for (auto& a : panel) a = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      typename Format::Block blk[G];
      for (int g = 0; g < G; ++g) blk[g] = f.block(g0 + g, b);
      prefetch.step();
      asm volatile("" ::: "memory");
      const float* xb = p.xt + b * kBlock * kPanel;
      for (int step = 0; step < kBlock / S; ++step) {
        for (int g = 0; g < G; ++g) {
          __m512 w[S];
          Format::step(blk[g], step, w);
          for (int s = 0; s < S; ++s) {
            const float* xi = xb + (step * S + s) * kPanel;
            for (int r = 0; r < R; ++r)
              acc[g][r] = _mm512_fmadd_ps(w[s], _mm512_set1_ps(xi[r]), acc[g][r]);
          }
        }
      }
    }
    // Constant indices into acc (a runtime bound on r would make GCC keep acc in memory and
    // store every accumulator at every step).
    for (int g = 0; g < G; ++g)
      for (int r = 0; r < R; ++r)
        if (r < p.rows) _mm512_storeu_ps(p.y + r * p.n + (g0 + g) * kPanel, acc[g][r]);
  }
  if (g0 < end) panels_avx512<Format, R, 1>(f, p, g0, end, prefetch);
}

// How many panels multiply_panels takes at a time for `rows` rows (its G, below).
constexpr int64_t panels_per_group(int64_t rows) { return rows <= 2 ? 4 : rows <= 4 ? 2 : 1; }

// The steps of multiply_panels' loop over panels [begin, end), at each of which it prefetches:
// one per block of inputs for each group of panels, and for each panel left over.
int64_t panel_steps(const Panels& p, int64_t begin, int64_t end) {
  const int64_t group = panels_per_group(p.rows), panels = end - begin;
  return (panels / group + panels % group) * (p.k / kBlock);
}

template <class Format>
void multiply_panels(const Format& f, const Panels& p, int64_t begin, int64_t end,
                     Prefetch& prefetch) {
  // Each case's G is panels_per_group(rows).
  switch (p.rows) {
    case 1: return panels_avx512<Format, 1, 4>(f, p, begin, end, prefetch);
    case 2: return panels_avx512<Format, 2, 4>(f, p, begin, end, prefetch);
    case 3:
    case 4: return panels_avx512<Format, 4, 2>(f, p, begin, end, prefetch);
    case 5:
    case 6:
    case 7:
    case 8: return panels_avx512<Format, 8, 1>(f, p, begin, end, prefetch);
    default: return panels_avx512<Format, kPanel, 1>(f, p, begin, end, prefetch);
  }
}

template <class Format>
void multiply_panels(const Format& f, const Panels& p, int64_t begin, int64_t end) {
  Prefetch nothing{};
  multiply_panels(f, p, begin, end, nothing);
}
#endif

#if defined(__AVX512F__)
// Panel g of f's matrix as float32, [k, kPanel].
template <class Format>
void dequantize_panel(const Format& f, int64_t g, int64_t k, float* out) {
  constexpr int S = Format::kInputsPerStep;
  for (int64_t b = 0; b < k / kBlock; ++b) {
    const typename Format::Block blk = f.block(g, b);
    for (int step = 0; step < kBlock / S; ++step) {
      __m512 w[S];
      Format::step(blk, step, w);
      for (int s = 0; s < S; ++s)
        _mm512_storeu_ps(out + (b * kBlock + step * S + s) * kPanel, w[s]);
    }
  }
}

// y [R rows, G panels] = x [R rows, k] (row-major, rows `stride` apart) times G dequantized
// panels w [G, k, kPanel]; rows from valid_rows on are computed but not stored. Broadcasting an
// input to G panels and loading a weight vector for R rows keeps the loop to FMAs and loads.
template <int R, int G>
void prompt_tile(const float* w, const float* x, int64_t stride, int64_t k, float* y, int64_t n,
                 int64_t valid_rows) {
  const float* row[R];
  for (int r = 0; r < R; ++r) row[r] = x + (r < valid_rows ? r : 0) * stride;
  __m512 acc[G][R];
  for (auto& panel : acc)
    for (auto& a : panel) a = _mm512_setzero_ps();
  for (int64_t i = 0; i < k; ++i) {
    __m512 wv[G];
    for (int g = 0; g < G; ++g) wv[g] = _mm512_loadu_ps(w + (g * k + i) * kPanel);
    for (int r = 0; r < R; ++r) {
      const __m512 xb = _mm512_set1_ps(row[r][i]);
      for (int g = 0; g < G; ++g) acc[g][r] = _mm512_fmadd_ps(wv[g], xb, acc[g][r]);
    }
  }
  for (int g = 0; g < G; ++g)
    for (int r = 0; r < R; ++r)
      if (r < valid_rows) _mm512_storeu_ps(y + r * n + g * kPanel, acc[g][r]);
}

// Panels [begin, end) for a prompt's many rows of x [rows, k]. The kernels above dequantize
// each weight once per 16 rows; here a thread dequantizes a few panels once into a buffer that
// stays in its cache and passes every row over it, so a prompt's matmul is FMAs and loads.
template <class Format>
void multiply_prompt_rows(const Format& f, const float* x, const Panels& p, int64_t begin,
                          int64_t end) {
  constexpr int G = 3, R = 8;
  // Reused across calls: a fresh buffer of this size would be mapped and zeroed every call.
  thread_local std::vector<float> w;
  w.resize(G * p.k * kPanel);
  for (int64_t g0 = begin; g0 < end; g0 += G) {
    const int64_t count = std::min<int64_t>(G, end - g0);
    for (int64_t g = 0; g < count; ++g) dequantize_panel(f, g0 + g, p.k, w.data() + g * p.k * kPanel);
    for (int64_t r = 0; r < p.rows; r += R) {
      const float* xr = x + r * p.k;
      float* y = p.y + r * p.n + g0 * kPanel;
      if (count == G) {
        prompt_tile<R, G>(w.data(), xr, p.k, p.k, y, p.n, p.rows - r);
      } else {
        for (int64_t g = 0; g < count; ++g)
          prompt_tile<R, 1>(w.data() + g * p.k * kPanel, xr, p.k, p.k, y + g * kPanel, p.n,
                            p.rows - r);
      }
    }
  }
}

// Panels [begin, end) for any number of rows of x (p.xt holds them transposed up to kPanel rows).
template <class Format>
void multiply_any_rows(const Format& f, const float* x, const Panels& p, int64_t begin,
                         int64_t end) {
  if (p.rows <= kPanel) return multiply_panels(f, p, begin, end);
  multiply_prompt_rows(f, x, p, begin, end);
}
#endif

// One share of the panels per thread, but no share under 4 panels.
int64_t panel_shares(ffi::ThreadPool& pool, int64_t panels) {
  return std::min<int64_t>(pool.num_threads(), panels / 4);
}

template <class Work>
void parallel_panels(ffi::ThreadPool& pool, int64_t panels, const Work& work) {
  liminal::run_in_shares(pool, panels, panel_shares(pool, panels), work);
}

// A 4-bit panel matmul's operands, checked: the chosen layer's panels and the rows of x
// transposed (see `transposed_rows`).
struct Q4PanelCall {
#if defined(__AVX512F__)
  Q4Panel f;
#endif
  std::vector<float> xt;
  Panels p;
  int64_t panels;
};

ffi::Error prepare_q4_panels(ffi::Buffer<ffi::F32>& x, ffi::Buffer<ffi::U8>& qs,
                             ffi::Buffer<ffi::F32>& scales, ffi::Buffer<ffi::F32>& mins,
                             ffi::Buffer<ffi::S32>& layer, ffi::ResultBuffer<ffi::F32>& y,
                             Q4PanelCall& call) {
#if defined(__AVX512F__)
  const auto x_dims = x.dimensions();
  const auto q_dims = qs.dimensions();
  if (x_dims.size() != 2 || q_dims.size() != 4 || q_dims[3] != kPanel)
    return ffi::Error::InvalidArgument("q4_panel_matmul: expected x [B, K], qs [L, N/16, K/2, 16]");
  const int64_t rows = x_dims[0], k = x_dims[1];
  const int64_t stack = q_dims[0], panels = q_dims[1];
  if (k != q_dims[2] * 2 || k % kBlock)
    return ffi::Error::InvalidArgument("q4_panel_matmul: K != 2 * pairs or not whole blocks");
  const int64_t l = layer.typed_data()[0];
  if (l < 0 || l >= stack) return ffi::Error::InvalidArgument("q4_panel_matmul: layer out of range");
  const int64_t n = panels * kPanel, blocks = k / kBlock;
  // The prompt path (over kPanel rows) reads x as it is.
  if (rows <= kPanel) call.xt = transposed_rows(x.typed_data(), rows, k);
  call.f = Q4Panel{qs.typed_data() + l * panels * (k / 2) * kPanel,
                   scales.typed_data() + l * panels * blocks * kPanel,
                   mins.typed_data() + l * panels * blocks * kPanel, k};
  call.p = Panels{call.xt.data(), y->typed_data(), rows, k, n};
  call.panels = panels;
  return ffi::Error::Success();
#else
  return ffi::Error(ffi::ErrorCode::kUnimplemented, "q4_panel_matmul needs AVX-512");
#endif
}

ffi::Error Q4PanelMatmulImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                             ffi::Buffer<ffi::U8> qs, ffi::Buffer<ffi::F32> scales,
                             ffi::Buffer<ffi::F32> mins, ffi::Buffer<ffi::S32> layer,
                             ffi::ResultBuffer<ffi::F32> y) {
  Q4PanelCall call;
  if (auto error = prepare_q4_panels(x, qs, scales, mins, layer, y, call); error.failure())
    return error;
#if defined(__AVX512F__)
  parallel_panels(pool, call.panels, [&](int64_t begin, int64_t end) {
    multiply_any_rows(call.f, x.typed_data(), call.p, begin, end);
  });
#endif
  return ffi::Error::Success();
}

ffi::Error Q8PanelMatmulImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                             ffi::Buffer<ffi::S8> qs, ffi::Buffer<ffi::F32> scales,
                             ffi::ResultBuffer<ffi::F32> y) {
#if defined(__AVX512F__)
  const auto x_dims = x.dimensions();
  const auto q_dims = qs.dimensions();
  if (x_dims.size() != 2 || q_dims.size() != 3 || q_dims[2] != kPanel)
    return ffi::Error::InvalidArgument("q8_panel_matmul: expected x [B, K], qs [N/16, K, 16]");
  const int64_t rows = x_dims[0], k = x_dims[1], panels = q_dims[0];
  if (k != q_dims[1] || k % kBlock)
    return ffi::Error::InvalidArgument("q8_panel_matmul: K mismatch or not whole blocks");
  if (rows > kPanel) return ffi::Error::InvalidArgument("q8_panel_matmul: at most 16 rows");
  const auto xt = transposed_rows(x.typed_data(), rows, k);
  const Q8Panel f{qs.typed_data(), scales.typed_data(), k};
  const Panels p{xt.data(), y->typed_data(), rows, k, panels * kPanel};
  parallel_panels(pool, panels, [&](int64_t begin, int64_t end) { multiply_panels(f, p, begin, end); });
  return ffi::Error::Success();
#else
  return ffi::Error(ffi::ErrorCode::kUnimplemented, "q8_panel_matmul needs AVX-512");
#endif
}

// The 4-bit matmuls with the LoRA terms of the projections that W holds side by side (e.g. q, k
// and v) added in the same call: y = x @ W + [term_1 | term_2 | ...] (see lora_term.h).
// Arguments after the matmul's: slot int32 [B, J], weight float [B, J] (each row's adapters),
// then one (A, B) slot table pair per projection, in output order ((A, B, scale) for int8).
// One call instead of one per projection plus XLA's concatenate and add; and the panel version
// prefetches the slots the rows use while its arithmetic runs, so the term reads them from
// cache.
template <class W>
struct LoraTerm {
  std::vector<liminal::lora::Target<W>> targets;
  std::vector<int64_t> columns;  // where each target's outputs start in y's rows
  liminal::lora::RowAdapters rows;
  liminal::lora::SlotLines lines;

  ffi::Error init(const ffi::RemainingArgs& slots, ffi::Buffer<ffi::S32>& slot,
                  ffi::Buffer<ffi::F32>& weight, int64_t layer, int64_t m, int64_t k,
                  int64_t n) {
    const auto sd = slot.dimensions(), wd = weight.dimensions();
    if (sd.size() != 2 || wd.size() != 2 || sd[0] != m || wd[0] != m || wd[1] != sd[1])
      return ffi::Error::InvalidArgument("lora: slot/weight must be [B, J] for the B rows of x");
    if (auto error = liminal::lora::read_targets(slots, layer, k, n, targets); error.failure())
      return error;
    int64_t column = 0;
    for (const auto& t : targets) {
      columns.push_back(column);
      column += t.n;
    }
    rows = {slot.typed_data(), weight.typed_data(), sd[1]};
    lines.add(targets, rows, m);
    return ffi::Error::Success();
  }

  // y [m, n] += the terms (the column kernel's way). The work is split in (row, projection)
  // units, row by row: a batch splits by rows, and a single row still spreads its projections
  // over the threads.
  void add(ffi::ThreadPool& pool, const float* x, int64_t m, float* y, int64_t n) const {
    const int64_t count = targets.size();
    liminal::run_in_shares(pool, m * count, pool.num_threads(), [&](int64_t begin, int64_t end) {
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t row = unit / count, t = unit % count;
        liminal::lora::add_rows(targets[t], x, rows, y + columns[t], n, row, row + 1);
      }
    });
  }

  // y [m, n] += the terms in y's columns [begin, end) (the outputs of whichever targets they
  // cover), every row's: what the thread that computed those columns adds, in the same pass.
  void add_columns(const float* x, int64_t m, float* y, int64_t n, int64_t begin,
                   int64_t end) const {
    for (size_t t = 0; t < targets.size(); ++t) {
      const int64_t first = std::max(begin, columns[t]);
      const int64_t last = std::min(end, columns[t] + targets[t].n);
      liminal::lora::add_rows_in_columns(targets[t], x, rows, y + columns[t], n, 0, m,
                                         first - columns[t], last - columns[t]);
    }
  }

  // out[row, 0:n] = row `row`'s terms (out rows n apart); false, with out untouched, when the
  // row uses no adapter.
  bool row_term(const float* x, int64_t row, float* out, int64_t n) const {
    bool used = false;
    for (const auto& t : targets)
      for (int64_t u = 0; u < rows.j; ++u) used = used || rows.used(row, u, t.slots);
    if (!used) return false;
    std::fill(out + row * n, out + (row + 1) * n, 0.0f);
    for (size_t t = 0; t < targets.size(); ++t)
      liminal::lora::add_rows(targets[t], x, rows, out + columns[t], n, row, row + 1);
    return true;
  }
};

// Runs body(term) with the LoRA term of rows [0, m) read from the call's arguments, its W (float,
// uint16_t for bfloat16, or int8_t) the slot tables' element type; or returns why they do not
// fit.
template <class Body>
ffi::Error with_lora_term(const ffi::RemainingArgs& slots, ffi::Buffer<ffi::S32>& slot,
                          ffi::Buffer<ffi::F32>& weight, ffi::Buffer<ffi::S32>& layer, int64_t m,
                          int64_t k, int64_t n, const Body& body) {
  const auto type = liminal::lora::slot_type(slots);
  if (!type.has_value()) return type.error();
  auto run = [&](auto w) {
    LoraTerm<decltype(w)> term;
    if (auto error = term.init(slots, slot, weight, layer.typed_data()[0], m, k, n);
        error.failure())
      return error;
    body(term);
    return ffi::Error::Success();
  };
  switch (*type) {
    case ffi::DataType::BF16:
      return run(uint16_t{});
    case ffi::DataType::S8:
      return run(int8_t{});
    default:
      return run(float{});
  }
}

ffi::Error Q4MatmulLoraImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                            ffi::Buffer<ffi::U8> qs, ffi::Buffer<ffi::F32> scales,
                            ffi::Buffer<ffi::F32> mins, ffi::Buffer<ffi::S32> layer,
                            ffi::Buffer<ffi::S32> slot, ffi::Buffer<ffi::F32> weight,
                            ffi::RemainingArgs slots, ffi::ResultBuffer<ffi::F32> y) {
  Q4ColumnCall call;
  if (auto error = prepare_q4_columns(x, qs, scales, mins, layer, y, call); error.failure())
    return error;
  const Problem& p = call.p;
  return with_lora_term(slots, slot, weight, layer, p.rows, p.k, p.n, [&](const auto& term) {
    // A batch this narrow is bound by reading the weights: prefetching the slots as well
    // would only compete for the same bandwidth.
    if (p.rows == 1) {
      // Each thread adds the term in the columns it has just computed: one pass through the
      // pool instead of two (a round trip through it costs a few microseconds, against ~1-3
      // for a row's terms), at the price of each thread projecting x through the A of every
      // target its columns cover. Measured at 1 row; with more rows that price grows with them
      // and the split below keeps each row's projection on one thread.
      parallel_columns(pool, p.n, [&](int64_t begin, int64_t end) {
        columns(p, begin, end);
        term.add_columns(p.x, p.rows, p.y, p.n, begin, end);
      });
      return;
    }
    parallel_columns(pool, p.n, [&p](int64_t begin, int64_t end) { columns(p, begin, end); });
    term.add(pool, p.x, p.rows, p.y, p.n);
  });
}

ffi::Error Q4PanelMatmulLoraImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                                 ffi::Buffer<ffi::U8> qs, ffi::Buffer<ffi::F32> scales,
                                 ffi::Buffer<ffi::F32> mins, ffi::Buffer<ffi::S32> layer,
                                 ffi::Buffer<ffi::S32> slot, ffi::Buffer<ffi::F32> weight,
                                 ffi::RemainingArgs slots, ffi::ResultBuffer<ffi::F32> y) {
  Q4PanelCall call;
  if (auto error = prepare_q4_panels(x, qs, scales, mins, layer, y, call); error.failure())
    return error;
#if defined(__AVX512F__)
  const Panels& p = call.p;
  // The term's prefetching and the panels' transposed x are written for one block of rows.
  if (p.rows > kPanel) return ffi::Error::InvalidArgument("q4_panel_matmul_lora: at most 16 rows");
  return with_lora_term(slots, slot, weight, layer, p.rows, p.k, p.n, [&](const auto& term) {
    // Each thread computes the terms of its share of the rows (see SlotLines::rows) while it
    // multiplies its share of the panels, a row at a time: the panels run in chunks, one per
    // row and one more. Each chunk but the last prefetches the next row's slots (spread over
    // the chunk's steps, see Prefetch), and each but the first is followed by the term of the
    // row fetched during the chunk before. So each row's slots are read soon after they
    // arrive, from this core's L2 (but for a slot that an earlier row of another share uses:
    // SlotLines lists it once, and the other core fetches it); all of a share's slots at once
    // (up to 1 MB for gate/up) did not stay there until the end of the call.
    // The terms go to a buffer first: y's columns are not all written until every share is
    // done, so the last share to finish adds them (a second pass over the pool cost a round
    // trip through it per call: ~0.25 ms of a 16-row decode step over SmolLM2's 120 calls).
    const int64_t panels = call.panels, rows = p.rows, n = p.n;
    thread_local std::vector<float> buffer;  // the calling thread's: XLA calls from few threads
    buffer.resize(rows * n);
    float* const terms = buffer.data();  // (a lambda naming `buffer` would get its own thread's)
    std::vector<char> has_term(rows, 0);
    const int64_t shares = panel_shares(pool, panels);
    std::atomic<int64_t> unfinished(liminal::share_count(panels, shares));
    const float* xs = x.typed_data();
    auto add_terms = [&] {
      for (int64_t row = 0; row < rows; ++row) {
        if (!has_term[row]) continue;
        float* out = p.y + row * n;
        const float* add = terms + row * n;
        for (int64_t o = 0; o < n; o += kPanel)  // n is whole panels
          _mm512_storeu_ps(out + o,
                           _mm512_add_ps(_mm512_loadu_ps(out + o), _mm512_loadu_ps(add + o)));
      }
    };
    liminal::run_in_shares(pool, panels, shares, [&](int64_t begin, int64_t end) {
      const int64_t first_row = rows * begin / panels, share_rows = rows * end / panels - first_row;
      if (share_rows == 0) {
        multiply_panels(call.f, p, begin, end);
      } else {
        for (int64_t chunk = 0; chunk <= share_rows; ++chunk) {
          const int64_t chunk_begin = begin + (end - begin) * chunk / (share_rows + 1);
          const int64_t chunk_end = begin + (end - begin) * (chunk + 1) / (share_rows + 1);
          if (chunk < share_rows) {
            const auto [first, last] = term.lines.rows(first_row + chunk, first_row + chunk + 1);
            Prefetch prefetch = Prefetch::spread(first, last, panel_steps(p, chunk_begin, chunk_end));
            multiply_panels(call.f, p, chunk_begin, chunk_end, prefetch);
          } else {
            multiply_panels(call.f, p, chunk_begin, chunk_end);
          }
          if (chunk > 0) {
            const int64_t row = first_row + chunk - 1;
            has_term[row] = term.row_term(xs, row, terms, n);
          }
        }
      }
      // acq_rel: the last share sees every other share's y columns and terms.
      if (unfinished.fetch_sub(1, std::memory_order_acq_rel) == 1) add_terms();
    });
  });
#else
  return ffi::Error::Success();  // prepare_q4_panels has already refused
#endif
}

}  // namespace

// Which vector path this build takes (512, 256 or 0), so that callers know up to how many rows
// the kernel beats XLA's float32 GEMM on this machine.
extern "C" int LiminalQ4VectorBits() {
#if defined(__AVX512F__)
  return 512;
#elif defined(__AVX2__) && defined(__FMA__)
  return 256;
#else
  return 0;
#endif
}

// The 4-bit kernels' common arguments: x, qs, scales, mins, layer. The LoRA versions add
// slot, weight and the slot tables.
#define LIMINAL_Q4_ARGS                  \
  ffi::Ffi::Bind()                       \
      .Ctx<ffi::ThreadPool>()            \
      .Arg<ffi::Buffer<ffi::F32>>()      \
      .Arg<ffi::Buffer<ffi::U8>>()       \
      .Arg<ffi::Buffer<ffi::F32>>()      \
      .Arg<ffi::Buffer<ffi::F32>>()      \
      .Arg<ffi::Buffer<ffi::S32>>()
#define LIMINAL_Q4_HANDLER(name, impl) \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, impl, LIMINAL_Q4_ARGS.Ret<ffi::Buffer<ffi::F32>>());
#define LIMINAL_Q4_LORA_HANDLER(name, impl)                                            \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, impl,                                            \
                                LIMINAL_Q4_ARGS.Arg<ffi::Buffer<ffi::S32>>()           \
                                    .Arg<ffi::Buffer<ffi::F32>>()                      \
                                    .RemainingArgs()                                   \
                                    .Ret<ffi::Buffer<ffi::F32>>());
// x, qs, scales.
#define LIMINAL_Q8_HANDLER(name, impl)                          \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, impl,                     \
                                ffi::Ffi::Bind()                \
                                    .Ctx<ffi::ThreadPool>()     \
                                    .Arg<ffi::Buffer<ffi::F32>>() \
                                    .Arg<ffi::Buffer<ffi::S8>>()  \
                                    .Arg<ffi::Buffer<ffi::F32>>() \
                                    .Ret<ffi::Buffer<ffi::F32>>());

LIMINAL_Q4_HANDLER(LiminalQ4Matmul, Q4MatmulImpl)
LIMINAL_Q4_HANDLER(LiminalQ4PanelMatmul, Q4PanelMatmulImpl)
LIMINAL_Q4_LORA_HANDLER(LiminalQ4MatmulLora, Q4MatmulLoraImpl)
LIMINAL_Q4_LORA_HANDLER(LiminalQ4PanelMatmulLora, Q4PanelMatmulLoraImpl)
LIMINAL_Q8_HANDLER(LiminalQ8Matmul, Q8MatmulImpl)
LIMINAL_Q8_HANDLER(LiminalQ8PanelMatmul, Q8PanelMatmulImpl)
