// Fused CPU kernels of the binary training unit (docs/TRAINING.md): DAB forward/backward and the weight
// binarization in one to three passes per (sample, channel) plane / output channel (a plane stays in cache between
// them), on torch's intra-op threads.
// The kernel bodies (train_body.h) are compiled three times, once per ISA path (avx512, avx2, generic), in target
// regions of this file; the path is picked at run time by name (bindense.native.isa(), BINDENSE_ISA).
//
// The elementwise values must equal the eager node's float32 operations, so no float32 product may be contracted
// with a sum into an FMA: the float32 expressions have no such pattern except k * mean + b (kept apart by
// no_contract), and the double accumulations add exact products of two floats, where an FMA rounds the same.
#include "train_ops.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace bdn::train {
namespace {

struct DabForwardArgs {
  const float* x;
  const float *a, *k, *b;  // [C]
  float* xb;               // [N][C][HW]
  float *mean_x, *mean_abs, *alpha, *thr;  // [N * C]
  int64_t C, HW;
};

struct DabBackwardArgs {
  const float* x;                 // the unit's input: s = (x - thr) + 0 is recomputed
  const float *thr, *alpha;       // [N * C]
  float* out;                     // rebuild: xb; backward: the gradient, in place
  float *sum_gxb, *sum_grad;  // [N * C]
  float* xb;                  // backward: also the binarized input, rebuilt in the same pass (or null)
  int64_t HW;
};

struct WeightArgs {
  const float* w;
  float* wb;
  float* scale;    // [O]
  float* outside;  // [O]
  int64_t K;
  bool scaled;
};

struct ActArgs {
  const float* x;
  const float *b1, *w, *b2;  // [C]; b2 may be null
  const float* g;            // backward: the output's gradient
  float* out;                // forward: y; backward: x's gradient
  float* wterm;              // backward: PReLU's weight-gradient terms, full size
  int64_t C, HW, planes;
};

// A value the compiler may not fuse into a following add (k * mean + b stays two roundings, as in torch).
inline float no_contract(float v) {
  volatile float t = v;
  return t;
}

}  // namespace

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl")
namespace avx512 {
// The path's register (train_body.h): 16 floats; 8 of them in double in one instruction (vcvtps2pd ymm -> zmm,
// which GCC's __builtin_convertvector splits into four)
typedef float fv __attribute__((vector_size(64)));
typedef double dv __attribute__((vector_size(64)));
inline dv widen_lo(fv v) { return (dv)_mm512_cvtps_pd((__m256)__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7)); }
inline dv widen_hi(fv v) {
  return (dv)_mm512_cvtps_pd((__m256)__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15));
}
#include "train_body.h"
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2")
namespace avx2 {
// 8 floats; 4 of them in double in one instruction
typedef float fv __attribute__((vector_size(32)));
typedef double dv __attribute__((vector_size(32)));
inline dv widen_lo(fv v) { return (dv)_mm256_cvtps_pd((__m128)__builtin_shufflevector(v, v, 0, 1, 2, 3)); }
inline dv widen_hi(fv v) { return (dv)_mm256_cvtps_pd((__m128)__builtin_shufflevector(v, v, 4, 5, 6, 7)); }
#include "train_body.h"
}  // namespace avx2
#pragma GCC pop_options

namespace generic {
// 4 floats (SSE2, the x86-64 baseline); 2 of them in double in one instruction
typedef float fv __attribute__((vector_size(16)));
typedef double dv __attribute__((vector_size(16)));
inline dv widen_lo(fv v) { return (dv)_mm_cvtps_pd((__m128)v); }
inline dv widen_hi(fv v) { return (dv)_mm_cvtps_pd((__m128)__builtin_shufflevector(v, v, 2, 3, 0, 1)); }
#include "train_body.h"
}  // namespace generic

namespace {

struct Path {
  const char* name;
  bool (*supported)();
  void (*dab_forward)(const DabForwardArgs&, int64_t, int64_t);
  void (*dab_rebuild)(const DabBackwardArgs&, int64_t, int64_t);
  void (*dab_backward)(const DabBackwardArgs&, int64_t, int64_t);
  void (*weight_forward)(const WeightArgs&, int64_t, int64_t);
  void (*weight_rebuild)(const WeightArgs&, int64_t, int64_t);
  void (*act_forward)(const ActArgs&, int64_t, int64_t);
  void (*act_backward)(const ActArgs&, int64_t, int64_t);
};

bool has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}
bool has_avx2() { return __builtin_cpu_supports("avx2"); }

#define BDN_PATH(ns)                                                                                          \
  {                                                                                                           \
    #ns, has_##ns, ns::dab_forward_planes, ns::dab_rebuild_planes, ns::dab_backward_planes,                  \
        ns::weight_forward_rows, ns::weight_rebuild_rows, ns::act_forward_planes, ns::act_backward_planes      \
  }
