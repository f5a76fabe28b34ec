// bindense.native C++ extension: argument plumbing, input/weight re-packing, ISA dispatch and threading.
// The kernels live in isa_*.cpp (one translation unit per ISA, no torch headers there); this file picks one at run
// time (__builtin_cpu_supports) and runs it over output rows on torch's intra-op threads.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <atomic>
#include <string>
#include <vector>

#include "kernel.h"
#include "train_ops.h"

namespace bdn {
#define BDN_DECLARE_ISA(ns)                                      \
  namespace ns {                                                 \
  int block();                                                   \
  int planes();                                                  \
  void conv_rows(const ConvArgs& a, int64_t begin, int64_t end); \
  void dw_rows(const DwArgs& a, int64_t begin, int64_t end);     \
  void dwp_planes(const DwpArgs& a, int64_t begin, int64_t end); \
  }
BDN_DECLARE_ISA(avx512)
BDN_DECLARE_ISA(avx2)
BDN_DECLARE_ISA(generic)

namespace {

struct Isa {
  const char* name;
  bool (*supported)();
  int (*block)();
  int (*planes)();
  void (*conv_rows)(const ConvArgs&, int64_t, int64_t);
  void (*dw_rows)(const DwArgs&, int64_t, int64_t);
  void (*dwp_planes)(const DwpArgs&, int64_t, int64_t);
};

bool has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512vpopcntdq");
}
bool has_avx2() { return __builtin_cpu_supports("avx2"); }
bool always() { return true; }

const Isa kIsas[] = {  // best first
    {"avx512", has_avx512, avx512::block, avx512::planes, avx512::conv_rows, avx512::dw_rows, avx512::dwp_planes},
    {"avx2", has_avx2, avx2::block, avx2::planes, avx2::conv_rows, avx2::dw_rows, avx2::dwp_planes},
    {"generic", always, generic::block, generic::planes, generic::conv_rows, generic::dw_rows, generic::dwp_planes},
};

const Isa& find_isa(const std::string& name) {
  for (const Isa& isa : kIsas)
    if (name == isa.name) {
      TORCH_CHECK(isa.supported(), "bindense.native: ISA path '", name, "' is not supported by this CPU");
      return isa;
    }
  TORCH_CHECK(false, "bindense.native: unknown ISA path '", name, "' (expected avx512, avx2 or generic)");
}

const float* opt_ptr(const c10::optional<at::Tensor>& t, const char* name) {
  if (!t.has_value()) return nullptr;
  TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->device().is_cpu(), "bindense.native: ",
              name, " must be a contiguous float32 CPU tensor");
  return t->data_ptr<float>();
}

// `len` bits of a packed channel row starting at bit `start`, as Kd words (bits past len zeroed).
inline void extract_bits(const uint64_t* src, int64_t nsrc, int64_t start, int64_t len, uint64_t* dst, int64_t Kd) {
  for (int64_t q = 0; q < Kd; ++q) {
    const int64_t b = start + 64 * q, rem = len - 64 * q;
    uint64_t v = 0;
    if (rem > 0) {
      const int64_t wi = b >> 6, sh = b & 63;
      v = src[wi] >> sh;
      if (sh && wi + 1 < nsrc) v |= src[wi + 1] << (64 - sh);
      if (rem < 64) v &= (uint64_t(1) << rem) - 1;
    }
    dst[q] = v;
  }
}

// The inverse of extract_bits: ORs the first `len` bits of Kd words into a packed channel row at bit `start`.
inline void deposit_bits(const uint64_t* src, int64_t Kd, int64_t start, int64_t len, uint64_t* dst, int64_t ndst) {
  for (int64_t q = 0; q < Kd && 64 * q < len; ++q) {
    const int64_t b = start + 64 * q, rem = len - 64 * q, wi = b >> 6, sh = b & 63;
    const uint64_t v = rem < 64 ? src[q] & ((uint64_t(1) << rem) - 1) : src[q];
    dst[wi] |= v << sh;
    if (sh && wi + 1 < ndst) dst[wi + 1] |= v >> (64 - sh);
  }
}

constexpr uint64_t kLowNibbles = 0x0F0F0F0F0F0F0F0FULL;

// Rows per parallel chunk so that each chunk does >= 2^17 elementary steps: a small copy or pack stays on one thread
// (a fork/join costs more than it saves, and far more when the cores are shared).
inline int64_t grain(int64_t work_per_row) {
  return std::max<int64_t>(1, (int64_t(1) << 17) / std::max<int64_t>(1, work_per_row));
}

// Runs body(begin, end) over [0, n) on torch's intra-op threads, handing out chunks from a shared counter: a
// thread that is descheduled (shared cores) leaves its work to the others instead of holding up the join.
template <typename F>
void dynamic_parallel(int64_t n, const F& body) {
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), n);
  if (threads <= 1) return body(0, n);
  const int64_t chunk = std::max<int64_t>(1, n / (threads * 16));
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t b = next.fetch_add(chunk); b < n; b = next.fetch_add(chunk)) body(b, std::min(b + chunk, n));
  });
}

// The caller's output buffer (checked) or a new one.
at::Tensor output(const c10::optional<at::Tensor>& out, at::IntArrayRef shape) {
  if (!out.has_value()) return at::empty(shape, at::kFloat);
  TORCH_CHECK(out->scalar_type() == at::kFloat && out->is_contiguous() && out->device().is_cpu() &&
                  out->sizes() == shape, "bindense.native: out must be a contiguous float32 CPU tensor ", shape);
  return *out;
}

// kSignBytes[b]: the 8 bits of byte b as 8 int8 signs (+1 for a set bit, -1 for a clear one), little-endian.
struct SignBytes {
  uint64_t v[256];
  SignBytes() {
    for (int b = 0; b < 256; ++b) {
      uint64_t q = 0;
      for (int j = 0; j < 8; ++j) q |= uint64_t(((b >> j) & 1) ? 0x01 : 0xFF) << (8 * j);
      v[b] = q;
    }
  }
};
const SignBytes kSignBytes;

