// Portable path: plain C++ with the compiler's scalar popcount, 4 pixels x 8 output channels per tile.
#include "kernel.h"

namespace bdn::generic {
namespace {

constexpr int OB = 8;
constexpr int PX = 4;
constexpr int VB = 16;
constexpr int PLANES = 1;
using Acc = int64_t;

template <int P>
inline void mk(const uint64_t* xp, int64_t ps, const int64_t* toff, int64_t T, int64_t Kd, const uint64_t* wb,
               Acc* acc, int64_t xplane) {
  (void)xplane;
  int64_t a[P][OB] = {};
  for (int64_t t = 0; t < T; ++t) {
    const uint64_t* xt = xp + toff[t];
    const uint64_t* wt = wb + t * Kd * OB;
    for (int64_t k = 0; k < Kd; ++k) {
      for (int p = 0; p < P; ++p) {
        const uint64_t xv = xt[p * ps + k];
        for (int l = 0; l < OB; ++l) a[p][l] += __builtin_popcountll(xv ^ wt[k * OB + l]);
      }
    }
  }
  for (int p = 0; p < P; ++p)
    for (int l = 0; l < OB; ++l) acc[p * OB + l] = a[p][l];
}

#include "conv_body.h"

}  // namespace

int block() { return OB; }
int planes() { return PLANES; }
void conv_rows(const ConvArgs& a, int64_t begin, int64_t end) { conv_rows_impl(a, begin, end); }
void dw_rows(const DwArgs& a, int64_t begin, int64_t end) { dw_rows_impl(a, begin, end); }
void dwp_planes(const DwpArgs& a, int64_t begin, int64_t end) { dwp_planes_impl(a, begin, end); }

}  // namespace bdn::generic