bool has_generic() { return true; }
const Path kPaths[] = {BDN_PATH(avx512), BDN_PATH(avx2), BDN_PATH(generic)};  // best first
#undef BDN_PATH

const Path& find_path(const std::string& name) {
  for (const Path& p : kPaths)
    if (name == p.name) {
      TORCH_CHECK(p.supported(), "bindense.native: ISA path '", name, "' is not supported by this CPU");
      return p;
    }
  TORCH_CHECK(false, "bindense.native: unknown ISA path '", name, "' (expected avx512, avx2 or generic)");
}

void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.device().is_cpu(), "bindense.native: ", name,
              " must be a contiguous float32 CPU tensor");
}

// The kernel's full-size output: `out` (a caller's scratch buffer, float32, contiguous, like's shape) or a new
// tensor.
at::Tensor output_like(const at::Tensor& like, const c10::optional<at::Tensor>& out) {
  if (!out) return at::empty_like(like);
  check_float(*out, "out");
  TORCH_CHECK(out->sizes() == like.sizes(), "bindense.native: out must have the shape ", like.sizes());
  return *out;
}

// Planes (or rows) per parallel chunk: >= 2^15 elements, so that small layers stay on one thread.
int64_t grain(int64_t per_item) { return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, per_item)); }

template <typename Args, typename Fn>
void run(int64_t items, int64_t per_item, const Args& args, Fn fn) {
  at::parallel_for(0, items, grain(per_item), [&](int64_t b, int64_t e) { fn(args, b, e); });
}

}  // namespace

std::vector<std::string> train_isas() {
  std::vector<std::string> out;
  for (const Path& p : kPaths)
    if (p.supported()) out.emplace_back(p.name);
  return out;
}

std::vector<at::Tensor> dab_forward(const at::Tensor& x, const at::Tensor& a, const at::Tensor& k,
                                    const at::Tensor& b, const std::string& isa,
                                    const c10::optional<at::Tensor>& out) {
  const Path& path = find_path(isa);
  check_float(x, "x");
  TORCH_CHECK(x.dim() == 4, "bindense.native.dab_forward: x must be [N, C, H, W]");
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  for (const auto* t : {&a, &k, &b}) {
    check_float(*t, "a, k, b");
    TORCH_CHECK(t->numel() == C, "bindense.native.dab_forward: a, k, b must have C = ", C, " elements");
  }
  TORCH_CHECK(HW > 0, "bindense.native.dab_forward: empty planes");
  auto xb = output_like(x, out);
  auto stats = at::empty({4, N, C}, x.options());
  float* st = stats.data_ptr<float>();
  const int64_t NC = N * C;
  DabForwardArgs args{x.data_ptr<float>(), a.data_ptr<float>(), k.data_ptr<float>(), b.data_ptr<float>(),
                      xb.data_ptr<float>(), st, st + NC, st + 2 * NC, st + 3 * NC, C, HW};
  run(NC, HW, args, path.dab_forward);
  return {xb, stats};
}

namespace {

// x [N, C, H, W] with thr and alpha of N * C elements: the arguments of the rebuild and the backward.
DabBackwardArgs backward_args(const at::Tensor& x, const at::Tensor& thr, const at::Tensor& alpha, const char* fn) {
  check_float(x, "x");
  check_float(thr, "thr");
  check_float(alpha, "alpha");
  TORCH_CHECK(x.dim() == 4 && thr.numel() == x.size(0) * x.size(1) && alpha.numel() == thr.numel(),
              "bindense.native.", fn, ": x must be [N, C, H, W], thr and alpha [N, C]");
  return {x.data_ptr<float>(), thr.data_ptr<float>(), alpha.data_ptr<float>(), nullptr, nullptr, nullptr, nullptr,
          x.size(2) * x.size(3)};
}

}  // namespace

at::Tensor dab_rebuild(const at::Tensor& x, const at::Tensor& thr, const at::Tensor& alpha, const std::string& isa) {
  const Path& path = find_path(isa);
  DabBackwardArgs args = backward_args(x, thr, alpha, "dab_rebuild");
  auto xb = at::empty_like(x);
  args.out = xb.data_ptr<float>();
  run(alpha.numel(), args.HW, args, path.dab_rebuild);
  return xb;
}