at::Tensor depthwise(const Isa& isa, const at::Tensor& xb, const at::Tensor& wb, int64_t C, int64_t kh, int64_t kw,
                     int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t cgs,
                     const c10::optional<at::Tensor>& gscale, const float* os, const float* ob, const float* res,
                     const c10::optional<at::Tensor>& out) {
  const int64_t N = xb.size(0), H = xb.size(1), W = xb.size(2), K = xb.size(3), T = kh * kw, Cp = 64 * K;
  const int64_t Hp = H + 2 * ph, Wp = W + 2 * pw, Ho = (Hp - kh) / sh + 1, Wo = (Wp - kw) / sw + 1;
  auto xs = at::zeros({N, Hp, Wp, Cp}, at::kChar);
  auto wm = at::zeros({T, Cp}, at::kChar);
  const uint64_t* xp = reinterpret_cast<const uint64_t*>(xb.data_ptr<int64_t>());
  const uint64_t* wp = reinterpret_cast<const uint64_t*>(wb.data_ptr<int64_t>());
  int8_t* xsp = xs.data_ptr<int8_t>();
  const uint64_t tail = C % 64 ? (uint64_t(1) << (8 * (C % 8))) - 1 : ~uint64_t(0);  // bytes of the last 8 kept
  at::parallel_for(0, N * H, grain(W * Cp), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t n = r / H, y = r % H;
      for (int64_t x = 0; x < W; ++x) {
        const uint64_t* src = xp + ((n * H + y) * W + x) * K;
        uint64_t* dst = reinterpret_cast<uint64_t*>(xsp + ((n * Hp + y + ph) * Wp + x + pw) * Cp);
        for (int64_t q = 0; q < 8 * K && 8 * q < C; ++q) {  // 8 channels per step; channels >= C stay 0
          uint64_t v = kSignBytes.v[(src[q >> 3] >> (8 * (q & 7))) & 0xFF];
          if (8 * q + 8 > C) v &= tail;
          dst[q] = v;
        }
      }
    }
  });
  int8_t* wmp = wm.data_ptr<int8_t>();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < T; ++t) wmp[t * Cp + c] = (wp[c * T + t] & 1) ? 0 : -1;
  at::Tensor chs;
  if (gscale.has_value()) {
    auto idx = at::arange(C, at::kLong).div(cgs, "floor");
    chs = gscale->index_select(1, idx).contiguous();
  }
  auto y = output(out, {N, C, Ho, Wo});
  DwArgs a{xsp, wmp, chs.defined() ? chs.data_ptr<float>() : nullptr, os, ob, res, y.data_ptr<float>(),
           N, C, Cp, Hp, Wp, Ho, Wo, kh, kw, sh, sw};
  dynamic_parallel(N * Ho, [&](int64_t b, int64_t e) { isa.dw_rows(a, b, e); });
  return y;
}

// CFB's rule (bindense.binary.cfb) as a map per output channel o of O: (first residual channel, stride, count), the
// output adding the mean of those channels: with O = r * Cr + m, r tiled copies (o % Cr), then m merged channels
// (merged channel j < m - 1: channels g * (m - 1) + j for g < Cr / m; the last: every remaining channel).
std::vector<int32_t> cfb_map(int64_t Cr, int64_t O) {
  std::vector<int32_t> map(3 * O);
  const int64_t r = O / Cr, m = O % Cr, groups = m ? Cr / m : 0, strided = groups * (m - 1);
  for (int64_t o = 0; o < O; ++o) {
    int32_t* e = map.data() + 3 * o;
    const int64_t j = o - r * Cr;
    if (j < 0) {
      e[0] = static_cast<int32_t>(o % Cr), e[1] = 1, e[2] = 1;
    } else if (j < m - 1) {
      e[0] = static_cast<int32_t>(j), e[1] = static_cast<int32_t>(m - 1), e[2] = static_cast<int32_t>(groups);
    } else {
      e[0] = static_cast<int32_t>(strided), e[1] = 1, e[2] = static_cast<int32_t>(Cr - strided);
    }
  }
  return map;
}

const float* vec_ptr(const c10::optional<at::Tensor>& t, int64_t n, const char* name) {
  const float* p = opt_ptr(t, name);
  if (p) TORCH_CHECK(t->numel() == n, "bindense.native: ", name, " must have ", n, " elements, got ", t->numel());
  return p;
}

double* sums_ptr(const c10::optional<at::Tensor>& t, int64_t n) {
  if (!t.has_value()) return nullptr;
  TORCH_CHECK(t->scalar_type() == at::kDouble && t->is_contiguous() && t->device().is_cpu() && t->numel() == n,
              "bindense.native: channel_sums must be a contiguous float64 CPU tensor of ", n, " elements");
  return t->data_ptr<double>();
}

}  // namespace

std::vector<std::string> cpu_isas() {
  std::vector<std::string> out;
  for (const Isa& isa : kIsas)
    if (isa.supported()) out.emplace_back(isa.name);
  return out;
}

// Segments: each conv group splits into D runs of e consecutive input channels (the DAB groups inside it).
struct Segments {
  int64_t Cg, e, D, Kd;
  Segments(int64_t C, int64_t G, int64_t cgs)
      : Cg(C / G), e((cgs > 0 && cgs < C / G) ? cgs : C / G), D((Cg + e - 1) / e), Kd((e + 63) / 64) {}
  int64_t len(int64_t d) const { return std::min(e, Cg - d * e); }
};

void check_bits(const at::Tensor& t, const char* name, const char* shape) {
  TORCH_CHECK(t.dim() == 4 && t.scalar_type() == at::kLong && t.is_contiguous() && t.device().is_cpu(),
              "bindense.native: ", name, " must be a contiguous int64 CPU tensor ", shape);
}

