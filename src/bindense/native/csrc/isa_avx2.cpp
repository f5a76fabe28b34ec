// AVX2 path: 4 output channels per ymm; popcount by nibble lookup (vpshufb) on nibble-split words into byte
// counters, summed to 64-bit lanes with vpsadbw every <= 31 words (a byte counter gains <= 8 per word);
// 3 pixels x 8 output channels per tile.
#include <immintrin.h>

#include "kernel.h"

#pragma GCC target("avx2")

namespace bdn::avx2 {
namespace {

constexpr int OB = 8;
constexpr int PX = 3;  // 6 byte counters + lut + 4 weight + 2 input registers fit the 16 ymm registers
constexpr int VB = 32;
constexpr int PLANES = 2;

inline __m256i load(const uint64_t* q) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)); }

template <int P>
inline void mk(const uint64_t* xp, int64_t ps, const int64_t* toff, int64_t T, int64_t Kd, const uint64_t* wb,
               int64_t* acc, int64_t xplane) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i zero = _mm256_setzero_si256();
  __m256i c8[P][2];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < 2; ++v) c8[p][v] = zero;
  for (int q = 0; q < P * OB; ++q) acc[q] = 0;
  auto flush = [&]() {  // 64-bit sums stay in memory (acc): registers are for the byte counters
    for (int p = 0; p < P; ++p)
      for (int v = 0; v < 2; ++v) {
        __m256i* dst = reinterpret_cast<__m256i*>(acc + p * OB + v * 4);
        _mm256_storeu_si256(dst, _mm256_add_epi64(_mm256_loadu_si256(dst), _mm256_sad_epu8(c8[p][v], zero)));
        c8[p][v] = zero;
      }
  };
  // x and w arrive nibble-split (plane 0: low nibbles, plane 1: high nibbles, each byte < 16), so
  // popcount(x ^ w) per byte = lut[xl ^ wl] + lut[xh ^ wh]: 2 xor, 2 vpshufb, 2 add per 256 bits.
  int pending = 0;
  for (int64_t t = 0; t < T; ++t) {
    const uint64_t* xt = xp + toff[t];
    const uint64_t* wt = wb + t * Kd * 2 * OB;
    for (int64_t k = 0; k < Kd; ++k) {
      const uint64_t* wk = wt + k * 2 * OB;
      const __m256i wl0 = load(wk), wl1 = load(wk + 4), wh0 = load(wk + OB), wh1 = load(wk + OB + 4);
      for (int p = 0; p < P; ++p) {
        const __m256i xl = _mm256_set1_epi64x(static_cast<long long>(xt[p * ps + k]));
        const __m256i xh = _mm256_set1_epi64x(static_cast<long long>(xt[p * ps + k + xplane]));
        c8[p][0] = _mm256_add_epi8(c8[p][0], _mm256_shuffle_epi8(lut, _mm256_xor_si256(xl, wl0)));
        c8[p][1] = _mm256_add_epi8(c8[p][1], _mm256_shuffle_epi8(lut, _mm256_xor_si256(xl, wl1)));
        c8[p][0] = _mm256_add_epi8(c8[p][0], _mm256_shuffle_epi8(lut, _mm256_xor_si256(xh, wh0)));
        c8[p][1] = _mm256_add_epi8(c8[p][1], _mm256_shuffle_epi8(lut, _mm256_xor_si256(xh, wh1)));
      }
      if (++pending == 31) {
        flush();
        pending = 0;
      }
    }
  }
  flush();
}

#include "conv_body.h"

}  // namespace

int block() { return OB; }
int planes() { return PLANES; }
void conv_rows(const ConvArgs& a, int64_t begin, int64_t end) { conv_rows_impl(a, begin, end); }
void dw_rows(const DwArgs& a, int64_t begin, int64_t end) { dw_rows_impl(a, begin, end); }
void dwp_planes(const DwpArgs& a, int64_t begin, int64_t end) { dwp_planes_impl(a, begin, end); }

}  // namespace bdn::avx2
