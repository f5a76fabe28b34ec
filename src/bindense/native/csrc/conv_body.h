// The ISA-independent part of the kernels, textually included by each isa_*.cpp inside an anonymous namespace
// after it defined: using Acc (the integer type of the popcount sums: int64_t, or int32_t where the ISA converts
// int32 but not int64 to float in vectors), constexpr int OB (output channels per weight block), PX (pixels per
// tile), PLANES (words per packed word: 1, or 2 for nibble-split AVX2), VB (bytes per vector register, for the
// depthwise sums) and template <int P> void mk(xp, pixel_stride, tap_offsets, T, Kd, wblock, Acc acc[P][OB],
// plane_offset) (the register-blocked XOR + popcount micro-kernel: acc[p][l] = sum over taps t and words k of
// popcount(x[p, t, k] ^ w[t, k, l])).
// Includes nothing: the enclosing file compiles it for its own ISA.

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// Offsets (in words) of the taps t = dy * kw + dx of the kernel window from its top-left input word.
inline void tap_offsets(const bdn::ConvArgs& a, int64_t* toff) {
  for (int64_t dy = 0; dy < a.kh; ++dy)
    for (int64_t dx = 0; dx < a.kw; ++dx) toff[dy * a.kw + dx] = (dy * a.Wp + dx) * a.XS;
}

// One task of the conv: output row i of the block ob of OB output channels of conv group g of image n, with the
// input row of its first tap (iy0; negative on the padding), whether the window's rows all lie inside the image,
// and the first packed word of its input row.
struct RowTask {
  int64_t n, g, ob, i, iy0;
  bool row_inside;
  const uint64_t* xrow;
};

inline RowTask row_task(const bdn::ConvArgs& a, int64_t task, int64_t nOB) {
  RowTask t;
  t.i = task % a.Ho;
  task /= a.Ho;
  t.ob = task % nOB;
  task /= nOB;
  t.g = task % a.G;
  t.n = task / a.G;
  t.iy0 = t.i * a.sh - a.ph;
  t.row_inside = t.iy0 >= 0 && t.iy0 + a.kh <= a.H;
  t.xrow = a.x + ((t.n * a.Hp + t.i * a.sh) * a.Wp) * a.XS + t.g * a.D * a.Kd;
  return t;
}

// Sum of a row in 16 float lanes, then in double (the statistic the next DAB's threshold needs: k mean(y) + b).
inline double row_sum(const float* yp, int64_t Wo) {
  float lane[16] = {};
  int64_t j = 0;
  for (; j + 16 <= Wo; j += 16)
    for (int q = 0; q < 16; ++q) lane[q] += yp[j + q];
  double sum = 0.0;
  for (; j < Wo; ++j) sum += yp[j];
  for (int q = 0; q < 16; ++q) sum += lane[q];
  return sum;
}