// Weights in the layout of one ISA: [G][nOB][D][T][Kd][OB] words, OB output channels interleaved (zero words for
// the padding channels), and the popcount of every tap [G][Ogp][D][T] (border corrections). The layout holds the
// packed words themselves (plus the padding channels) on every path; the AVX2 kernel's nibble planes are made
// per call (nibble_planes).
std::vector<at::Tensor> prepare_weights(const at::Tensor& wb, int64_t C, int64_t G, int64_t cgs,
                                        const std::string& isa_name) {
  const Isa& isa = find_isa(isa_name);
  check_bits(wb, "w_bits", "[O, kh, kw, ceil(Cg/64)]");
  TORCH_CHECK(G >= 1 && C % G == 0 && wb.size(0) % G == 0, "bindense.native: channels do not divide into groups");
  const Segments s(C, G, cgs);
  const int64_t O = wb.size(0), T = wb.size(1) * wb.size(2), Kg = wb.size(3);
  TORCH_CHECK(Kg == (s.Cg + 63) / 64, "bindense.native: w_bits has ", Kg, " words per tap, expected ",
              (s.Cg + 63) / 64);
  TORCH_CHECK(T <= kMaxTaps, "bindense.native: kernel has more than ", kMaxTaps, " taps");
  const int64_t OB = isa.block(), Og = O / G, Ogp = (Og + OB - 1) / OB * OB, nOB = Ogp / OB;
  auto wt = at::zeros({G * nOB * s.D * T * s.Kd * OB}, at::kLong);
  auto wpop = at::zeros({G * Ogp * s.D * T}, at::kInt);
  const uint64_t* src0 = reinterpret_cast<const uint64_t*>(wb.data_ptr<int64_t>());
  uint64_t* dst = reinterpret_cast<uint64_t*>(wt.data_ptr<int64_t>());
  int32_t* pop = wpop.data_ptr<int32_t>();
  std::vector<uint64_t> tmp(s.Kd);
  for (int64_t g = 0; g < G; ++g)
    for (int64_t oo = 0; oo < Og; ++oo)
      for (int64_t d = 0; d < s.D; ++d)
        for (int64_t t = 0; t < T; ++t) {
          extract_bits(src0 + ((g * Og + oo) * T + t) * Kg, Kg, d * s.e, s.len(d), tmp.data(), s.Kd);
          int32_t pc = 0;
          for (int64_t k = 0; k < s.Kd; ++k) {
            dst[((((g * nOB + oo / OB) * s.D + d) * T + t) * s.Kd + k) * OB + oo % OB] = tmp[k];
            pc += __builtin_popcountll(tmp[k]);
          }
          pop[((g * Ogp + oo) * s.D + d) * T + t] = pc;
        }
  return {wt, wpop};
}

// The packed words [O, kh, kw, ceil(Cg/64)] back from the layout of one ISA (the inverse of prepare_weights).
at::Tensor unprepare_weights(const at::Tensor& wt, int64_t O, int64_t kh, int64_t kw, int64_t C, int64_t G,
                             int64_t cgs, const std::string& isa_name) {
  const Isa& isa = find_isa(isa_name);
  TORCH_CHECK(G >= 1 && C % G == 0 && O % G == 0, "bindense.native: channels do not divide into groups");
  const Segments s(C, G, cgs);
  const int64_t T = kh * kw, Kg = (s.Cg + 63) / 64;
  const int64_t OB = isa.block(), Og = O / G, Ogp = (Og + OB - 1) / OB * OB, nOB = Ogp / OB;
  TORCH_CHECK(wt.scalar_type() == at::kLong && wt.is_contiguous() && wt.numel() == G * nOB * s.D * T * s.Kd * OB,
              "bindense.native: prepared weights do not match this conv (unprepare_weights with the same ISA)");
  auto wb = at::zeros({O, kh, kw, Kg}, at::kLong);
  const uint64_t* src = reinterpret_cast<const uint64_t*>(wt.data_ptr<int64_t>());
  uint64_t* dst0 = reinterpret_cast<uint64_t*>(wb.data_ptr<int64_t>());
  std::vector<uint64_t> tmp(s.Kd);
  for (int64_t g = 0; g < G; ++g)
    for (int64_t oo = 0; oo < Og; ++oo)
      for (int64_t d = 0; d < s.D; ++d)
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t k = 0; k < s.Kd; ++k) {
            tmp[k] = src[((((g * nOB + oo / OB) * s.D + d) * T + t) * s.Kd + k) * OB + oo % OB];
          }
          deposit_bits(tmp.data(), s.Kd, d * s.e, s.len(d), dst0 + ((g * Og + oo) * T + t) * Kg, Kg);
        }
  return wb;
}

// The popcount of every weight tap [G][Ogp][D][T] from the layout [G][nOB][D][T][Kd][OB] (what prepare_weights
// returns as wpop; recomputed per call when the caller keeps only the layout).
std::vector<int32_t> tap_popcounts(const uint64_t* w, int64_t G, int64_t nOB, int64_t D, int64_t T, int64_t Kd,
                                   int64_t OB) {
  std::vector<int32_t> pop(G * nOB * OB * D * T, 0);
  for (int64_t g = 0; g < G; ++g)
    for (int64_t ob = 0; ob < nOB; ++ob)
      for (int64_t d = 0; d < D; ++d)
        for (int64_t t = 0; t < T; ++t)
          for (int64_t k = 0; k < Kd; ++k) {
            const uint64_t* q = w + (((g * nOB + ob) * D + d) * T + t) * Kd * OB + k * OB;
            for (int64_t j = 0; j < OB; ++j)
              pop[((g * nOB * OB + ob * OB + j) * D + d) * T + t] += __builtin_popcountll(q[j]);
          }
  return pop;
}

// The AVX2 kernel's working copy of a layout [rows][OB] (rows = G nOB D T Kd): [rows][2][OB], the low nibbles of
// every byte, then the high nibbles shifted down (each byte < 16, a vpshufb index). A temporary of one conv call:
// the weights a model holds stay the plain words.
at::Tensor nibble_planes(const uint64_t* w, int64_t rows, int64_t OB) {
  auto out = at::empty({rows * 2 * OB}, at::kLong);
  uint64_t* dst = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  at::parallel_for(0, rows, grain(2 * OB), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r)
      for (int64_t j = 0; j < OB; ++j) {
        const uint64_t v = w[r * OB + j];
        dst[(2 * r) * OB + j] = v & kLowNibbles;
        dst[(2 * r + 1) * OB + j] = (v >> 4) & kLowNibbles;
      }
  });
  return out;
}

