// The ISA-independent part of the kernels, textually included by each isa_*.cpp inside an anonymous namespace
// after it defined: using Acc (the integer type of the popcount sums: int64_t, or int32_t where the ISA converts
// int32 but not int64 to float in vectors), constexpr int OB (output channels per weight block), PX (pixels per
// tile), PLANES (words per packed word: 1, or 2 for nibble-split AVX2), VB (bytes per vector register, for the
// depthwise sums) and template <int P> void mk(xp, pixel_stride, tap_offsets, T, Kd, wblock, Acc acc[P][OB],
// plane_offset) (the register-blocked XOR + popcount micro-kernel: acc[p][l] = sum over taps t and words k of
// popcount(x[p, t, k] ^ w[t, k, l])).
// Includes nothing: the enclosing file compiles it for its own ISA.

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// One task = one output row of one block of OB output channels of one conv group of one image. The row's sums
// gather in rb[Wo][OB] (cache-resident, vector adds over the OB channels); the epilogue then streams each output
// channel's row out contiguously (storing a few pixels into OB far-apart output planes per tile thrashes the
// caches and the prefetchers).
void conv_rows_impl(const bdn::ConvArgs& a, int64_t begin, int64_t end) {
  const int64_t T = a.kh * a.kw, nOB = a.Ogp / OB, ps = a.sw * a.XS, Wo = a.Wo;
  int64_t toff[bdn::kMaxTaps];
  for (int64_t dy = 0; dy < a.kh; ++dy)
    for (int64_t dx = 0; dx < a.kw; ++dx) toff[dy * a.kw + dx] = (dy * a.Wp + dx) * a.XS;
  Acc acc[PX * OB];
  float* rb = new float[OB * Wo];
  for (int64_t task = begin; task < end; ++task) {
    int64_t r = task;
    const int64_t i = r % a.Ho; r /= a.Ho;
    const int64_t ob = r % nOB; r /= nOB;
    const int64_t g = r % a.G;
    const int64_t n = r / a.G;
    const int64_t iy0 = i * a.sh - a.ph;  // input row of tap dy = iy0 + dy
    const bool row_inside = iy0 >= 0 && iy0 + a.kh <= a.H;
    const uint64_t* xrow = a.x + ((n * a.Hp + i * a.sh) * a.Wp) * a.XS + g * a.D * a.Kd;
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
          int64_t nvalid = T;
          if (!(row_inside && ix0 >= 0 && ix0 + a.kw <= a.W)) {
            // Border pixel: padded taps read zero words, which counted popcount(w) each; remove them.
            nvalid = 0;
            for (int64_t t = 0; t < T; ++t) {
              const int64_t iy = iy0 + t / a.kw, ix = ix0 + t % a.kw;
              const bool inside = iy >= 0 && iy < a.H && ix >= 0 && ix < a.W;
              nvalid += inside;
              if (inside) continue;
              const int32_t* wp = a.wpop + ((g * a.Ogp + ob * OB) * a.D + d) * T + t;
              for (int64_t l = 0; l < OB; ++l) ap[l] -= wp[l * a.D * T];
            }
          }
          const Acc full = static_cast<Acc>(len * nvalid);
          for (int64_t l = 0; l < OB; ++l) fp[l] += sc * static_cast<float>(full - 2 * ap[l]);
        }
      }
    }
    const int64_t lmax = imin(OB, a.Og - ob * OB);
    for (int64_t l = 0; l < lmax; ++l) {
      const int64_t o = g * a.Og + ob * OB + l;
      const float s = a.out_scale ? a.out_scale[o] : 1.f, b = a.out_bias ? a.out_bias[o] : 0.f;
      const int64_t off = ((n * a.O + o) * a.Ho + i) * Wo;
      const float* src = rb + l;
      float* yp = a.y + off;
      if (a.residual) {
        const float* rp = a.residual + ((n * a.res_channels + o % a.res_channels) * a.Ho + i) * Wo;
        for (int64_t j = 0; j < Wo; ++j) yp[j] = src[j * OB] * s + b + rp[j];
      } else {
        for (int64_t j = 0; j < Wo; ++j) yp[j] = src[j * OB] * s + b;
      }
      if (a.relu)
        for (int64_t j = 0; j < Wo; ++j) yp[j] = yp[j] < 0.f ? 0.f : yp[j];
    }
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
    }
  }
  delete[] acc16;
  delete[] acc8;
  delete[] sp;
}