// The epilogue of one output row of one block of OB output channels (its sums in rb[Wo][OB]): streams each output
// channel's row out contiguously (storing a few pixels into OB far-apart output planes per tile thrashes the caches
// and the prefetchers): scale, bias, residual (tiled or CFB-merged), the activation after the unit, ReLU, and the
// row's sum for the next unit.
void conv_epilogue(const bdn::ConvArgs& a, const float* rb, int64_t n, int64_t g, int64_t ob, int64_t i) {
  const int64_t Wo = a.Wo, lmax = imin(OB, a.Og - ob * OB);
  for (int64_t l = 0; l < lmax; ++l) {
    const int64_t o = g * a.Og + ob * OB + l;
    const float s = a.out_scale ? a.out_scale[o] : 1.f, b = a.out_bias ? a.out_bias[o] : 0.f;
    const int64_t off = ((n * a.O + o) * a.Ho + i) * Wo;
    const float* src = rb + l;
    float* yp = a.y + off;
    const int64_t cnt = a.res_map ? a.res_map[3 * o + 2] : 1;
    if (a.residual && cnt == 1) {
      const int64_t rc = a.res_map ? a.res_map[3 * o] : o % a.res_channels;
      const float* rp = a.residual + ((n * a.res_channels + rc) * a.Ho + i) * Wo;
      for (int64_t j = 0; j < Wo; ++j) yp[j] = src[j * OB] * s + b + rp[j];
    } else if (a.residual) {  // CFB's merged channel: the mean of cnt residual channels
      const int64_t plane = a.Ho * Wo, step = a.res_map[3 * o + 1] * plane;
      const float* rp = a.residual + ((n * a.res_channels + a.res_map[3 * o]) * a.Ho + i) * Wo;
      const float count = static_cast<float>(cnt);
      for (int64_t j = 0; j < Wo; ++j) yp[j] = rp[j];  // the sum gathers in the output row, one stream at a time
      for (int64_t q = 1; q < cnt; ++q) {
        const float* rq = rp + q * step;
        for (int64_t j = 0; j < Wo; ++j) yp[j] += rq[j];
      }
      for (int64_t j = 0; j < Wo; ++j) yp[j] = src[j * OB] * s + b + yp[j] / count;
    } else {
      for (int64_t j = 0; j < Wo; ++j) yp[j] = src[j * OB] * s + b;
    }
    if (a.act_bias) {
      const float ab = a.act_bias[o];
      for (int64_t j = 0; j < Wo; ++j) yp[j] += ab;
    }
    if (a.act_slope) {
      const float sl = a.act_slope[o];
      for (int64_t j = 0; j < Wo; ++j) yp[j] = yp[j] > 0.f ? yp[j] : sl * yp[j];
    }
    if (a.act_bias2) {
      const float ab = a.act_bias2[o];
      for (int64_t j = 0; j < Wo; ++j) yp[j] += ab;
    }
    if (a.relu)
      for (int64_t j = 0; j < Wo; ++j) yp[j] = yp[j] < 0.f ? 0.f : yp[j];
    if (a.row_sums) a.row_sums[(n * a.O + o) * a.Ho + i] = row_sum(yp, Wo);
  }
}

// Border pixel (input window not fully inside the image): the padded taps read zero words, each of which counted
// popcount(w) into ap[]; remove those and return the number of taps inside the image.
template <typename A>
inline int64_t remove_padded_taps(const bdn::ConvArgs& a, int64_t iy0, int64_t ix0, int64_t g, int64_t ob, int64_t d,
                                  int64_t T, A* ap) {
  int64_t nvalid = 0;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t iy = iy0 + t / a.kw, ix = ix0 + t % a.kw;
    const bool inside = iy >= 0 && iy < a.H && ix >= 0 && ix < a.W;
    nvalid += inside;
    if (inside) continue;
    const int32_t* wp = a.wpop + ((g * a.Ogp + ob * OB) * a.D + d) * T + t;
    for (int64_t l = 0; l < OB; ++l) ap[l] -= wp[l * a.D * T];
  }
  return nvalid;
}

#ifdef BDN_MKG
// The sums of one pixel over segment d the plain way (mk<1>: integer popcounts, corrected for the taps on the
// padding), added to fp[OB] scaled by the segment's scale sc.
inline void pixel_segment(const bdn::ConvArgs& a, const uint64_t* xp, int64_t ps, const int64_t* toff,
                          const uint64_t* wb, int64_t g, int64_t ob, int64_t d, int64_t iy0, int64_t ix0, float sc,
                          float* fp) {
  const int64_t T = a.kh * a.kw;
  int64_t ap[OB];
  mk<1>(xp, ps, toff, T, a.Kd, wb, ap, a.Xplane);
  const bool inside = iy0 >= 0 && iy0 + a.kh <= a.H && ix0 >= 0 && ix0 + a.kw <= a.W;
  const int64_t nvalid = inside ? T : remove_padded_taps(a, iy0, ix0, g, ob, d, T, ap);
  const int64_t full = a.seg_len[d] * nvalid;
  for (int64_t l = 0; l < OB; ++l) fp[l] += sc * static_cast<float>(full - 2 * ap[l]);
}