// conv2d with the whole fused epilogue (kernel.h, ConvArgs): the activation after the unit and the row sums.
at::Tensor conv2d_fused(const at::Tensor& xb, const at::Tensor& wt, const c10::optional<at::Tensor>& wpop, int64_t C,
                  int64_t O, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t G,
                  int64_t cgs,
                  const c10::optional<at::Tensor>& gscale, const c10::optional<at::Tensor>& out_scale,
                  const c10::optional<at::Tensor>& out_bias, const c10::optional<at::Tensor>& residual,
                  const std::string& isa_name, const c10::optional<at::Tensor>& out, bool relu,
                  const c10::optional<at::Tensor>& act_bias, const c10::optional<at::Tensor>& act_slope,
                  const c10::optional<at::Tensor>& act_bias2, const c10::optional<at::Tensor>& channel_sums) {
  const Isa& isa = find_isa(isa_name);
  check_bits(xb, "x_bits", "[N, H, W, ceil(C/64)]");
  const int64_t N = xb.size(0), K = xb.size(3), T = kh * kw, H0 = xb.size(1), W0 = xb.size(2);
  // A pointwise conv (1x1, stride 1, no padding) treats each image as rows of up to 256 pixels, whatever its width
  // (the NHWC input and the NCHW output and residual planes are contiguous): short rows cost per-row overhead.
  int64_t H = H0, W = W0;
  if (kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0 && W0 < 256)
    for (int64_t d = 256; d > W0; --d)
      if ((H0 * W0) % d == 0) {
        W = d, H = H0 * W0 / d;
        break;
      }
  TORCH_CHECK(K == (C + 63) / 64, "bindense.native: x_bits has ", K, " words per pixel, expected ", (C + 63) / 64);
  const Segments s(C, G, cgs);
  const int64_t OB = isa.block(), PL = isa.planes(), Og = O / G, Ogp = (Og + OB - 1) / OB * OB, nOB = Ogp / OB;
  TORCH_CHECK(wt.numel() == G * nOB * s.D * T * s.Kd * OB && (!wpop || wpop->numel() == G * Ogp * s.D * T),
              "bindense.native: prepared weights do not match this conv (prepare_weights with the same ISA)");
  const uint64_t* wwords = reinterpret_cast<const uint64_t*>(wt.data_ptr<int64_t>());
  std::vector<int32_t> pop_now;  // no wpop given: the tap popcounts from the layout (a pass over the weights)
  if (!wpop) pop_now = tap_popcounts(wwords, G, nOB, s.D, T, s.Kd, OB);
  at::Tensor wsplit;  // AVX2: the nibble planes the kernel reads, for this call only
  if (PL == 2) wsplit = nibble_planes(wwords, G * nOB * s.D * T * s.Kd, OB);
  const uint64_t* wkern = PL == 2 ? reinterpret_cast<const uint64_t*>(wsplit.data_ptr<int64_t>()) : wwords;
  const int32_t* pop = wpop ? wpop->data_ptr<int32_t>() : pop_now.data();
  const float* os = opt_ptr(out_scale, "out_scale");
  const float* obias = opt_ptr(out_bias, "out_bias");
  const float* res = opt_ptr(residual, "residual");
  if (res) TORCH_CHECK(residual->dim() == 4, "bindense.native: residual must be [N, Cr, Ho, Wo]");
  const std::vector<int32_t> rmap = res ? cfb_map(residual->size(1), O) : std::vector<int32_t>();
  if (gscale.has_value()) opt_ptr(gscale, "group_scale");
  const int64_t XS = G * s.D * s.Kd;
  const int64_t Hp = H + 2 * ph, Wp = W + 2 * pw, Ho = (Hp - kh) / sh + 1, Wo = (Wp - kw) / sw + 1;
  std::vector<int32_t> seg_len(s.D);
  for (int64_t d = 0; d < s.D; ++d) seg_len[d] = static_cast<int32_t>(s.len(d));

  // Zero-padded input, segment-packed: [N][Hp][Wp][planes][G][D][Kd] (AVX2: low and high nibble planes); the
  // input itself where that is what it already is.
  const uint64_t* xsrc = reinterpret_cast<const uint64_t*>(xb.data_ptr<int64_t>());
  const bool as_is = ph == 0 && pw == 0 && XS == K && PL == 1;
  auto xpad = as_is ? at::Tensor() : at::zeros({N, Hp, Wp, PL * XS}, at::kLong);
  uint64_t* xdst = as_is ? nullptr : reinterpret_cast<uint64_t*>(xpad.data_ptr<int64_t>());
  if (!as_is) at::parallel_for(0, N * H, grain(W * PL * XS), [&](int64_t b, int64_t en) {
    for (int64_t r = b; r < en; ++r) {
      const int64_t n = r / H, y = r % H;
      for (int64_t x = 0; x < W; ++x) {
        const uint64_t* src = xsrc + ((n * H + y) * W + x) * K;
        uint64_t* dst = xdst + ((n * Hp + y + ph) * Wp + x + pw) * PL * XS;
        if (XS == K) {
          for (int64_t k = 0; k < K; ++k) dst[k] = src[k];
        } else {
          for (int64_t g = 0; g < G; ++g)
            for (int64_t d = 0; d < s.D; ++d)
              extract_bits(src, K, g * s.Cg + d * s.e, seg_len[d], dst + (g * s.D + d) * s.Kd, s.Kd);
        }
        if (PL == 2)
          for (int64_t k = 0; k < XS; ++k) {
            dst[XS + k] = (dst[k] >> 4) & kLowNibbles;
            dst[k] &= kLowNibbles;
          }
      }
    }
  });

  // DAB group scale of each segment: the group holding the segment's first channel.
  at::Tensor sscale;
  if (gscale.has_value()) {
    auto idx = at::empty({G * s.D}, at::kLong);
    int64_t* ip = idx.data_ptr<int64_t>();
    for (int64_t g = 0; g < G; ++g)
      for (int64_t d = 0; d < s.D; ++d) ip[g * s.D + d] = (g * s.Cg + d * s.e) / cgs;
    sscale = gscale->index_select(1, idx).contiguous();
  }

  if (res) TORCH_CHECK(residual->size(0) == N && residual->size(2) * residual->size(3) == Ho * Wo,
                       "bindense.native: residual must be [N, Cr, Ho, Wo]");
  auto y = output(out, {N, O, (H0 + 2 * ph - kh) / sh + 1, (W0 + 2 * pw - kw) / sw + 1});
  double* sums = sums_ptr(channel_sums, N * O);
  std::vector<double> rows(sums ? N * O * Ho : 0);
  ConvArgs a{as_is ? xsrc : xdst, wkern, pop,
             seg_len.data(), sscale.defined() ? sscale.data_ptr<float>() : nullptr, os, obias, res,
             y.data_ptr<float>(), N, G, O, Og, Ogp, s.D, s.Kd, PL * XS, XS, H, W, Hp, Wp, Ho, Wo, kh, kw, sh, sw,
             ph, pw, relu ? 1 : 0, res ? residual->size(1) : O,
             vec_ptr(act_bias, O, "act_bias"), vec_ptr(act_slope, O, "act_slope"), vec_ptr(act_bias2, O, "act_bias2"),
             rmap.empty() ? nullptr : rmap.data(), sums ? rows.data() : nullptr};
  dynamic_parallel(N * G * nOB * Ho, [&](int64_t b, int64_t en) { isa.conv_rows(a, b, en); });
  for (int64_t q = 0; sums && q < N * O; ++q) {
    double t = 0.0;
    for (int64_t i = 0; i < Ho; ++i) t += rows[q * Ho + i];
    sums[q] = t;
  }
  return y;
}

