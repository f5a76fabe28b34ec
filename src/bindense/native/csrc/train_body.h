// Kernels of the training unit (train_ops.cpp), plain C++ over raw pointers: included once per ISA path inside that
// path's namespace and target region, after every header (no includes here, so no inline function of a header is
// compiled in one ISA's flavour and shared with another).
//
// The loops run on GCC vector types of 16 floats and 8 doubles, which each target region lowers to its widest
// registers (one AVX-512 register, two AVX2 ones, four SSE2 ones); the float operations are IEEE, element by
// element, so every path computes the same bits. Every reduction runs in kLanes = 16 double lanes: lane j adds the
// elements 16 m + j of the full blocks, then the tail elements go to lanes 0, 1, ..., and the lanes are folded in a
// fixed tree. The order does not depend on the vector width, and double lanes make the per-plane sums more
// accurate than float32 ones. Elementwise values are the float32 operations of the eager node in its order (no
// contraction: see train_ops.cpp).

constexpr int kLanes = 16;

typedef float f16 __attribute__((vector_size(64)));
typedef int32_t i16 __attribute__((vector_size(64)));
typedef double d8 __attribute__((vector_size(64)));

inline f16 load16(const float* p) {
  f16 v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline void store16(float* p, f16 v) { __builtin_memcpy(p, &v, sizeof v); }
// the first and the last 8 of 16 floats, in double
inline d8 widen_lo(f16 v) { return __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), d8); }
inline d8 widen_hi(f16 v) {
  return __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15), d8);
}
constexpr int32_t kSignBit = static_cast<int32_t>(0x80000000u);
inline f16 abs16(f16 v) { return (f16)((i16)v & ~kSignBit); }
// v with its sign flipped where s's sign bit is set (exact)
inline f16 flipsign16(f16 v, f16 s) { return (f16)((i16)v ^ ((i16)s & kSignBit)); }
// copysign(mag, v) for mag >= 0: mag's bits with v's sign bit, as copysignf
inline f16 copysign16(float mag, f16 v) { return (f16)(((i16)v & kSignBit) | (i16)(f16{} + mag)); }

// 16 double lanes: two vector registers while the blocks run (lo: lanes 0-7, hi: 8-15; plain locals, so that they
// stay in registers), then an array for the tail elements and the fold.
struct LaneArray {
  double lane[kLanes];
  LaneArray(d8 lo, d8 hi) {
    __builtin_memcpy(lane, &lo, sizeof lo);
    __builtin_memcpy(lane + 8, &hi, sizeof hi);
  }
  double fold() {
    for (int w = kLanes / 2; w > 0; w /= 2)
      for (int j = 0; j < w; ++j) lane[j] += lane[j + w];
    return lane[0];
  }
};

// s = (x - thr) + 0 (-0 -> +0), DAB's shifted input, per element and per block of 16.
inline float shift1(float x, float thr) { return (x - thr) + 0.0f; }
inline f16 shift16(f16 x, float thr) { return (x - thr) + 0.0f; }

// sum of x over a plane
inline double plane_sum(const float* x, int64_t n) {
  d8 lo = {}, hi = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const f16 v = load16(x + i);
    lo += widen_lo(v);
    hi += widen_hi(v);
  }
  LaneArray acc(lo, hi);
  for (int j = 0; i < n; ++i, ++j) acc.lane[j] += static_cast<double>(x[i]);
  return acc.fold();
}

// sum of |s| over a plane, s = shift(x, thr) (not stored)
inline double plane_abs_shift_sum(const float* x, float thr, int64_t n) {
  d8 lo = {}, hi = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const f16 m = abs16(shift16(load16(x + i), thr));
    lo += widen_lo(m);
    hi += widen_hi(m);
  }
  LaneArray acc(lo, hi);
  for (int j = 0; i < n; ++i, ++j) acc.lane[j] += static_cast<double>(__builtin_fabsf(shift1(x[i], thr)));
  return acc.fold();
}

// xb = copysign(alpha, s), s = shift(x, thr)
inline void plane_binarize(const float* x, float thr, float alpha, float* xb, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) store16(xb + i, copysign16(alpha, shift16(load16(x + i), thr)));
  for (; i < n; ++i) xb[i] = __builtin_copysignf(alpha, shift1(x[i], thr));
}

