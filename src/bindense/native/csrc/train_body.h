// Kernels of the training unit (train_ops.cpp), plain C++ over raw pointers: included once per ISA path inside that
// path's namespace and target region, after every header (no includes here, so no inline function of a header is
// compiled in one ISA's flavour and shared with another). The loops are written for the compiler to vectorise.
//
// Every reduction runs in kLanes double lanes folded in a fixed tree: the order does not depend on the vector width,
// so every ISA path gives the same bits, and double lanes make the per-plane sums more accurate than float32 ones.
// Elementwise values are the float32 operations of the eager node in its order (no contraction: see train_ops.cpp).

constexpr int kLanes = 16;

// sum over i < n of f(i) (and of g(i)): kLanes interleaved partial sums, then a pairwise fold.
template <typename F>
inline double lane_sum(int64_t n, F f) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += f(i + j);
  for (int j = 0; i < n; ++i, ++j) acc[j] += f(i);
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0];
}

template <typename F>
inline void lane_sum2(int64_t n, F f, double& out0, double& out1) {
  double a0[kLanes] = {}, a1[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) f(i + j, a0[j], a1[j]);
  for (int j = 0; i < n; ++i, ++j) f(i, a0[j], a1[j]);
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) {
      a0[j] += a0[j + w];
      a1[j] += a1[j + w];
    }
  out0 = a0[0];
  out1 = a1[0];
}

// DAB forward, planes [begin, end) of N * C: mean(x), thr = k mean(x) + b, s = (x - thr) + 0 (-0 -> +0),
// mean|s|, alpha = exp(a (mean|s| - 1)), xb = copysign(alpha, s). Two passes over x's plane, one over s (cache).
void dab_forward_planes(const DabForwardArgs& p, int64_t begin, int64_t end) {
  const int64_t n = p.HW;
  const double inv = 1.0 / static_cast<double>(n);
  for (int64_t q = begin; q < end; ++q) {
    const int64_t c = q % p.C;
    const float* x = p.x + q * n;
    float* s = p.s + q * n;
    float* xb = p.xb + q * n;
    const float mean_x = static_cast<float>(lane_sum(n, [&](int64_t i) { return static_cast<double>(x[i]); }) * inv);
    const float thr = no_contract(p.k[c] * mean_x) + p.b[c];
    const double abs_sum = lane_sum(n, [&](int64_t i) {
      const float v = (x[i] - thr) + 0.0f;
      s[i] = v;
      return static_cast<double>(__builtin_fabsf(v));
    });
    const float mean_abs = static_cast<float>(abs_sum * inv);
    const float alpha = expf(p.a[c] * (mean_abs - 1.0f));
    for (int64_t i = 0; i < n; ++i) xb[i] = __builtin_copysignf(alpha, s[i]);
    p.mean_x[q] = mean_x;
    p.mean_abs[q] = mean_abs;
    p.alpha[q] = alpha;
  }
}

// xb = copysign(alpha, s) per plane (the binarized input rebuilt for the weight gradient).
void dab_rebuild_planes(const DabBackwardArgs& p, int64_t begin, int64_t end) {
  const int64_t n = p.HW;
  for (int64_t q = begin; q < end; ++q) {
    const float alpha = p.alpha[q];
    const float* s = p.s + q * n;
    float* xb = p.out + q * n;
    for (int64_t i = 0; i < n; ++i) xb[i] = __builtin_copysignf(alpha, s[i]);
  }
}

// DAB backward per plane, in g's buffer: g <- min(|s| - 1, 0) * g * (-2 alpha) (the ApproxSign surrogate
// 2 max(1 - |s|, 0) times alpha), with sum(g * copysign(alpha, s)) (for a) and sum of the new g (for k, b).
void dab_backward_planes(const DabBackwardArgs& p, int64_t begin, int64_t end) {
  const int64_t n = p.HW;
  for (int64_t q = begin; q < end; ++q) {
    const float alpha = p.alpha[q], m2a = -2.0f * alpha;
    const float* s = p.s + q * n;
    float* g = p.out + q * n;
    double gxb = 0.0, gsum = 0.0;
    lane_sum2(
        n,
        [&](int64_t i, double& acc_xb, double& acc_g) {
          const float si = s[i], gi = g[i];
          acc_xb += static_cast<double>(gi) * static_cast<double>(__builtin_copysignf(alpha, si));  // exact product
          const float t = __builtin_fabsf(si) - 1.0f;
          const float gx = ((t > 0.0f ? 0.0f : t) * gi) * m2a;
          g[i] = gx;
          acc_g += static_cast<double>(gx);
        },
        gxb, gsum);
    p.sum_gxb[q] = static_cast<float>(gxb);
    p.sum_grad[q] = static_cast<float>(gsum);
  }
}

// Weights [O][K], rows [begin, end): scale = mean|w| of the row (1 without scaling), wb = copysign(scale, w + 0),
// outside[o] = number of |w| > 1 (or NaN) in the row (the clipped STE's mask is all ones where it is 0).
void weight_forward_rows(const WeightArgs& p, int64_t begin, int64_t end) {
  const int64_t n = p.K;
  for (int64_t o = begin; o < end; ++o) {
    const float* w = p.w + o * n;
    float* wb = p.wb + o * n;
    double abs_sum = 0.0, outside = 0.0;
    lane_sum2(
        n,
        [&](int64_t i, double& acc_abs, double& acc_out) {
          const float m = __builtin_fabsf(w[i]);
          acc_abs += static_cast<double>(m);
          acc_out += m <= 1.0f ? 0.0 : 1.0;
        },
        abs_sum, outside);
    const float scale = p.scaled ? static_cast<float>(abs_sum / static_cast<double>(n)) : 1.0f;
    for (int64_t i = 0; i < n; ++i) wb[i] = __builtin_copysignf(scale, w[i] + 0.0f);
    p.scale[o] = scale;
    p.outside[o] = static_cast<float>(outside);
  }
}

// wb = copysign(scale[o], w + 0) (the binarized weight rebuilt in backward).
void weight_rebuild_rows(const WeightArgs& p, int64_t begin, int64_t end) {
  const int64_t n = p.K;
  for (int64_t o = begin; o < end; ++o) {
    const float scale = p.scale[o];
    const float* w = p.w + o * n;
    float* wb = p.wb + o * n;
    for (int64_t i = 0; i < n; ++i) wb[i] = __builtin_copysignf(scale, w[i] + 0.0f);
  }
}