at::Tensor conv2d(const at::Tensor& xb, const at::Tensor& wt, const c10::optional<at::Tensor>& wpop, int64_t C,
                  int64_t O, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t G,
                  int64_t cgs, const c10::optional<at::Tensor>& gscale, const c10::optional<at::Tensor>& out_scale,
                  const c10::optional<at::Tensor>& out_bias, const c10::optional<at::Tensor>& residual,
                  const std::string& isa_name, const c10::optional<at::Tensor>& out, bool relu) {
  return conv2d_fused(xb, wt, wpop, C, O, kh, kw, sh, sw, ph, pw, G, cgs, gscale, out_scale, out_bias, residual,
                      isa_name, out, relu, c10::nullopt, c10::nullopt, c10::nullopt, c10::nullopt);
}

at::Tensor depthwise_conv2d(const at::Tensor& xb, const at::Tensor& wb, int64_t C, int64_t kh, int64_t kw,
                            int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t cgs,
                            const c10::optional<at::Tensor>& gscale, const c10::optional<at::Tensor>& out_scale,
                            const c10::optional<at::Tensor>& out_bias, const c10::optional<at::Tensor>& residual,
                            const std::string& isa_name, const c10::optional<at::Tensor>& out) {
  const Isa& isa = find_isa(isa_name);
  check_bits(xb, "x_bits", "[N, H, W, ceil(C/64)]");
  check_bits(wb, "w_bits", "[C, kh, kw, 1]");
  TORCH_CHECK(xb.size(3) == (C + 63) / 64 && wb.size(0) == C && wb.size(1) == kh && wb.size(2) == kw &&
                  wb.size(3) == 1, "bindense.native: depthwise shapes do not match C=", C);
  if (gscale.has_value()) opt_ptr(gscale, "group_scale");
  return depthwise(isa, xb, wb, C, kh, kw, sh, sw, ph, pw, cgs, gscale, opt_ptr(out_scale, "out_scale"),
                   opt_ptr(out_bias, "out_bias"), opt_ptr(residual, "residual"), out);
}

// Depthwise conv of sign(x - threshold) (float32 [N, C, H, W]) with +-1 weights w [C, kh * kw] (int8), the DAB
// scale of each plane when dab_a is given (returned, [N, C]; else ones) and the fused epilogue (DwpArgs).
std::vector<at::Tensor> sign_depthwise_conv2d(const at::Tensor& x, const at::Tensor& w, int64_t kh, int64_t kw,
                                              int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                                              const c10::optional<at::Tensor>& thr,
                                              const c10::optional<at::Tensor>& dab_a,
                                              const c10::optional<at::Tensor>& scale_in,
                                              const c10::optional<at::Tensor>& out_scale,
                                              const c10::optional<at::Tensor>& out_bias,
                                              const c10::optional<at::Tensor>& residual, bool relu,
                                              const std::string& isa_name,
                                              const c10::optional<at::Tensor>& channel_sums = c10::nullopt) {
  const Isa& isa = find_isa(isa_name);
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.is_contiguous() && x.device().is_cpu(),
              "bindense.native: x must be a contiguous float32 CPU tensor [N, C, H, W]");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), T = kh * kw;
  TORCH_CHECK(w.scalar_type() == at::kChar && w.is_contiguous() && w.numel() == C * T,
              "bindense.native: depthwise signs must be a contiguous int8 tensor of C * kh * kw = ", C * T);
  TORCH_CHECK(T <= kMaxTaps, "bindense.native: kernel has more than ", kMaxTaps, " taps");
  const float* tp = opt_ptr(thr, "threshold");
  if (tp) TORCH_CHECK(thr->numel() == N * C, "bindense.native: threshold must be [N, C]");
  const float* ap = opt_ptr(dab_a, "dab_a");
  if (ap) TORCH_CHECK(dab_a->numel() == C, "bindense.native: dab_a must be [C]");
  const float* sip = opt_ptr(scale_in, "channel_scale");
  if (sip) TORCH_CHECK(scale_in->numel() == N * C, "bindense.native: channel_scale must be [N, C]");
  const int64_t Hp = H + 2 * ph, Wp = W + 2 * pw, Ho = (Hp - kh) / sh + 1, Wo = (Wp - kw) / sw + 1;
  TORCH_CHECK(Ho > 0 && Wo > 0, "bindense.native: the kernel does not fit the padded input");
  const float* res = opt_ptr(residual, "residual");
  if (res) TORCH_CHECK(residual->numel() == N * C * Ho * Wo, "bindense.native: residual must be [N, C, Ho, Wo]");
  auto y = at::empty({N, C, Ho, Wo}, at::kFloat);
  auto cs = at::empty({N, C}, at::kFloat);
  double* sums = sums_ptr(channel_sums, N * C);
  std::vector<double> rows(sums ? N * C * Ho : 0);
  DwpArgs a{x.data_ptr<float>(), tp, ap, sip, w.data_ptr<int8_t>(), opt_ptr(out_scale, "out_scale"),
            opt_ptr(out_bias, "out_bias"), res, y.data_ptr<float>(), cs.data_ptr<float>(),
            N, C, H, W, Hp, Wp, Ho, Wo, kh, kw, sh, sw, ph, pw, relu ? 1 : 0, sums ? rows.data() : nullptr};
  dynamic_parallel(N * C, [&](int64_t b, int64_t e) { isa.dwp_planes(a, b, e); });
  for (int64_t q = 0; sums && q < N * C; ++q) {
    double t = 0.0;
    for (int64_t i = 0; i < Ho; ++i) t += rows[q * Ho + i];
    sums[q] = t;
  }
  return {y, cs};
}