// DAB groups on an ISA with a grouped micro-kernel (mkg): the tiles inside the image sum all segments in float
// registers at once; border pixels take pixel_segment per segment.
void conv_rows_grouped(const bdn::ConvArgs& a, int64_t begin, int64_t end) {
  const int64_t T = a.kh * a.kw, nOB = a.Ogp / OB, ps = a.sw * a.XS, Wo = a.Wo, D = a.D;
  int64_t toff[bdn::kMaxTaps];
  tap_offsets(a, toff);
  float* rb = new float[OB * Wo];
  float* m2sc = new float[3 * D];
  float* sclo = m2sc + D;
  float* schi = sclo + D;
  float tile[PXG * 2 * OB];
  for (int64_t task = begin; task < end; ++task) {
    const RowTask rt = row_task(a, task, nOB);
    const int64_t i = rt.i, ob = rt.ob, g = rt.g, n = rt.n, iy0 = rt.iy0;
    const bool row_inside = rt.row_inside;
    const uint64_t* xrow = rt.xrow;
    const uint64_t* wb = a.w + ((g * nOB + ob) * D * T) * a.Kd * PLANES * OB;
    const float* sc = a.seg_scale + (n * a.G + g) * D;
    for (int64_t d = 0; d < D; ++d) {
      int64_t lo = 0;
      for (int64_t k = 0; k < a.Kd; ++k) lo += imin(32, a.seg_len[d] - 64 * k > 0 ? a.seg_len[d] - 64 * k : 0);
      m2sc[d] = -2.f * sc[d];
      sclo[d] = sc[d] * static_cast<float>(T * lo);
      schi[d] = sc[d] * static_cast<float>(T * (a.seg_len[d] - lo));
    }
    for (int64_t j0 = 0; j0 < Wo; j0 += PXG) {
      const int64_t np = imin(PXG, Wo - j0);
      const uint64_t* xp = xrow + j0 * ps;
      const int64_t ix_first = j0 * a.sw - a.pw, ix_last = (j0 + np - 1) * a.sw - a.pw;
      const bool tile_inside = row_inside && ix_first >= 0 && ix_last + a.kw <= a.W;
      if (tile_inside && np == PXG) {
        mkg<PXG>(xp, ps, toff, T, a.Kd, D, wb, m2sc, sclo, schi, tile);
      } else {
        for (int64_t p = 0; p < np; ++p) {
          const int64_t ix0 = (j0 + p) * a.sw - a.pw;
          float* fp = rb + (j0 + p) * OB;
          if (row_inside && ix0 >= 0 && ix0 + a.kw <= a.W) {
            mkg<1>(xp + p * ps, ps, toff, T, a.Kd, D, wb, m2sc, sclo, schi, tile + p * 2 * OB);
            continue;
          }
          for (int64_t l = 0; l < OB; ++l) fp[l] = 0.f;
          for (int64_t d = 0; d < D; ++d)
            pixel_segment(a, xp + p * ps + d * a.Kd, ps, toff, wb + d * T * a.Kd * PLANES * OB, g, ob, d, iy0, ix0,
                          sc[d], fp);
          for (int64_t l = 0; l < OB; ++l) tile[p * 2 * OB + 2 * l] = fp[l], tile[p * 2 * OB + 2 * l + 1] = 0.f;
        }
      }
      for (int64_t p = 0; p < np; ++p) {
        const float* tp = tile + p * 2 * OB;
        float* fp = rb + (j0 + p) * OB;
        for (int64_t l = 0; l < OB; ++l) fp[l] = tp[2 * l] + tp[2 * l + 1];
      }
    }
    conv_epilogue(a, rb, n, g, ob, i);
  }
  delete[] m2sc;
  delete[] rb;
}
#endif

