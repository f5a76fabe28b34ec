// AVX-512 path (F, BW, DQ, VL, VPOPCNTDQ: Ice Lake and later): 8 output channels per zmm, VPOPCNTQ popcounts of x ^ w, 4 pixels x 32 output channels per tile.
#include <immintrin.h>

#include "kernel.h"

#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512vpopcntdq")

namespace bdn::avx512 {
namespace {

constexpr int OB = 32;
constexpr int PX = 4;
constexpr int VB = 64;
constexpr int PLANES = 1;
using Acc = int64_t;

// c[p][v] = sum over the taps t and words k of popcount(x[p, t, k] ^ w[t, k, 8v .. 8v + 7]), accumulated by add:
// PopAdd64 per 64-bit lane (one output channel each), PopAdd32 per 32-bit half lane (the grouped kernel).
template <int P, typename PopAdd>
inline void xor_popcount_taps(const uint64_t* xp, int64_t ps, const int64_t* toff, int64_t T, int64_t Kd,
                              const uint64_t* wb, __m512i (&c)[P][4], PopAdd add) {
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < 4; ++v) c[p][v] = _mm512_setzero_si512();
  for (int64_t t = 0; t < T; ++t) {
    const uint64_t* xt = xp + toff[t];
    const uint64_t* wt = wb + t * Kd * OB;
    for (int64_t k = 0; k < Kd; ++k) {
      const __m512i w0 = _mm512_loadu_si512(wt + k * OB), w1 = _mm512_loadu_si512(wt + k * OB + 8);
      const __m512i w2 = _mm512_loadu_si512(wt + k * OB + 16), w3 = _mm512_loadu_si512(wt + k * OB + 24);
      for (int p = 0; p < P; ++p) {
        const __m512i xv = _mm512_set1_epi64(static_cast<long long>(xt[p * ps + k]));
        c[p][0] = add(c[p][0], _mm512_xor_si512(xv, w0));
        c[p][1] = add(c[p][1], _mm512_xor_si512(xv, w1));
        c[p][2] = add(c[p][2], _mm512_xor_si512(xv, w2));
        c[p][3] = add(c[p][3], _mm512_xor_si512(xv, w3));
      }
    }
  }
}

struct PopAdd64 {
  __m512i operator()(__m512i acc, __m512i v) const { return _mm512_add_epi64(acc, _mm512_popcnt_epi64(v)); }
};
struct PopAdd32 {
  __m512i operator()(__m512i acc, __m512i v) const { return _mm512_add_epi32(acc, _mm512_popcnt_epi32(v)); }
};

template <int P>
inline void mk(const uint64_t* xp, int64_t ps, const int64_t* toff, int64_t T, int64_t Kd, const uint64_t* wb,
               Acc* acc, int64_t xplane) {
  (void)xplane;
  __m512i a[P][4];
  xor_popcount_taps<P>(xp, ps, toff, T, Kd, wb, a, PopAdd64{});
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < 4; ++v) _mm512_storeu_si512(acc + p * OB + v * 8, a[p][v]);
}

// Grouped micro-kernel (DAB groups: a float scale per segment of input channels), for tiles whose taps all lie
// inside the image. Each 64-bit weight word is read as two 32-bit halves (VPOPCNTD), so that a zmm holds 16 lanes:
// lanes 2i and 2i+1 are the low and high halves of output channel 8v + i of weight vector v. Per segment d, the
// half-lane counts c (ints, summed over its taps and words) become exact half sums L - 2c in float: out +=
// m2sc[d] * c + (sc[d] * L), L the half lane's channels times the taps (sclo / schi: sc[d] * L of even / odd lanes),
// so the running float sum stays as small as the result (no cancellation of large terms). out: [P][2 * OB] floats,
// output channel l = lanes 2l and 2l + 1 (added by the caller).
#define BDN_MKG 1
constexpr int PXG = 4;

template <int P>
inline void mkg(const uint64_t* xp, int64_t ps, const int64_t* toff, int64_t T, int64_t Kd, int64_t D,
                const uint64_t* wb, const float* m2sc, const float* sclo, const float* schi, float* out) {
  __m512 f[P][4];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < 4; ++v) f[p][v] = _mm512_setzero_ps();
  const __mmask16 odd = 0xAAAA;
  for (int64_t d = 0; d < D; ++d) {
    const uint64_t* xd = xp + d * Kd;
    const uint64_t* wd = wb + d * T * Kd * OB;
    const __m512 m = _mm512_set1_ps(m2sc[d]);
    const __m512 base = _mm512_mask_blend_ps(odd, _mm512_set1_ps(sclo[d]), _mm512_set1_ps(schi[d]));
    if (T * Kd == 1) {
      const __m512i w0 = _mm512_loadu_si512(wd), w1 = _mm512_loadu_si512(wd + 8);
      const __m512i w2 = _mm512_loadu_si512(wd + 16), w3 = _mm512_loadu_si512(wd + 24);
      for (int p = 0; p < P; ++p) {
        const __m512i xv = _mm512_set1_epi64(static_cast<long long>(xd[p * ps]));
        const __m512i c0 = _mm512_popcnt_epi32(_mm512_xor_si512(xv, w0));
        const __m512i c1 = _mm512_popcnt_epi32(_mm512_xor_si512(xv, w1));
        const __m512i c2 = _mm512_popcnt_epi32(_mm512_xor_si512(xv, w2));
        const __m512i c3 = _mm512_popcnt_epi32(_mm512_xor_si512(xv, w3));
        f[p][0] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_cvtepi32_ps(c0), m, f[p][0]), base);
        f[p][1] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_cvtepi32_ps(c1), m, f[p][1]), base);
        f[p][2] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_cvtepi32_ps(c2), m, f[p][2]), base);
        f[p][3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_cvtepi32_ps(c3), m, f[p][3]), base);
      }
      continue;
    }
    __m512i c[P][4];
    xor_popcount_taps<P>(xd, ps, toff, T, Kd, wd, c, PopAdd32{});
    for (int p = 0; p < P; ++p)
      for (int v = 0; v < 4; ++v) f[p][v] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_cvtepi32_ps(c[p][v]), m, f[p][v]), base);
  }
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < 4; ++v) _mm512_storeu_ps(out + p * 2 * OB + v * 16, f[p][v]);
}

#include "conv_body.h"

}  // namespace

int block() { return OB; }
int planes() { return PLANES; }
void conv_rows(const ConvArgs& a, int64_t begin, int64_t end) { conv_rows_impl(a, begin, end); }
void dw_rows(const DwArgs& a, int64_t begin, int64_t end) { dw_rows_impl(a, begin, end); }
void dwp_planes(const DwpArgs& a, int64_t begin, int64_t end) { dwp_planes_impl(a, begin, end); }

}  // namespace bdn::avx512