// DAB forward, planes [begin, end) of N * C: mean(x), thr = k mean(x) + b, s = (x - thr) + 0, mean|s|,
// alpha = exp(a (mean|s| - 1)), xb = copysign(alpha, s). Three passes over x's plane (the last two from cache); s
// is not stored: backward recomputes it from x and thr.
void dab_forward_planes(const DabForwardArgs& p, int64_t begin, int64_t end) {
  const int64_t n = p.HW;
  const double inv = 1.0 / static_cast<double>(n);
  for (int64_t q = begin; q < end; ++q) {
    const int64_t c = q % p.C;
    const float* x = p.x + q * n;
    const float mean_x = static_cast<float>(plane_sum(x, n) * inv);
    const float thr = no_contract(p.k[c] * mean_x) + p.b[c];
    const float mean_abs = static_cast<float>(plane_abs_shift_sum(x, thr, n) * inv);
    const float alpha = expf(p.a[c] * (mean_abs - 1.0f));
    plane_binarize(x, thr, alpha, p.xb + q * n, n);
    p.mean_x[q] = mean_x;
    p.mean_abs[q] = mean_abs;
    p.alpha[q] = alpha;
    p.thr[q] = thr;
  }
}

// xb = copysign(alpha, s) per plane (the binarized input rebuilt for the weight gradient).
void dab_rebuild_planes(const DabBackwardArgs& p, int64_t begin, int64_t end) {
  const int64_t n = p.HW;
  for (int64_t q = begin; q < end; ++q) plane_binarize(p.x + q * n, p.thr[q], p.alpha[q], p.out + q * n, n);
}

// DAB backward per plane, in g's buffer: g <- min(|s| - 1, 0) * g * (-2 alpha) (the ApproxSign surrogate
// 2 max(1 - |s|, 0) times alpha), with sum(g * copysign(alpha, s)) (for a) and sum of the new g (for k, b).
inline float surrogate1(float s, float g, float m2a) {
  const float t = __builtin_fabsf(s) - 1.0f;
  return ((t > 0.0f ? 0.0f : t) * g) * m2a;
}
inline f16 surrogate16(f16 s, f16 g, float m2a) {
  const f16 t = abs16(s) - 1.0f;
  return ((t > 0.0f ? f16{} : t) * g) * m2a;
}

void dab_backward_planes(const DabBackwardArgs& p, int64_t begin, int64_t end) {
  const int64_t n = p.HW;
  for (int64_t q = begin; q < end; ++q) {
    const float alpha = p.alpha[q], m2a = -2.0f * alpha, thr = p.thr[q];
    const float* x = p.x + q * n;
    float* g = p.out + q * n;
    // sum(g * xb) = alpha * sum(g * sign(s)): the signed g (g with its sign flipped where s < 0) summed in double
    d8 xb_lo = {}, xb_hi = {}, g_lo = {}, g_hi = {};
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      const f16 sv = shift16(load16(x + i), thr), gv = load16(g + i);
      const f16 signed_g = flipsign16(gv, sv);
      xb_lo += widen_lo(signed_g);
      xb_hi += widen_hi(signed_g);
      const f16 r = surrogate16(sv, gv, m2a);
      store16(g + i, r);
      g_lo += widen_lo(r);
      g_hi += widen_hi(r);
    }
    LaneArray gxb(xb_lo, xb_hi), gsum(g_lo, g_hi);
    for (int j = 0; i < n; ++i, ++j) {
      const float si = shift1(x[i], thr), gi = g[i];
      gxb.lane[j] += static_cast<double>(__builtin_signbit(si) ? -gi : gi);
      const float gx = surrogate1(si, gi, m2a);
      g[i] = gx;
      gsum.lane[j] += static_cast<double>(gx);
    }
    p.sum_gxb[q] = static_cast<float>(static_cast<double>(alpha) * gxb.fold());
    p.sum_grad[q] = static_cast<float>(gsum.fold());
  }
}

// wb = copysign(scale, w + 0) over a row (sign(-0) = +1)
inline void row_binarize(const float* w, float scale, float* wb, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) store16(wb + i, copysign16(scale, load16(w + i) + 0.0f));
  for (; i < n; ++i) wb[i] = __builtin_copysignf(scale, w[i] + 0.0f);
}