// One task = one output row of one block of OB output channels of one conv group of one image. The row's sums
// gather in rb[Wo][OB] (cache-resident, vector adds over the OB channels), then conv_epilogue writes them out.
void conv_rows_impl(const bdn::ConvArgs& a, int64_t begin, int64_t end) {
#ifdef BDN_MKG
  if (a.seg_scale && a.D > 1) return conv_rows_grouped(a, begin, end);
#endif
  const int64_t T = a.kh * a.kw, nOB = a.Ogp / OB, ps = a.sw * a.XS, Wo = a.Wo;
  int64_t toff[bdn::kMaxTaps];
  tap_offsets(a, toff);
  Acc acc[PX * OB];
  float* rb = new float[OB * Wo];
  for (int64_t task = begin; task < end; ++task) {
    const RowTask rt = row_task(a, task, nOB);
    const int64_t i = rt.i, ob = rt.ob, g = rt.g, n = rt.n, iy0 = rt.iy0;  // input row of tap dy = iy0 + dy
    const bool row_inside = rt.row_inside;
    const uint64_t* xrow = rt.xrow;
    for (int64_t q = 0; q < OB * Wo; ++q) rb[q] = 0.f;
    for (int64_t d = 0; d < a.D; ++d) {
      const uint64_t* wb = a.w + (((g * nOB + ob) * a.D + d) * T) * a.Kd * PLANES * OB;
      const float sc = a.seg_scale ? a.seg_scale[(n * a.G + g) * a.D + d] : 1.f;
      const int64_t len = a.seg_len[d];
      for (int64_t j0 = 0; j0 < Wo; j0 += PX) {
        const int64_t np = imin(PX, Wo - j0);
        const uint64_t* xp = xrow + j0 * ps + d * a.Kd;
        if (np == PX) {
          mk<PX>(xp, ps, toff, T, a.Kd, wb, acc, a.Xplane);
        } else {
          for (int64_t p = 0; p < np; ++p) mk<1>(xp + p * ps, ps, toff, T, a.Kd, wb, acc + p * OB, a.Xplane);
        }
        for (int64_t p = 0; p < np; ++p) {
          const int64_t ix0 = (j0 + p) * a.sw - a.pw;
          Acc* ap = acc + p * OB;
          float* fp = rb + (j0 + p) * OB;
          const bool inside = row_inside && ix0 >= 0 && ix0 + a.kw <= a.W;
          const int64_t nvalid = inside ? T : remove_padded_taps(a, iy0, ix0, g, ob, d, T, ap);
          const Acc full = static_cast<Acc>(len * nvalid);
          for (int64_t l = 0; l < OB; ++l) fp[l] += sc * static_cast<float>(full - 2 * ap[l]);
        }
      }
    }
    conv_epilogue(a, rb, n, g, ob, i);
  }
  delete[] rb;
}

// Depthwise: one task = one output row of one image. Per pixel, the sign products of all taps accumulate in int8
// lanes over the channels (|sum| <= 127 per chunk of taps), as (x ^ m) - m with m = 0 (w = +1) or -1 (w = -1);
// the row gathers in rb[C][Wo] and streams out per channel.
// VB int8 lanes (the enclosing file's register width: 64 zmm, 32 ymm, 16 xmm); GCC lowers the vector extension.
typedef int8_t I8V __attribute__((vector_size(VB)));

