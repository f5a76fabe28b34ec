// The ISA-independent part of the kernels, textually included by each isa_*.cpp inside an anonymous namespace
// after it defined: constexpr int OB (output channels per weight block), PX (pixels per tile), PLANES (words per
// packed word: 1, or 2 for nibble-split AVX2) and template <int P> void mk(xp, pixel_stride, tap_offsets, T, Kd,
// wblock, acc[P][OB], plane_offset) (the register-blocked XOR + popcount micro-kernel: acc[p][l] = sum over
// taps t and words k of popcount(x[p, t, k] ^ w[t, k, l])).
// Includes nothing: the enclosing file compiles it for its own ISA.

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// One task = one output row of one block of OB output channels of one conv group of one image.
void conv_rows_impl(const bdn::ConvArgs& a, int64_t begin, int64_t end) {
  const int64_t T = a.kh * a.kw, nOB = a.Ogp / OB, ps = a.sw * a.XS;
  int64_t toff[bdn::kMaxTaps];
  for (int64_t dy = 0; dy < a.kh; ++dy)
    for (int64_t dx = 0; dx < a.kw; ++dx) toff[dy * a.kw + dx] = (dy * a.Wp + dx) * a.XS;
  int64_t acc[PX * OB];
  float ft[PX * OB];
  for (int64_t task = begin; task < end; ++task) {
    int64_t r = task;
    const int64_t i = r % a.Ho; r /= a.Ho;
    const int64_t ob = r % nOB; r /= nOB;
    const int64_t g = r % a.G;
    const int64_t n = r / a.G;
    const int64_t iy0 = i * a.sh - a.ph;  // input row of tap dy = iy0 + dy
    bool row_inside = iy0 >= 0 && iy0 + a.kh <= a.H;
    const uint64_t* xrow = a.x + ((n * a.Hp + i * a.sh) * a.Wp) * a.XS + g * a.D * a.Kd;
    for (int64_t j0 = 0; j0 < a.Wo; j0 += PX) {
      const int64_t np = imin(PX, a.Wo - j0);
      for (int64_t q = 0; q < PX * OB; ++q) ft[q] = 0.f;
      for (int64_t d = 0; d < a.D; ++d) {
        const uint64_t* wb = a.w + (((g * nOB + ob) * a.D + d) * T) * a.Kd * PLANES * OB;
        const uint64_t* xp = xrow + j0 * ps + d * a.Kd;
        if (np == PX) {
          mk<PX>(xp, ps, toff, T, a.Kd, wb, acc, a.Xplane);
        } else {
          for (int64_t p = 0; p < np; ++p) mk<1>(xp + p * ps, ps, toff, T, a.Kd, wb, acc + p * OB, a.Xplane);
        }
        const float sc = a.seg_scale ? a.seg_scale[(n * a.G + g) * a.D + d] : 1.f;
        const int64_t len = a.seg_len[d];
        for (int64_t p = 0; p < np; ++p) {
          const int64_t ix0 = (j0 + p) * a.sw - a.pw;
          int64_t* ap = acc + p * OB;
          float* fp = ft + p * OB;
          if (row_inside && ix0 >= 0 && ix0 + a.kw <= a.W) {
            const int64_t full = len * T;
            for (int64_t l = 0; l < OB; ++l) fp[l] += sc * static_cast<float>(full - 2 * ap[l]);
            continue;
          }
          // Border pixel: padded taps read zero words, which counted popcount(w) each; remove them.
          int64_t nvalid = 0;
          for (int64_t t = 0; t < T; ++t) {
            const int64_t iy = iy0 + t / a.kw, ix = ix0 + t % a.kw;
            const bool inside = iy >= 0 && iy < a.H && ix >= 0 && ix < a.W;
            nvalid += inside;
            if (inside) continue;
            const int32_t* wp = a.wpop + ((g * a.Ogp + ob * OB) * a.D + d) * T + t;
            for (int64_t l = 0; l < OB; ++l) ap[l] -= wp[l * a.D * T];
          }
          for (int64_t l = 0; l < OB; ++l) fp[l] += sc * static_cast<float>(len * nvalid - 2 * ap[l]);
        }
      }
      const int64_t lmax = imin(OB, a.Og - ob * OB);
      for (int64_t l = 0; l < lmax; ++l) {
        const int64_t o = g * a.Og + ob * OB + l;
        const float s = a.out_scale ? a.out_scale[o] : 1.f, b = a.out_bias ? a.out_bias[o] : 0.f;
        const int64_t off = ((n * a.O + o) * a.Ho + i) * a.Wo + j0;
        float* yp = a.y + off;
        if (a.residual) {
          const float* rp = a.residual + off;
          for (int64_t p = 0; p < np; ++p) yp[p] = ft[p * OB + l] * s + b + rp[p];
        } else {
          for (int64_t p = 0; p < np; ++p) yp[p] = ft[p * OB + l] * s + b;
        }
      }
    }
  }
}

// Depthwise: one task = one output row of one image; int16 sums of int8 sign products, vectorised over channels.
void dw_rows_impl(const bdn::DwArgs& a, int64_t begin, int64_t end) {
  constexpr int64_t CP = 8, CC = 256;
  int16_t acc[CP * CC];
  for (int64_t task = begin; task < end; ++task) {
    const int64_t i = task % a.Ho, n = task / a.Ho;
    for (int64_t j0 = 0; j0 < a.Wo; j0 += CP) {
      const int64_t np = imin(CP, a.Wo - j0);
      for (int64_t c0 = 0; c0 < a.C; c0 += CC) {
        const int64_t nc = imin(CC, a.C - c0);
        for (int64_t q = 0; q < CP * CC; ++q) acc[q] = 0;
        for (int64_t dy = 0; dy < a.kh; ++dy) {
          for (int64_t dx = 0; dx < a.kw; ++dx) {
            const int8_t* wr = a.ws + (dy * a.kw + dx) * a.C + c0;
            for (int64_t p = 0; p < np; ++p) {
              const int8_t* xr = a.xs + ((n * a.Hp + i * a.sh + dy) * a.Wp + (j0 + p) * a.sw + dx) * a.C + c0;
              int16_t* ap = acc + p * CC;
              for (int64_t c = 0; c < nc; ++c) ap[c] = static_cast<int16_t>(ap[c] + xr[c] * wr[c]);
            }
          }
        }
        for (int64_t c = 0; c < nc; ++c) {
          const int64_t o = c0 + c;
          const float cs = a.ch_scale ? a.ch_scale[n * a.C + o] : 1.f;
          const float s = a.out_scale ? a.out_scale[o] : 1.f, b = a.out_bias ? a.out_bias[o] : 0.f;
          const int64_t off = ((n * a.C + o) * a.Ho + i) * a.Wo + j0;
          for (int64_t p = 0; p < np; ++p) {
            float v = (cs * static_cast<float>(acc[p * CC + c])) * s + b;
            if (a.residual) v += a.residual[off + p];
            a.y[off + p] = v;
          }
        }
      }
    }
  }
}