// Per-channel DAB's output alpha * sign(x - thr) (sign(0) = +1), float32 [N, C, H, W], and alpha = exp(a[c]
// (mean|x - thr| - 1)) [N, C]: per plane, one pass for the statistic, one (from cache) for the output.
std::vector<at::Tensor> dab_dense(const at::Tensor& x, const at::Tensor& thr, const at::Tensor& a) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.is_contiguous() && x.device().is_cpu(),
              "bindense.native: x must be a contiguous float32 CPU tensor [N, C, H, W]");
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const float* tp = opt_ptr(thr, "threshold");
  const float* ap = opt_ptr(a, "dab_a");
  TORCH_CHECK(thr.numel() == N * C && a.numel() == C, "bindense.native: threshold must be [N, C] and a [C]");
  auto y = at::empty_like(x);
  auto alpha = at::empty({N, C}, at::kFloat);
  const float* xp0 = x.data_ptr<float>();
  float* yp0 = y.data_ptr<float>();
  float* al = alpha.data_ptr<float>();
  dynamic_parallel(N * C, [&](int64_t b, int64_t e) {
    for (int64_t task = b; task < e; ++task) {
      const float* xp = xp0 + task * HW;
      float* yp = yp0 + task * HW;
      const float t = tp[task];
      float part[16] = {};
      int64_t q = 0;
      for (; q + 16 <= HW; q += 16)
        for (int j = 0; j < 16; ++j) part[j] += std::fabs(xp[q + j] - t);
      for (; q < HW; ++q) part[0] += std::fabs(xp[q] - t);
      double asum = 0.0;
      for (int j = 0; j < 16; ++j) asum += part[j];
      const float m = std::exp(ap[task % C] * (static_cast<float>(asum / HW) - 1.0f));
      al[task] = m;
      for (q = 0; q < HW; ++q) yp[q] = xp[q] - t >= 0.f ? m : -m;
    }
  });
  return {y, alpha};
}

// Defined below (pack_chunk).
std::vector<at::Tensor> pack_activations_stats(const at::Tensor& x, const c10::optional<at::Tensor>& thr,
                                               bool abs_sums);

at::Tensor pack_activations(const at::Tensor& x, const c10::optional<at::Tensor>& thr) {
  return pack_activations_stats(x, thr, false)[0];
}

// One chunk of pack_activations_stats: pixels [p0, p0 + np) of sample n, word k. Channel by channel, the chunk of
// each channel plane is streamed once (contiguous reads the prefetchers follow, whatever the image width), its bits
// OR-ed into the chunk's words acc[np] (cache-resident) and |x - t| summed in 16 lanes into sp[c]. Cloned per ISA
// by the compiler (target_clones, run-time dispatch by the loader); every clone does the same float operations in
// the same order, so the sums are identical on every path.
__attribute__((target_clones("avx512f", "avx2", "default")))
void pack_chunk(const float* xp, const float* tp, uint64_t* op, float* sp, int64_t n, int64_t k, int64_t p0,
                int64_t np, int64_t C, int64_t HW, int64_t K, uint64_t* acc) {
  const int64_t nc = std::min<int64_t>(64, C - 64 * k);
  for (int64_t p = 0; p < np; ++p) acc[p] = 0;
  for (int64_t j = 0; j < nc; ++j) {
    const int64_t c = 64 * k + j;
    const float t = tp ? tp[n * C + c] : 0.f;
    const float* xr = xp + (n * C + c) * HW + p0;
    const uint64_t bit = uint64_t(1) << j;
    float lane[16] = {};
    int64_t p = 0;
    for (; p + 16 <= np; p += 16)
      for (int64_t q = 0; q < 16; ++q) {
        const float v = xr[p + q] - t;
        acc[p + q] |= v >= 0.f ? bit : 0;
        lane[q] += std::fabs(v);
      }
    float sum = 0.f;
    for (; p < np; ++p) {
      const float v = xr[p] - t;
      acc[p] |= v >= 0.f ? bit : 0;
      sum += std::fabs(v);
    }
    if (sp) {
      for (int64_t q = 0; q < 16; ++q) sum += lane[q];
      sp[c] = sum;
    }
  }
  for (int64_t p = 0; p < np; ++p) op[(n * HW + p0 + p) * K + k] = acc[p];
}

// Pack float32 [N, C, H, W] into int64 [N, H, W, ceil(C/64)], bit = (x - threshold[n, c] >= 0); with abs_sums,
// also sum |x - threshold| per (sample, chunk of pixels, channel): float32 [N, chunks, C] (DAB's statistic, in the
// same pass), tasks of (sample, word, chunk of up to 4096 pixels).
std::vector<at::Tensor> pack_activations_stats(const at::Tensor& x, const c10::optional<at::Tensor>& thr,
                                               bool abs_sums) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.is_contiguous() && x.device().is_cpu(),
              "bindense.native: x must be a contiguous float32 CPU tensor [N, C, H, W]");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), K = (C + 63) / 64, HW = H * W;
  constexpr int64_t PC = 4096;
  const int64_t chunks = std::max<int64_t>(1, (HW + PC - 1) / PC);
  const float* tp = opt_ptr(thr, "threshold");
  if (tp) TORCH_CHECK(thr->numel() == N * C, "bindense.native: threshold must be [N, C]");
  auto out = at::empty({N, H, W, K}, at::kLong);
  auto sums = abs_sums ? at::zeros({N, chunks, C}, at::kFloat) : at::Tensor();
  float* sp = abs_sums ? sums.data_ptr<float>() : nullptr;
  const float* xp = x.data_ptr<float>();
  uint64_t* op = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  at::parallel_for(0, N * K * chunks, grain(64 * PC), [&](int64_t b, int64_t e) {
    std::vector<uint64_t> acc(PC);
    for (int64_t task = b; task < e; ++task) {
      const int64_t ch = task % chunks, k = (task / chunks) % K, n = task / (chunks * K), p0 = ch * PC;
      pack_chunk(xp, tp, op, sp ? sp + (n * chunks + ch) * C : nullptr, n, k, p0, std::min(PC, HW - p0), C, HW, K,
                 acc.data());
    }
  });
  return {out, sums};
}