void dw_rows_impl(const bdn::DwArgs& a, int64_t begin, int64_t end) {
  const int64_t T = a.kh * a.kw, Cp = a.Cp, Wo = a.Wo;
  int64_t toff[bdn::kMaxTaps];
  for (int64_t t = 0; t < T; ++t) toff[t] = ((t / a.kw) * a.Wp + t % a.kw) * Cp;
  float* rb = new float[Cp * Wo];
  for (int64_t task = begin; task < end; ++task) {
    const int64_t i = task % a.Ho, n = task / a.Ho;
    for (int64_t j = 0; j < Wo; ++j) {
      const int8_t* xpix = a.xs + ((n * a.Hp + i * a.sh) * a.Wp + j * a.sw) * Cp;
      for (int64_t c0 = 0; c0 < Cp; c0 += VB) {  // one register of VB channels' int8 sums (Cp % 64 == 0)
        const int64_t nc = imin(VB, a.C - c0);
        float* rc = rb + c0 * Wo + j;
        for (int64_t t0 = 0; t0 < T; t0 += 127) {  // |sum| of <= 127 taps fits int8
          I8V acc = {};
          for (int64_t t = t0; t < imin(T, t0 + 127); ++t) {
            I8V xv, mv;
            __builtin_memcpy(&xv, xpix + toff[t] + c0, VB);
            __builtin_memcpy(&mv, a.wm + t * Cp + c0, VB);
            acc += (xv ^ mv) - mv;
          }
          for (int64_t c = 0; c < nc; ++c) rc[c * Wo] = (t0 ? rc[c * Wo] : 0.f) + static_cast<float>(acc[c]);
        }
      }
    }
    for (int64_t c = 0; c < a.C; ++c) {
      const float cs = a.ch_scale ? a.ch_scale[n * a.C + c] : 1.f;
      const float s = a.out_scale ? a.out_scale[c] : 1.f, b = a.out_bias ? a.out_bias[c] : 0.f;
      const int64_t off = ((n * a.C + c) * a.Ho + i) * Wo;
      const float* src = rb + c * Wo;
      float* yp = a.y + off;
      if (a.residual) {
        const float* rp = a.residual + off;
        for (int64_t q = 0; q < Wo; ++q) yp[q] = (cs * src[q]) * s + b + rp[q];
      } else {
        for (int64_t q = 0; q < Wo; ++q) yp[q] = (cs * src[q]) * s + b;
      }
    }
  }
  delete[] rb;
}

// Depthwise from float input (bdn::DwpArgs): one task = one (sample, channel) plane. The signs go into a zero-padded
// int8 plane and its negation (0 on the padding: no border corrections), so that a tap with weight -1 reads the
// negated plane: each tap is one vector add along the output row (int8 lanes for up to 127 taps, else int16).
typedef int8_t I8W __attribute__((vector_size(VB)));
typedef int16_t I16V __attribute__((vector_size(VB)));
typedef int8_t I8H __attribute__((vector_size(VB / 2)));
constexpr int64_t L16 = VB / 2;

template <typename A>
void dwp_epilogue(const A* acc, float cs, float s, float b, const float* rp, float* yp, int64_t Wo, bool relu) {
  if (rp) {
    for (int64_t j = 0; j < Wo; ++j) yp[j] = (cs * static_cast<float>(acc[j])) * s + b + rp[j];
  } else {
    for (int64_t j = 0; j < Wo; ++j) yp[j] = (cs * static_cast<float>(acc[j])) * s + b;
  }
  if (relu)
    for (int64_t j = 0; j < Wo; ++j) yp[j] = yp[j] < 0.f ? 0.f : yp[j];
}