std::vector<at::Tensor> dab_backward(const at::Tensor& x, const at::Tensor& thr, at::Tensor grad,
                                     const at::Tensor& alpha, const std::string& isa, bool rebuild,
                                     const c10::optional<at::Tensor>& out) {
  const Path& path = find_path(isa);
  DabBackwardArgs args = backward_args(x, thr, alpha, "dab_backward");
  check_float(grad, "grad");
  TORCH_CHECK(grad.sizes() == x.sizes(), "bindense.native.dab_backward: grad must have x's shape");
  const int64_t NC = alpha.numel();
  auto sums = at::empty({2, NC}, x.options());
  float* sp = sums.data_ptr<float>();
  args.out = grad.data_ptr<float>();
  args.sum_gxb = sp;
  args.sum_grad = sp + NC;
  at::Tensor xb;
  if (rebuild) {
    xb = output_like(x, out);
    args.xb = xb.data_ptr<float>();
  }
  run(NC, args.HW, args, path.dab_backward);
  std::vector<at::Tensor> result{grad, sums.view({2, x.size(0), x.size(1)})};
  if (rebuild) result.push_back(xb);
  return result;
}

std::vector<at::Tensor> weight_forward(const at::Tensor& w, bool scaled, const std::string& isa,
                                       const c10::optional<at::Tensor>& out) {
  const Path& path = find_path(isa);
  check_float(w, "weight");
  TORCH_CHECK(w.dim() >= 1 && w.numel() > 0, "bindense.native.weight_forward: empty weight");
  const int64_t O = w.size(0), K = w.numel() / O;
  auto wb = output_like(w, out);
  auto scale = at::empty({O}, w.options()), outside = at::empty({O}, w.options());
  WeightArgs args{w.data_ptr<float>(), wb.data_ptr<float>(), scale.data_ptr<float>(), outside.data_ptr<float>(), K,
                  scaled};
  run(O, K, args, path.weight_forward);
  return {wb, scale, outside};
}

at::Tensor weight_rebuild(const at::Tensor& w, const at::Tensor& scale, const std::string& isa,
                          const c10::optional<at::Tensor>& out) {
  const Path& path = find_path(isa);
  check_float(w, "weight");
  check_float(scale, "scale");
  TORCH_CHECK(w.dim() >= 1 && scale.numel() == w.size(0), "bindense.native.weight_rebuild: scale must be [O]");
  const int64_t O = w.size(0), K = w.numel() / O;
  auto wb = output_like(w, out);
  WeightArgs args{w.data_ptr<float>(), wb.data_ptr<float>(), scale.data_ptr<float>(), nullptr, K, true};
  run(O, K, args, path.weight_rebuild);
  return wb;
}

namespace {

ActArgs act_args(const at::Tensor& x, const at::Tensor& b1, const at::Tensor& w, const char* fn) {
  check_float(x, "x");
  TORCH_CHECK(x.dim() == 4 && x.size(2) * x.size(3) > 0, "bindense.native.", fn, ": x must be [N, C, H, W]");
  const int64_t C = x.size(1);
  for (const auto* t : {&b1, &w}) {
    check_float(*t, "bias, weight");
    TORCH_CHECK(t->numel() == C, "bindense.native.", fn, ": the bias and the PReLU weight must have C = ", C,
                " elements");
  }
  return {x.data_ptr<float>(), b1.data_ptr<float>(), w.data_ptr<float>(), nullptr, nullptr, nullptr, nullptr,
          C, x.size(2) * x.size(3), x.size(0) * C};
}

}  // namespace

at::Tensor act_forward(const at::Tensor& x, const at::Tensor& b1, const at::Tensor& w,
                       const c10::optional<at::Tensor>& b2, const std::string& isa) {
  const Path& path = find_path(isa);
  ActArgs args = act_args(x, b1, w, "act_forward");
  if (b2) {
    check_float(*b2, "bias_after");
    TORCH_CHECK(b2->numel() == args.C, "bindense.native.act_forward: bias_after must have C elements");
    args.b2 = b2->data_ptr<float>();
  }
  auto y = at::empty_like(x);
  args.out = y.data_ptr<float>();
  run(args.planes, args.HW, args, path.act_forward);
  return y;
}

std::vector<at::Tensor> act_backward(const at::Tensor& x, const at::Tensor& b1, const at::Tensor& w,
                                     const at::Tensor& grad, const std::string& isa) {
  const Path& path = find_path(isa);
  ActArgs args = act_args(x, b1, w, "act_backward");
  check_float(grad, "grad");
  TORCH_CHECK(grad.sizes() == x.sizes(), "bindense.native.act_backward: grad must have x's shape");
  auto gx = at::empty_like(x), wterm = at::empty_like(x);
  args.g = grad.data_ptr<float>();
  args.out = gx.data_ptr<float>();
  args.wterm = wterm.data_ptr<float>();
  run(args.planes, args.HW, args, path.act_backward);
  return {gx, wterm};
}

}  // namespace bdn::train
