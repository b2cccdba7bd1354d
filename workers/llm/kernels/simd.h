// A vector of floats for the kernels' portable-width loops (lora_term.h, attention.cc): 16 lanes
// with AVX-512, 8 with AVX2 + FMA; LIMINAL_SIMD is defined when either is there. The two 16-bit
// formats the kernels read widen by name (bfloat16 adapter slots, float16 KV cache), since both
// arrive as uint16_t; each kernel's Vec says which one its `load(const uint16_t*)` means.
#pragma once

#include <cstdint>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace liminal::simd {

#if defined(__AVX512F__)
#define LIMINAL_SIMD 1
struct Floats {
  using T = __m512;
  static constexpr int kWidth = 16;
  static T zero() { return _mm512_setzero_ps(); }
  static T load(const float* a) { return _mm512_loadu_ps(a); }
  static T load_bf16(const uint16_t* a) {  // the upper halves of float32s
    const __m256i half = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
  }
  static T load_f16(const uint16_t* a) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)));
  }
  static T broadcast(float x) { return _mm512_set1_ps(x); }
  static T fma(T a, T b, T acc) { return _mm512_fmadd_ps(a, b, acc); }
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
  static T sub(T a, T b) { return _mm512_sub_ps(a, b); }
  static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  static T max(T a, T b) { return _mm512_max_ps(a, b); }
  static float sum(T a) { return _mm512_reduce_add_ps(a); }
  static void store(float* a, T v) { _mm512_storeu_ps(a, v); }
};
#elif defined(__AVX2__) && defined(__FMA__)
#define LIMINAL_SIMD 1
struct Floats {
  using T = __m256;
  static constexpr int kWidth = 8;
  static T zero() { return _mm256_setzero_ps(); }
  static T load(const float* a) { return _mm256_loadu_ps(a); }
  static T load_bf16(const uint16_t* a) {
    const __m128i half = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(half), 16));
  }
  static T load_f16(const uint16_t* a) {  // F16C comes with every AVX2 CPU
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a)));
  }
  static T broadcast(float x) { return _mm256_set1_ps(x); }
  static T fma(T a, T b, T acc) { return _mm256_fmadd_ps(a, b, acc); }
  static T add(T a, T b) { return _mm256_add_ps(a, b); }
  static T sub(T a, T b) { return _mm256_sub_ps(a, b); }
  static T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  static T max(T a, T b) { return _mm256_max_ps(a, b); }
  static float sum(T a) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
  }
  static void store(float* a, T v) { _mm256_storeu_ps(a, v); }
};
#endif

}  // namespace liminal::simd
