// Kernels of the training unit (train_ops.cpp), plain C++ over raw pointers: included once per ISA path inside that
// path's namespace and target region, after every header (no includes here, so no inline function of a header is
// compiled in one ISA's flavour and shared with another).
//
// The path defines its register before the include: `fv`, a GCC vector of kV floats (16 on avx512, 8 on avx2, 4 on
// generic), `dv` of kV / 2 doubles, and `widen_lo` / `widen_hi` (the first and the last kV / 2 floats of an fv, in
// double: one instruction each). The loops run on whole registers; the float operations are IEEE, element by
// element, so every path computes the same bits. Every reduction runs in kLanes = 16 double lanes: lane j adds the
// elements 16 m + j of the full blocks of 16 (kR = 16 / kV registers per block, 2 kR double registers of sums),
// then the tail elements go to lanes 0, 1, ..., and the lanes are folded in a fixed tree. The order does not
// depend on the register width, and double lanes make the per-plane sums more accurate than float32 ones.
// Elementwise values are the float32 operations of the eager node in its order (no contraction: see
// train_ops.cpp).

constexpr int kLanes = 16;
constexpr int kV = sizeof(fv) / sizeof(float);  // floats per register
constexpr int kR = kLanes / kV;                 // registers per block of 16 lanes
typedef int32_t iv __attribute__((vector_size(sizeof(fv))));

inline fv load(const float* p) {
  fv v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, fv v) { __builtin_memcpy(p, &v, sizeof v); }
constexpr int32_t kSignBit = static_cast<int32_t>(0x80000000u);
inline fv absv(fv v) { return (fv)((iv)v & ~kSignBit); }
// v with its sign flipped where s's sign bit is set (exact)
inline fv flipsign(fv v, fv s) { return (fv)((iv)v ^ ((iv)s & kSignBit)); }
// copysign(mag, v) for mag >= 0: mag's bits with v's sign bit, as copysignf
inline fv copysignv(float mag, fv v) { return (fv)(((iv)v & kSignBit) | (iv)(fv{} + mag)); }

// 16 double lanes: 2 kR registers while the blocks run (register 2 r: the lanes of the block's r-th float register
// that widen_lo takes, 2 r + 1: those of widen_hi; plain members, kept in registers by the unrolled loops), then an
// array for the tail elements and the fold.
struct Lanes {
  dv reg[2 * kR] = {};
  // adds register r of a block of 16 to its lanes
  void add(int r, fv v) {
    reg[2 * r] += widen_lo(v);
    reg[2 * r + 1] += widen_hi(v);
  }
};
struct LaneArray {
  double lane[kLanes];
  explicit LaneArray(const Lanes& acc) { __builtin_memcpy(lane, acc.reg, sizeof lane); }
  double fold() {
    for (int w = kLanes / 2; w > 0; w /= 2)
      for (int j = 0; j < w; ++j) lane[j] += lane[j + w];
    return lane[0];
  }
};

// s = (x - thr) + 0 (-0 -> +0), DAB's shifted input, per element and per register.
inline float shift1(float x, float thr) { return (x - thr) + 0.0f; }
inline fv shiftv(fv x, float thr) { return (x - thr) + 0.0f; }

// sum of f(x) over a plane in the 16 double lanes, f elementwise on a register (fv) and on a float
template <typename FV, typename F1>
inline double plane_reduce(const float* x, int64_t n, FV fvec, F1 f1) {
  Lanes acc;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
#pragma GCC unroll 4
    for (int r = 0; r < kR; ++r) acc.add(r, fvec(load(x + i + r * kV)));
  }
  LaneArray lanes(acc);
  for (int j = 0; i < n; ++i, ++j) lanes.lane[j] += static_cast<double>(f1(x[i]));
  return lanes.fold();
}

// sum of x over a plane
inline double plane_sum(const float* x, int64_t n) {
  return plane_reduce(x, n, [](fv v) { return v; }, [](float v) { return v; });
}

// sum of |s| over a plane, s = shift(x, thr) (not stored)
inline double plane_abs_shift_sum(const float* x, float thr, int64_t n) {
  return plane_reduce(
      x, n, [thr](fv v) { return absv(shiftv(v, thr)); },
      [thr](float v) { return __builtin_fabsf(shift1(v, thr)); });
}

