// AVX2 path: 4 output channels per ymm; popcount by nibble lookup (vpshufb) into byte counters, summed by vpsadbw
// every <= 31 words (a byte counter gains <= 8 per word); PX pixels x 8 output channels per tile. The weights a
// model holds are the plain packed words; the kernel reads them split into low/high nibble planes, made per call
// (binconv.cpp, nibble_planes), and the padded input arrives split the same way.
#include <immintrin.h>

#include "kernel.h"

#pragma GCC target("avx2")

namespace bdn::avx2 {
namespace {

constexpr int OB = 8;
constexpr int PX = 4;  // 8 byte counters + lut + 2 inputs + 4 temporaries in 16 ymm; weights as memory operands
constexpr int VB = 32;
constexpr int PLANES = 2;
using Acc = int32_t;  // AVX2 converts int32 (not int64) to float in vectors: the epilogue's conversion vectorises

// One word of one pixel against 8 output channels: c0 (channels 0-3) and c1 (4-7) gain, per byte,
// lut[xl ^ wl] + lut[xh ^ wh] (2 xor, 2 vpshufb, 2 add per 4 output channels; the weights as memory operands).
inline void step(__m256i& c0, __m256i& c1, __m256i lut, const uint64_t* x, int64_t xplane, const uint64_t* w) {
  const __m256i xl = _mm256_set1_epi64x(static_cast<long long>(x[0]));
  const __m256i xh = _mm256_set1_epi64x(static_cast<long long>(x[xplane]));
  const __m256i* wv = reinterpret_cast<const __m256i*>(w);
  const __m256i l0 = _mm256_shuffle_epi8(lut, _mm256_xor_si256(xl, _mm256_loadu_si256(wv)));
  const __m256i l1 = _mm256_shuffle_epi8(lut, _mm256_xor_si256(xl, _mm256_loadu_si256(wv + 1)));
  const __m256i h0 = _mm256_shuffle_epi8(lut, _mm256_xor_si256(xh, _mm256_loadu_si256(wv + 2)));
  const __m256i h1 = _mm256_shuffle_epi8(lut, _mm256_xor_si256(xh, _mm256_loadu_si256(wv + 3)));
  c0 = _mm256_add_epi8(c0, _mm256_add_epi8(l0, h0));
  c1 = _mm256_add_epi8(c1, _mm256_add_epi8(l1, h1));
}

// s64[p][0..7] += the byte counters of pixel p summed per 64-bit lane (vpsadbw; one lane per output channel);
// the counters restart at 0.
template <int P>
inline void flush(__m256i (&c8)[P][2], int64_t* s64) {
  const __m256i zero = _mm256_setzero_si256();
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < 2; ++v) {
      __m256i* dst = reinterpret_cast<__m256i*>(s64 + p * OB + 4 * v);
      _mm256_storeu_si256(dst, _mm256_add_epi64(_mm256_loadu_si256(dst), _mm256_sad_epu8(c8[p][v], zero)));
      c8[p][v] = zero;
    }
}

template <int P>
inline void mk(const uint64_t* xp, int64_t ps, const int64_t* toff, int64_t T, int64_t Kd, const uint64_t* wb,
               Acc* acc, int64_t xplane) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  __m256i c8[P][2];
  for (int p = 0; p < P; ++p) c8[p][0] = c8[p][1] = _mm256_setzero_si256();
  alignas(32) int64_t s64[P * OB] = {};  // the 64-bit sums of the flushes
  // x and w arrive nibble-split (plane 0: low nibbles, plane 1: high nibbles, each byte < 16), so
  // popcount(x ^ w) per byte = lut[xl ^ wl] + lut[xh ^ wh]: 2 xor, 2 vpshufb, 2 add per 4 output channels.
  // Words run tap-major (the weights of word i = t * Kd + k are at wb + i * 2 * OB), in runs of <= 31 between
  // flushes (the flush outside the inner loop).
  const int64_t n = T * Kd;
  int64_t t = 0, k = 0;
  for (int64_t i0 = 0; i0 < n; i0 += 31) {
    const int64_t i1 = i0 + 31 < n ? i0 + 31 : n;
    for (int64_t i = i0; i < i1; ++i) {
      const uint64_t* x = xp + toff[t] + k;
      for (int p = 0; p < P; ++p) step(c8[p][0], c8[p][1], lut, x + p * ps, xplane, wb + i * 2 * OB);
      if (++k == Kd) {
        k = 0;
        ++t;
      }
    }
    flush(c8, s64);
  }
  // The sums are < 2^31 (T * Kd * 64): the low 32 bits of the 64-bit lanes, in order.
  const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  const __m256i* sv = reinterpret_cast<const __m256i*>(s64);
  for (int p = 0; p < P; ++p) {
    const __m256i lo = _mm256_permutevar8x32_epi32(_mm256_load_si256(sv + 2 * p), even);
    const __m256i hi = _mm256_permutevar8x32_epi32(_mm256_load_si256(sv + 2 * p + 1), even);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + p * OB), _mm256_blend_epi32(lo, hi, 0xF0));
  }
}

#include "conv_body.h"

}  // namespace

int block() { return OB; }
int planes() { return PLANES; }
void conv_rows(const ConvArgs& a, int64_t begin, int64_t end) { conv_rows_impl(a, begin, end); }
void dw_rows(const DwArgs& a, int64_t begin, int64_t end) { dw_rows_impl(a, begin, end); }
void dwp_planes(const DwpArgs& a, int64_t begin, int64_t end) { dwp_planes_impl(a, begin, end); }

}  // namespace bdn::avx2
