// Plain-data arguments shared by the dispatcher (binconv.cpp, which includes torch) and the ISA translation units
// (isa_*.cpp, which must not: they are compiled with ISA-specific target pragmas, and any inline function they
// share with other translation units could be linked in its AVX-512 flavour on a CPU without it).
#pragma once
#include <cstdint>

namespace bdn {

constexpr int kMaxTaps = 1024;  // kh * kw of one conv

// Dense / grouped binary conv on a zero-padded, segment-packed input.
// x: [N][Hp][Wp][XS] words, XS = G * D * Kd; segment d of conv group g holds seg_len[d] channels in Kd words.
// w: [G][Ogp / OB][D][T][Kd][planes][OB] words (OB output channels interleaved; padding channels are 0 words).
// planes = 2 on AVX2: the low and the high nibbles of every word, split from the prepared words (which are the
// plain words on every path) at each call, for the vpshufb lookup.
// wpop: [G][Ogp][D][T] popcount of each weight tap (the correction for taps that fall on the padding).
struct ConvArgs {
  const uint64_t* x;
  const uint64_t* w;
  const int32_t* wpop;
  const int32_t* seg_len;   // [D]
  const float* seg_scale;   // [N][G][D] or null (DAB group scales)
  const float* out_scale;   // [O] or null
  const float* out_bias;    // [O] or null
  const float* residual;    // [N][Cr][Ho][Wo] or null (tiled over the output channels)
  float* y;                 // [N][O][Ho][Wo]
  int64_t N, G, O, Og, Ogp, D, Kd, XS, Xplane;  // XS: words per padded pixel; Xplane: offset of plane 1
  int64_t H, W, Hp, Wp, Ho, Wo, kh, kw, sh, sw, ph, pw;
  int64_t relu;             // 1: the epilogue clamps at 0 (a ReLU after the unit, fused)
  int64_t res_channels;     // residual channels Cr (O % Cr == 0): output channel o adds residual channel o % Cr
  // Additions of the fused epilogue (after the residual, before relu): the activation after the unit,
  // y = prelu(y + act_bias, act_slope) + act_bias2 (LearnableBias -> PReLU -> LearnableBias; each optional).
  const float* act_bias;    // [O] or null
  const float* act_slope;   // [O] or null: y > 0 ? y : slope * y
  const float* act_bias2;   // [O] or null
  // CFB's channel merge: with res_map, output channel o adds the mean of residual channels res_map[3o] +
  // q * res_map[3o + 1], q < res_map[3o + 2] (one channel: tiled; several: CFB's merged channels).
  const int32_t* res_map;   // [O][3] or null (then o adds channel o % res_channels)
  double* row_sums;         // [N][O][Ho] or null: receives the sum of each output row (the next DAB's mean)
};

// Depthwise conv (groups == C == O) on int8 signs: xs [N][Hp][Wp][Cp] (+1/-1; 0 on the padding and in the
// channels C..Cp-1), wm [T][Cp] weight sign masks (0 for w >= 0, -1 for w < 0).
struct DwArgs {
  const int8_t* xs;
  const int8_t* wm;
  const float* ch_scale;    // [N][C] or null (DAB group scales, per channel)
  const float* out_scale;
  const float* out_bias;
  const float* residual;
  float* y;
  int64_t N, C, Cp, Hp, Wp, Ho, Wo, kh, kw, sh, sw;
};

// Depthwise conv (groups == C == O) straight from float activations, one task per (sample, channel) plane:
// signs s = (x - thr >= 0 ? +1 : -1) into a zero-padded int8 plane, then S = sum over the taps of s * w in int16
// lanes along the row, and y = (ch_scale * S) * out_scale + out_bias + residual. With dab_a, ch_scale is DAB's
// exp(a[c] (mean|x - thr| - 1)) of the plane (its statistic taken in the same pass as the signs), else 1.
struct DwpArgs {
  const float* x;           // [N][C][H][W]
  const float* thr;         // [N * C] or null (0)
  const float* dab_a;       // [C] or null
  const float* scale_in;    // [N * C] or null: a given scale per plane (grouped DAB), instead of dab_a's
  const int8_t* w;          // [C][T], +1 / -1
  const float* out_scale;   // [C] or null
  const float* out_bias;    // [C] or null
  const float* residual;    // [N][C][Ho][Wo] or null
  float* y;                 // [N][C][Ho][Wo]
  float* ch_scale;          // [N * C] or null: receives the scale used per plane
  int64_t N, C, H, W, Hp, Wp, Ho, Wo, kh, kw, sh, sw, ph, pw, relu;
  double* row_sums;         // [N * C][Ho] or null: receives the sum of each output row (the next DAB's mean)
};

}  // namespace bdn