// Weights [O][K], rows [begin, end): scale = mean|w| of the row (1 without scaling), wb = copysign(scale, w + 0),
// outside[o] = number of |w| > 1 (or NaN) in the row (the clipped STE's mask is all ones where it is 0).
void weight_forward_rows(const WeightArgs& p, int64_t begin, int64_t end) {
  const int64_t n = p.K;
  for (int64_t o = begin; o < end; ++o) {
    const float* w = p.w + o * n;
    d8 lo = {}, hi = {};
    i16 inside = {};  // minus the count of |w| <= 1 per lane (a true comparison is -1)
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      const f16 m = abs16(load16(w + i));
      lo += widen_lo(m);
      hi += widen_hi(m);
      inside += (m <= 1.0f);
    }
    int64_t outside = i;  // the full blocks' elements, less those inside (NaN compares false: outside)
    for (int j = 0; j < kLanes; ++j) outside += inside[j];
    LaneArray abs_sum(lo, hi);
    for (int j = 0; i < n; ++i, ++j) {
      const float m = __builtin_fabsf(w[i]);
      abs_sum.lane[j] += static_cast<double>(m);
      outside += m <= 1.0f ? 0 : 1;
    }
    const float scale = p.scaled ? static_cast<float>(abs_sum.fold() / static_cast<double>(n)) : 1.0f;
    row_binarize(w, scale, p.wb + o * n, n);
    p.scale[o] = scale;
    p.outside[o] = static_cast<float>(outside);
  }
}

// wb = copysign(scale[o], w + 0) (the binarized weight rebuilt in backward).
void weight_rebuild_rows(const WeightArgs& p, int64_t begin, int64_t end) {
  const int64_t n = p.K;
  for (int64_t o = begin; o < end; ++o) row_binarize(p.w + o * n, p.scale[o], p.wb + o * n, n);
}

// The activation between units, LearnableBias -> PReLU [-> LearnableBias], per plane: t = x + b1[c],
// y = t > 0 ? t : w[c] * t, then y + b2[c] (b2 optional): torch's float32 operations in its order.
inline float prelu1(float t, float w) { return t > 0.0f ? t : w * t; }
inline f16 prelu16(f16 t, float w) { return t > 0.0f ? t : w * t; }

void act_forward_planes(const ActArgs& p, int64_t begin, int64_t end) {
  const int64_t n = p.HW;
  for (int64_t q = begin; q < end; ++q) {
    const int64_t c = q % p.C;
    const float b1 = p.b1[c], w = p.w[c], b2 = p.b2 ? p.b2[c] : 0.0f;
    const float* x = p.x + q * n;
    float* y = p.out + q * n;
    int64_t i = 0;
    if (p.b2) {
      for (; i + kLanes <= n; i += kLanes) store16(y + i, prelu16(load16(x + i) + b1, w) + b2);
      for (; i < n; ++i) y[i] = prelu1(x[i] + b1, w) + b2;
    } else {
      for (; i + kLanes <= n; i += kLanes) store16(y + i, prelu16(load16(x + i) + b1, w));
      for (; i < n; ++i) y[i] = prelu1(x[i] + b1, w);
    }
  }
}

// Backward per plane, g (the output's gradient): grad_t = t > 0 ? g : w * g (also x's gradient) into out, and
// PReLU's weight-gradient terms t > 0 ? 0 : t * g into wterm; torch reduces both (and g) to the parameters'
// gradients in its own order, so that they are the modules' bit for bit.
void act_backward_planes(const ActArgs& p, int64_t begin, int64_t end) {
  const int64_t n = p.HW;
  for (int64_t q = begin; q < end; ++q) {
    const int64_t c = q % p.C;
    const float b1 = p.b1[c], w = p.w[c];
    const float* x = p.x + q * n;
    const float* g = p.g + q * n;
    float* gx = p.out + q * n;
    float* wt = p.wterm + q * n;
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      const f16 t = load16(x + i) + b1, gv = load16(g + i);
      store16(gx + i, t > 0.0f ? gv : w * gv);
      store16(wt + i, t > 0.0f ? f16{} : t * gv);
    }
    for (; i < n; ++i) {
      const float t = x[i] + b1, gi = g[i];
      gx[i] = t > 0.0f ? gi : w * gi;
      wt[i] = t > 0.0f ? 0.0f : t * gi;
    }
  }
}