// sum |x - thr[n, c]| over each (sample, channel) plane of float32 [N, C, H, W] (DAB's statistic), read-only, in 16
// lanes (the same order on every clone).
__attribute__((target_clones("avx512f", "avx2", "default")))
float plane_abs_sum(const float* xp, float t, int64_t HW) {
  float lane[16] = {};
  int64_t q = 0;
  for (; q + 16 <= HW; q += 16)
    for (int j = 0; j < 16; ++j) lane[j] += std::fabs(xp[q + j] - t);
  float sum = 0.f;
  for (; q < HW; ++q) sum += std::fabs(xp[q] - t);
  for (int j = 0; j < 16; ++j) sum += lane[j];
  return sum;
}

at::Tensor abs_sums(const at::Tensor& x, const c10::optional<at::Tensor>& thr) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.is_contiguous() && x.device().is_cpu(),
              "bindense.native: x must be a contiguous float32 CPU tensor [N, C, H, W]");
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const float* tp = opt_ptr(thr, "threshold");
  if (tp) TORCH_CHECK(thr->numel() == N * C, "bindense.native: threshold must be [N, C]");
  auto out = at::empty({N, C}, at::kFloat);
  float* op = out.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  at::parallel_for(0, N * C, grain(HW), [&](int64_t b, int64_t e) {
    for (int64_t task = b; task < e; ++task) op[task] = plane_abs_sum(xp + task * HW, tp ? tp[task] : 0.f, HW);
  });
  return out;
}

// One plane of epilogue_: y += the residual plane (or the mean of cnt residual planes `step` floats apart, CFB's
// merged channel), the activation after the unit, ReLU; returns the plane's sum (16 lanes, then double).
__attribute__((target_clones("avx512f", "avx2", "default")))
double epilogue_plane(float* y, const float* r, int64_t step, int64_t cnt, float ab, const float* slope,
                      const float* ab2, bool has_ab, bool relu, int64_t HW, float* m) {
  if (r && cnt == 1) {
    for (int64_t p = 0; p < HW; ++p) y[p] += r[p];
  } else if (r) {  // the merged channel's sum gathers in m, one residual plane at a time
    const float count = static_cast<float>(cnt);
    for (int64_t p = 0; p < HW; ++p) m[p] = r[p];
    for (int64_t q = 1; q < cnt; ++q)
      for (int64_t p = 0; p < HW; ++p) m[p] += r[q * step + p];
    for (int64_t p = 0; p < HW; ++p) y[p] += m[p] / count;
  }
  if (has_ab)
    for (int64_t p = 0; p < HW; ++p) y[p] += ab;
  if (slope) {
    const float sl = *slope;
    for (int64_t p = 0; p < HW; ++p) y[p] = y[p] > 0.f ? y[p] : sl * y[p];
  }
  if (ab2) {
    const float b2 = *ab2;
    for (int64_t p = 0; p < HW; ++p) y[p] += b2;
  }
  if (relu)
    for (int64_t p = 0; p < HW; ++p) y[p] = y[p] < 0.f ? 0.f : y[p];
  float lane[16] = {};
  int64_t p = 0;
  for (; p + 16 <= HW; p += 16)
    for (int q = 0; q < 16; ++q) lane[q] += y[p + q];
  double sum = 0.0;
  for (; p < HW; ++p) sum += y[p];
  for (int q = 0; q < 16; ++q) sum += lane[q];
  return sum;
}

// In place on float32 [N, O, H, W] (a float conv's output): y = act(y + cfb(residual, O)) then ReLU, the fused
// epilogue of the runtime's float path in one pass per plane; channel_sums [N * O] receives the plane sums.
void epilogue_(at::Tensor& y, const c10::optional<at::Tensor>& residual, const c10::optional<at::Tensor>& act_bias,
               const c10::optional<at::Tensor>& act_slope, const c10::optional<at::Tensor>& act_bias2, bool relu,
               const c10::optional<at::Tensor>& channel_sums) {
  TORCH_CHECK(y.dim() == 4 && y.scalar_type() == at::kFloat && y.is_contiguous() && y.device().is_cpu(),
              "bindense.native: y must be a contiguous float32 CPU tensor [N, O, H, W]");
  const int64_t N = y.size(0), O = y.size(1), HW = y.size(2) * y.size(3);
  const float* res = opt_ptr(residual, "residual");
  if (res) TORCH_CHECK(residual->dim() == 4 && residual->size(0) == N && residual->size(2) * residual->size(3) == HW,
                       "bindense.native: residual must be [N, Cr, H, W] like y");
  const int64_t Cr = res ? residual->size(1) : O;
  const std::vector<int32_t> rmap = res ? cfb_map(Cr, O) : std::vector<int32_t>();
  const float* ab = vec_ptr(act_bias, O, "act_bias");
  const float* sl = vec_ptr(act_slope, O, "act_slope");
  const float* ab2 = vec_ptr(act_bias2, O, "act_bias2");
  double* sums = sums_ptr(channel_sums, N * O);
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, N * O, grain(HW), [&](int64_t b, int64_t e) {
    std::vector<float> m(res && O % Cr != 0 ? HW : 0);
    for (int64_t task = b; task < e; ++task) {
      const int64_t n = task / O, o = task % O;
      const float* r = res ? res + (n * Cr + rmap[3 * o]) * HW : nullptr;
      const double t = epilogue_plane(yp + task * HW, r, res ? rmap[3 * o + 1] * HW : 0, res ? rmap[3 * o + 2] : 1,
                                      ab ? ab[o] : 0.f, sl ? sl + o : nullptr, ab2 ? ab2 + o : nullptr, ab != nullptr,
                                      relu, HW, m.data());
      if (sums) sums[task] = t;
    }
  });
}

