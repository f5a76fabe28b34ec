// Fused CPU kernels of the binary training unit (train_ops.cpp), registered in binconv.cpp's module.
#pragma once
#include <torch/extension.h>

#include <string>
#include <vector>

namespace bdn::train {

// The full-size outputs (xb, wb) go to `out` where given (a scratch buffer of that shape), else to a new tensor.
//
// DAB forward of x [N, C, H, W] with a, k, b [C]: {xb, stats [4, N, C] = mean(x), mean|s|, alpha, thr}, where
// s = (x - thr) + 0 and thr = k mean(x) + b; s is not returned (the rebuild and the backward recompute it from x).
std::vector<at::Tensor> dab_forward(const at::Tensor& x, const at::Tensor& a, const at::Tensor& k,
                                    const at::Tensor& b, const std::string& isa,
                                    const c10::optional<at::Tensor>& out);
// xb = copysign(alpha, s), x [N, C, H, W], thr and alpha [N, C].
at::Tensor dab_rebuild(const at::Tensor& x, const at::Tensor& thr, const at::Tensor& alpha, const std::string& isa);
// In place in grad ([N, C, H, W], the gradient of xb on entry, of s on return): {grad, sums [2, N, C] =
// sum(grad_xb * xb), sum(grad_s)}, and with rebuild also xb (dab_rebuild's value) from the same pass over x.
std::vector<at::Tensor> dab_backward(const at::Tensor& x, const at::Tensor& thr, at::Tensor grad,
                                     const at::Tensor& alpha, const std::string& isa, bool rebuild,
                                     const c10::optional<at::Tensor>& out);
// w [O, ...] (rows contiguous): {wb, scale [O], outside [O] (count of |w| > 1 per row)}; scale = mean|w| per row
// when scaled, else 1.
std::vector<at::Tensor> weight_forward(const at::Tensor& w, bool scaled, const std::string& isa,
                                       const c10::optional<at::Tensor>& out);
// wb = copysign(scale[o], w + 0).
at::Tensor weight_rebuild(const at::Tensor& w, const at::Tensor& scale, const std::string& isa,
                          const c10::optional<at::Tensor>& out);
// The activation LearnableBias -> PReLU [-> LearnableBias] on x [N, C, H, W] with b1, w (and b2) [C]:
// y = prelu(x + b1; w) (+ b2).
at::Tensor act_forward(const at::Tensor& x, const at::Tensor& b1, const at::Tensor& w,
                       const c10::optional<at::Tensor>& b2, const std::string& isa);
// Its backward from the output's gradient: {grad_x, PReLU's weight-gradient terms (t > 0 ? 0 : t * grad)}, full
// size; the caller reduces them (and grad) to the parameters' gradients.
std::vector<at::Tensor> act_backward(const at::Tensor& x, const at::Tensor& b1, const at::Tensor& w,
                                     const at::Tensor& grad, const std::string& isa);
// The ISA paths these kernels run on this CPU, best first.
std::vector<std::string> train_isas();

}  // namespace bdn::train