void dwp_planes_impl(const bdn::DwpArgs& a, int64_t begin, int64_t end) {
  const int64_t T = a.kh * a.kw, HW = a.H * a.W, Wo = a.Wo, plane = a.Hp * a.Wp + 2 * VB;  // slack: see below
  const int64_t nv8 = (Wo + VB - 1) / VB, nv16 = (Wo + L16 - 1) / L16;
  int8_t* sp = new int8_t[2 * plane];  // signs, then their negation
  int8_t* nsp = sp + plane;
  int8_t* acc8 = new int8_t[nv8 * VB];
  int16_t* acc16 = new int16_t[nv16 * L16];
  const int8_t* base[bdn::kMaxTaps];
  for (int64_t task = begin; task < end; ++task) {
    const int64_t c = task % a.C;
    const float* xp = a.x + task * HW;
    const float t = a.thr ? a.thr[task] : 0.f;
    for (int64_t q = 0; q < 2 * plane; ++q) sp[q] = 0;
    double asum = 0.0;
    for (int64_t y = 0; y < a.H; ++y) {
      const float* xr = xp + y * a.W;
      int8_t* sr = sp + (y + a.ph) * a.Wp + a.pw;
      int8_t* nr = nsp + (y + a.ph) * a.Wp + a.pw;
      float part[16] = {};
      int64_t x = 0;
      for (; x + 16 <= a.W; x += 16)
        for (int q = 0; q < 16; ++q) {
          const float v = xr[x + q] - t;
          sr[x + q] = v >= 0.f ? 1 : -1;
          nr[x + q] = v >= 0.f ? -1 : 1;
          part[q] += v < 0.f ? -v : v;
        }
      for (; x < a.W; ++x) {
        const float v = xr[x] - t;
        sr[x] = v >= 0.f ? 1 : -1;
        nr[x] = v >= 0.f ? -1 : 1;
        part[0] += v < 0.f ? -v : v;
      }
      for (int q = 0; q < 16; ++q) asum += part[q];
    }
    const float cs = a.scale_in ? a.scale_in[task]
                     : a.dab_a ? __builtin_expf(a.dab_a[c] * (static_cast<float>(asum / HW) - 1.0f)) : 1.f;
    if (a.ch_scale) a.ch_scale[task] = cs;
    const float s = a.out_scale ? a.out_scale[c] : 1.f, b = a.out_bias ? a.out_bias[c] : 0.f;
    const int8_t* wc = a.w + c * T;
    for (int64_t q = 0; q < T; ++q) base[q] = (wc[q] > 0 ? sp : nsp) + (q / a.kw) * a.Wp + q % a.kw;
    for (int64_t i = 0; i < a.Ho; ++i) {
      const int64_t off = (task * a.Ho + i) * Wo, r0 = i * a.sh * a.Wp;
      const float* rp = a.residual ? a.residual + off : nullptr;
      // stride 1: vector loads along the row; lanes past Wo read the next row or the slack, computed, never stored
      if (a.sw == 1 && T <= 127) {  // |S| <= 127 fits int8
        for (int64_t v = 0; v < nv8; ++v) {
          I8W acc = {};
          for (int64_t q = 0; q < T; ++q) {
            I8W r;
            __builtin_memcpy(&r, base[q] + r0 + v * VB, VB);
            acc += r;
          }
          __builtin_memcpy(acc8 + v * VB, &acc, VB);
        }
        dwp_epilogue(acc8, cs, s, b, rp, a.y + off, Wo, a.relu);
      } else if (a.sw == 1) {
        for (int64_t v = 0; v < nv16; ++v) {
          I16V acc = {};
          for (int64_t q = 0; q < T; ++q) {
            I8H r;
            __builtin_memcpy(&r, base[q] + r0 + v * L16, L16);
            acc += __builtin_convertvector(r, I16V);
          }
          __builtin_memcpy(acc16 + v * L16, &acc, VB);
        }
        dwp_epilogue(acc16, cs, s, b, rp, a.y + off, Wo, a.relu);
      } else {
        for (int64_t j = 0; j < Wo; ++j) {
          int16_t sum = 0;
          for (int64_t q = 0; q < T; ++q) sum = static_cast<int16_t>(sum + base[q][r0 + j * a.sw]);
          acc16[j] = sum;
        }
        dwp_epilogue(acc16, cs, s, b, rp, a.y + off, Wo, a.relu);
      }
      if (a.row_sums) a.row_sums[task * a.Ho + i] = row_sum(a.y + off, Wo);
    }
  }
  delete[] acc16;
  delete[] acc8;
  delete[] sp;
}