// One tap of one output channel: dst[c * T] = +-s for the Cg bits of the tap's words (cloned per ISA: a variable
// shift per lane vectorizes on AVX2 / AVX-512).
__attribute__((target_clones("avx512f", "avx2", "default")))
void unpack_tap(const uint64_t* wt, int64_t Cg, float s, float* dst, int64_t T) {
  for (int64_t k = 0; 64 * k < Cg; ++k) {
    const uint64_t w = wt[k];
    const int64_t nc = std::min<int64_t>(64, Cg - 64 * k);
    float* d = dst + 64 * k * T;
    if (T == 1) {
      for (int64_t j = 0; j < nc; ++j) d[j] = (w >> j) & 1 ? s : -s;
    } else {
      for (int64_t j = 0; j < nc; ++j) d[j * T] = (w >> j) & 1 ? s : -s;
    }
  }
}

// +-1 float32 weights [O, Cg, kh, kw] times scale[o] from packed words [O, kh, kw, ceil(Cg/64)] (the float path's
// weights, unpacked at each call: the packed words stay the only copy between calls).
at::Tensor unpack_weights_scaled(const at::Tensor& wb, int64_t Cg, const at::Tensor& scale) {
  check_bits(wb, "w_bits", "[O, kh, kw, ceil(Cg/64)]");
  const int64_t O = wb.size(0), kh = wb.size(1), kw = wb.size(2), K = wb.size(3), T = kh * kw;
  TORCH_CHECK(K == (Cg + 63) / 64, "bindense.native: w_bits has ", K, " words per tap, expected ", (Cg + 63) / 64);
  const float* sp = vec_ptr(scale, O, "scale");
  auto out = at::empty({O, Cg, kh, kw}, at::kFloat);
  const uint64_t* w = reinterpret_cast<const uint64_t*>(wb.data_ptr<int64_t>());
  float* op = out.data_ptr<float>();
  at::parallel_for(0, O, grain(Cg * T), [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      const float s = sp[o];
      for (int64_t t = 0; t < T; ++t) unpack_tap(w + (o * T + t) * K, Cg, s, op + o * Cg * T + t, T);
    }
  });
  return out;
}

}  // namespace bdn

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("cpu_isas", &bdn::cpu_isas, "native ISA paths this CPU supports, best first");
  m.def("train_isas", &bdn::train::train_isas, "ISA paths of the training-unit kernels on this CPU, best first");
  m.def("dab_forward", &bdn::train::dab_forward, "DAB forward for training: binarized input and statistics",
        py::arg("x"), py::arg("a"), py::arg("k"), py::arg("b"), py::arg("isa"), py::arg("out") = py::none());
  m.def("dab_rebuild", &bdn::train::dab_rebuild, "DAB binarized input copysign(alpha, (x - thr) + 0)");
  m.def("dab_backward", &bdn::train::dab_backward,
        "DAB backward in the gradient's buffer, with per-plane sums (and the binarized input, with rebuild)",
        py::arg("x"), py::arg("thr"), py::arg("grad"), py::arg("alpha"), py::arg("isa"), py::arg("rebuild") = false,
        py::arg("out") = py::none());
  m.def("weight_forward", &bdn::train::weight_forward, "scaled-sign weights, per-row scale and |w| > 1 counts",
        py::arg("w"), py::arg("scaled"), py::arg("isa"), py::arg("out") = py::none());
  m.def("weight_rebuild", &bdn::train::weight_rebuild, "scaled-sign weights from the latent weight and scale",
        py::arg("w"), py::arg("scale"), py::arg("isa"), py::arg("out") = py::none());
  m.def("act_forward", &bdn::train::act_forward, "LearnableBias -> PReLU [-> LearnableBias] in one pass",
        py::arg("x"), py::arg("b1"), py::arg("w"), py::arg("b2"), py::arg("isa"));
  m.def("act_backward", &bdn::train::act_backward, "its backward: x's gradient and per-plane parameter sums");
  m.def("prepare_weights", &bdn::prepare_weights, "packed weights in the layout of one ISA path");
  m.def("unprepare_weights", &bdn::unprepare_weights, "packed weights back from the layout of one ISA path");
  m.def("conv2d", &bdn::conv2d, "binary conv2d of packed activations and prepared weights");
  m.def("depthwise_conv2d", &bdn::depthwise_conv2d, "binary depthwise conv2d (groups == C == O)");
  m.def("pack_activations", &bdn::pack_activations, "pack float32 NCHW activations into NHWC bit words");
  m.def("pack_activations_stats", &bdn::pack_activations_stats, "pack, plus sums of |x - threshold| per chunk of pixels");
  m.def("dab_dense", &bdn::dab_dense, "per-channel DAB output alpha * sign(x - threshold) and alpha");
  m.def("sign_depthwise_conv2d", [](const at::Tensor& x, const at::Tensor& w, int64_t kh, int64_t kw, int64_t sh,
                                    int64_t sw, int64_t ph, int64_t pw, const c10::optional<at::Tensor>& thr,
                                    const c10::optional<at::Tensor>& dab_a, const c10::optional<at::Tensor>& scale_in,
                                    const c10::optional<at::Tensor>& out_scale,
                                    const c10::optional<at::Tensor>& out_bias,
                                    const c10::optional<at::Tensor>& residual, bool relu,
                                    const std::string& isa_name) {
    return bdn::sign_depthwise_conv2d(x, w, kh, kw, sh, sw, ph, pw, thr, dab_a, scale_in, out_scale, out_bias,
                                      residual, relu, isa_name);
  }, "depthwise conv of sign(x - threshold), float input");
  m.def("sign_depthwise_conv2d_sums", &bdn::sign_depthwise_conv2d,
        "sign_depthwise_conv2d, plus the sum of every output plane (float64 [N * C])");
  m.def("conv2d_fused", &bdn::conv2d_fused, "conv2d with the activation after the unit and the output plane sums");
  m.def("abs_sums", &bdn::abs_sums, "sum |x - threshold| per (sample, channel) plane");
  m.def("epilogue_", &bdn::epilogue_, "in place: y = act(y + cfb(residual)), ReLU, plane sums (float path)");
  m.def("unpack_weights_scaled", &bdn::unpack_weights_scaled, "+-scale[o] float weights from packed words");
}
