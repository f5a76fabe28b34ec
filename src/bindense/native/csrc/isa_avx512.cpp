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

template <int P>
inline void mk(const uint64_t* xp, int64_t ps, const int64_t* toff, int64_t T, int64_t Kd, const uint64_t* wb,
               Acc* acc, int64_t xplane) {
  (void)xplane;
  __m512i a[P][4];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < 4; ++v) a[p][v] = _mm512_setzero_si512();
  for (int64_t t = 0; t < T; ++t) {
    const uint64_t* xt = xp + toff[t];
    const uint64_t* wt = wb + t * Kd * OB;
    for (int64_t k = 0; k < Kd; ++k) {
      const __m512i w0 = _mm512_loadu_si512(wt + k * OB), w1 = _mm512_loadu_si512(wt + k * OB + 8);
      const __m512i w2 = _mm512_loadu_si512(wt + k * OB + 16), w3 = _mm512_loadu_si512(wt + k * OB + 24);
      for (int p = 0; p < P; ++p) {
        const __m512i xv = _mm512_set1_epi64(static_cast<long long>(xt[p * ps + k]));
        a[p][0] = _mm512_add_epi64(a[p][0], _mm512_popcnt_epi64(_mm512_xor_si512(xv, w0)));
        a[p][1] = _mm512_add_epi64(a[p][1], _mm512_popcnt_epi64(_mm512_xor_si512(xv, w1)));
        a[p][2] = _mm512_add_epi64(a[p][2], _mm512_popcnt_epi64(_mm512_xor_si512(xv, w2)));
        a[p][3] = _mm512_add_epi64(a[p][3], _mm512_popcnt_epi64(_mm512_xor_si512(xv, w3)));
      }
    }
  }
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < 4; ++v) _mm512_storeu_si512(acc + p * OB + v * 8, a[p][v]);
}

#include "conv_body.h"

}  // namespace

int block() { return OB; }
int planes() { return PLANES; }
void conv_rows(const ConvArgs& a, int64_t begin, int64_t end) { conv_rows_impl(a, begin, end); }
void dw_rows(const DwArgs& a, int64_t begin, int64_t end) { dw_rows_impl(a, begin, end); }
void dwp_planes(const DwpArgs& a, int64_t begin, int64_t end) { dwp_planes_impl(a, begin, end); }

}  // namespace bdn::avx512
