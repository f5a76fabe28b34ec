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
// planes = 2 on AVX2: the low and the high nibbles of every word, pre-split for the vpshufb lookup.
// wpop: [G][Ogp][D][T] popcount of each weight tap (the correction for taps that fall on the padding).
struct ConvArgs {
  const uint64_t* x;
  const uint64_t* w;
  const int32_t* wpop;
  const int32_t* seg_len;   // [D]
  const float* seg_scale;   // [N][G][D] or null (DAB group scales)
  const float* out_scale;   // [O] or null
  const float* out_bias;    // [O] or null
  const float* residual;    // [N][O][Ho][Wo] or null
  float* y;                 // [N][O][Ho][Wo]
  int64_t N, G, O, Og, Ogp, D, Kd, XS, Xplane;  // XS: words per padded pixel; Xplane: offset of plane 1
  int64_t H, W, Hp, Wp, Ho, Wo, kh, kw, sh, sw, ph, pw;
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

}  // namespace bdn