// xb = copysign(alpha, s), s = shift(x, thr)
inline void plane_binarize(const float* x, float thr, float alpha, float* xb, int64_t n) {
  int64_t i = 0;
  for (; i + kV <= n; i += kV) store(xb + i, copysignv(alpha, shiftv(load(x + i), thr)));
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
inline fv surrogatev(fv s, fv g, float m2a) {
  const fv t = absv(s) - 1.0f;
  return ((t > 0.0f ? fv{} : t) * g) * m2a;
}

// With p.xb, the pass also writes xb = copysign(alpha, s) (the binarized input for the weight gradient): one read of
// x for both.
void dab_backward_planes(const DabBackwardArgs& p, int64_t begin, int64_t end) {
  const int64_t n = p.HW;
  for (int64_t q = begin; q < end; ++q) {
    const float alpha = p.alpha[q], m2a = -2.0f * alpha, thr = p.thr[q];
    const float* x = p.x + q * n;
    float* g = p.out + q * n;
    float* xb = p.xb ? p.xb + q * n : nullptr;
    // sum(g * xb) = alpha * sum(g * sign(s)): the signed g (g with its sign flipped where s < 0) summed in double
    Lanes gxb_acc, g_acc;
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
#pragma GCC unroll 4
      for (int r = 0; r < kR; ++r) {
        const int64_t at = i + r * kV;
        const fv sv = shiftv(load(x + at), thr), gv = load(g + at);
        if (xb) store(xb + at, copysignv(alpha, sv));
        gxb_acc.add(r, flipsign(gv, sv));
        const fv out = surrogatev(sv, gv, m2a);
        store(g + at, out);
        g_acc.add(r, out);
      }
    }
    LaneArray gxb(gxb_acc), gsum(g_acc);
    for (int j = 0; i < n; ++i, ++j) {
      const float si = shift1(x[i], thr), gi = g[i];
      if (xb) xb[i] = __builtin_copysignf(alpha, si);
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
  for (; i + kV <= n; i += kV) store(wb + i, copysignv(scale, load(w + i) + 0.0f));
  for (; i < n; ++i) wb[i] = __builtin_copysignf(scale, w[i] + 0.0f);
}

// Weights [O][K], rows [begin, end): scale = mean|w| of the row (1 without scaling), wb = copysign(scale, w + 0),
// outside[o] = number of |w| > 1 (or NaN) in the row (the clipped STE's mask is all ones where it is 0).
void weight_forward_rows(const WeightArgs& p, int64_t begin, int64_t end) {
  const int64_t n = p.K;
  for (int64_t o = begin; o < end; ++o) {
    const float* w = p.w + o * n;
    Lanes acc;
    iv inside = {};  // minus the count of |w| <= 1 per lane (a true comparison is -1)
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
#pragma GCC unroll 4
      for (int r = 0; r < kR; ++r) {
        const fv m = absv(load(w + i + r * kV));
        acc.add(r, m);
        inside += (m <= 1.0f);
      }
    }
    int64_t outside = i;  // the full blocks' elements, less those inside (NaN compares false: outside)
    for (int j = 0; j < kV; ++j) outside += inside[j];
    LaneArray abs_sum(acc);
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
inline fv preluv(fv t, float w) { return t > 0.0f ? t : w * t; }

void act_forward_planes(const ActArgs& p, int64_t begin, int64_t end) {
  const int64_t n = p.HW;
  for (int64_t q = begin; q < end; ++q) {
    const int64_t c = q % p.C;
    const float b1 = p.b1[c], w = p.w[c], b2 = p.b2 ? p.b2[c] : 0.0f;
    const float* x = p.x + q * n;
    float* y = p.out + q * n;
    int64_t i = 0;
    if (p.b2) {
      for (; i + kV <= n; i += kV) store(y + i, preluv(load(x + i) + b1, w) + b2);
      for (; i < n; ++i) y[i] = prelu1(x[i] + b1, w) + b2;
    } else {
      for (; i + kV <= n; i += kV) store(y + i, preluv(load(x + i) + b1, w));
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
    for (; i + kV <= n; i += kV) {
      const fv t = load(x + i) + b1, gv = load(g + i);
      store(gx + i, t > 0.0f ? gv : w * gv);
      store(wt + i, t > 0.0f ? fv{} : t * gv);
    }
    for (; i < n; ++i) {
      const float t = x[i] + b1, gi = g[i];
      gx[i] = t > 0.0f ? gi : w * gi;
      wt[i] = t > 0.0f ? 0.0f : t * gi;
    }
  }
}
