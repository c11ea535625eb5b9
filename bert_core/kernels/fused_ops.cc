// Fused CPU kernels for the memory-bound part of a BERT training step (float32).
//
// On CPU a training step of a small BERT spends much of its time in elementwise ops, each one a full
// pass over a [tokens, width] tensor: exact GELU is ~5 TF ops forward and ~8 backward, dropout draws
// a float per element and then compares, selects and multiplies, LayerNorm is moments + normalize.
// Each op here is one pass (LayerNorm: one pass per row, in cache), with the same math:
//
//   BertGelu / BertGeluGrad            y = x Phi(x) (erf form), dx = dy (Phi(x) + x phi(x))
//   BertBiasGelu / BertBiasGeluGrad    the same of x + bias (a dense layer's bias and GELU); the
//                                      backward also gives the bias gradient, so no second pass
//   BertDropout / BertDropoutGrad      keep where a 16-bit Philox draw >= threshold, scale the kept by
//                                      65536 / (65536 - threshold); the mask is kept for the backward
//   BertLayerNorm / BertLayerNormGrad  over the last axis; mean and 1/sqrt(var + eps) are kept
//   BertSparseCrossEntropy / ...Grad   -log softmax(logits)[label] per row, from the row's max and
//                                      log-sum-exp, and the row's argmax (the prediction); the
//                                      gradient (softmax - one_hot) dy recomputes exp
//   BertSoftmaxDropoutGrad             the gradient of dropout(softmax(x)) over the last axis (the
//                                      attention probabilities): dx = p (g - sum(g p)), g = dq m scale
//   BertApplyAdamW                     one pass over w, m, v, g of a float32 variable: the clipping
//                                      factor on g, the decoupled decay w -= decay w, then the update
//                                      of ResourceApplyAdam with beta powers 0 (three passes in TF)
//
// Built and loaded by bert_core/kernels/__init__.py, which also registers the gradients and falls
// back to TensorFlow ops where these do not apply (GPU, half precision, no compiler).

#define EIGEN_USE_THREADS

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/kernels/training_op_helpers.h"
#include "tensorflow/core/lib/random/philox_random.h"
#include "Eigen/Core"
#include "unsupported/Eigen/SpecialFunctions"
#include "unsupported/Eigen/CXX11/Tensor"

namespace bert_kernels {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;
using CPUDevice = Eigen::ThreadPoolDevice;

constexpr float kInvSqrt2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;

absl::Status SameAsInput(InferenceContext* c, int input) {
  c->set_output(0, c->input(input));
  return absl::OkStatus();
}

// ------------------------------------------------------------------------------------------------
// GELU
// ------------------------------------------------------------------------------------------------
REGISTER_OP("BertGelu")
    .Input("x: float")
    .Output("y: float")
    .SetShapeFn([](InferenceContext* c) { return SameAsInput(c, 0); });

REGISTER_OP("BertGeluGrad")
    .Input("dy: float")
    .Input("x: float")
    .Output("dx: float")
    .SetShapeFn([](InferenceContext* c) { return SameAsInput(c, 1); });

class GeluOp : public OpKernel {
 public:
  explicit GeluOp(OpKernelConstruction* c) : OpKernel(c) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    auto X = x.flat<float>();
    y->flat<float>().device(ctx->eigen_device<CPUDevice>()) = X * ((X * kInvSqrt2).erf() * 0.5f + 0.5f);
  }
};

class GeluGradOp : public OpKernel {
 public:
  explicit GeluGradOp(OpKernelConstruction* c) : OpKernel(c) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& x = ctx->input(1);
    OP_REQUIRES(ctx, dy.shape() == x.shape(),
                absl::InvalidArgumentError("BertGeluGrad: dy and x shapes differ"));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, x.shape(), &dx));
    auto X = x.flat<float>();
    auto DY = dy.flat<float>();
    dx->flat<float>().device(ctx->eigen_device<CPUDevice>()) =
        DY * ((X * kInvSqrt2).erf() * 0.5f + 0.5f + X * kInvSqrt2Pi * (X.square() * -0.5f).exp());
  }
};

REGISTER_KERNEL_BUILDER(Name("BertGelu").Device(DEVICE_CPU), GeluOp);
REGISTER_KERNEL_BUILDER(Name("BertGeluGrad").Device(DEVICE_CPU), GeluGradOp);

// GELU of x + bias over the last axis, rows in parallel; the bias gradient sums over rows in a fixed
// number of row chunks (added in order: the result does not depend on threading).
REGISTER_OP("BertBiasGelu")
    .Input("x: float")
    .Input("bias: float")
    .Output("y: float")
    .SetShapeFn([](InferenceContext* c) { return SameAsInput(c, 0); });

REGISTER_OP("BertBiasGeluGrad")
    .Input("dy: float")
    .Input("x: float")
    .Input("bias: float")
    .Output("dx: float")
    .Output("dbias: float")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(2));
      return absl::OkStatus();
    });

using Row = Eigen::Map<Eigen::ArrayXf>;
using ConstRow = Eigen::Map<const Eigen::ArrayXf>;

bool BiasRows(OpKernelContext* ctx, const Tensor& x, const Tensor& bias, int64_t* rows, int64_t* width) {
  if (x.dims() < 1 || bias.dims() != 1 || bias.dim_size(0) != x.dim_size(x.dims() - 1)) {
    ctx->CtxFailure(absl::InvalidArgumentError("BertBiasGelu: bias must be [last axis of x]"));
    return false;
  }
  *width = bias.dim_size(0);
  *rows = *width == 0 ? 0 : x.NumElements() / *width;
  return true;
}

class BiasGeluOp : public OpKernel {
 public:
  explicit BiasGeluOp(OpKernelConstruction* c) : OpKernel(c) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& bias = ctx->input(1);
    int64_t rows = 0, width = 0;
    if (!BiasRows(ctx, x, bias, &rows, &width)) return;
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    const float* xp = x.flat<float>().data();
    const float* bp = bias.flat<float>().data();
    float* yp = y->flat<float>().data();
    auto work = [&](Eigen::Index first, Eigen::Index last) {
      ConstRow b(bp, width);
      Eigen::ArrayXf t(width);
      for (Eigen::Index r = first; r < last; ++r) {
        t = ConstRow(xp + r * width, width) + b;
        Row(yp + r * width, width) = t * ((t * kInvSqrt2).erf() * 0.5f + 0.5f);
      }
    };
    ctx->eigen_device<CPUDevice>().parallelFor(rows, Eigen::TensorOpCost(4.0 * width, 4.0 * width, 30.0 * width),
                                               work);
  }
};

class BiasGeluGradOp : public OpKernel {
 public:
  explicit BiasGeluGradOp(OpKernelConstruction* c) : OpKernel(c) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& x = ctx->input(1);
    const Tensor& bias = ctx->input(2);
    int64_t rows = 0, width = 0;
    if (!BiasRows(ctx, x, bias, &rows, &width)) return;
    OP_REQUIRES(ctx, dy.shape() == x.shape(), absl::InvalidArgumentError("BertBiasGeluGrad: dy and x shapes differ"));
    Tensor *dx = nullptr, *dbias = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, bias.shape(), &dbias));
    const float* dyp = dy.flat<float>().data();
    const float* xp = x.flat<float>().data();
    const float* bp = bias.flat<float>().data();
    float* dxp = dx->flat<float>().data();
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(rows, 64));
    const int64_t rows_per_chunk = rows == 0 ? 0 : (rows + chunks - 1) / chunks;
    std::vector<float> partial(static_cast<size_t>(chunks * width), 0.0f);
    auto work = [&](Eigen::Index first, Eigen::Index last) {
      ConstRow b(bp, width);
      Eigen::ArrayXf t(width);
      for (Eigen::Index c = first; c < last; ++c) {
        Row acc(partial.data() + c * width, width);
        const int64_t r1 = std::min<int64_t>(rows, (c + 1) * rows_per_chunk);
        for (int64_t r = c * rows_per_chunk; r < r1; ++r) {
          t = ConstRow(xp + r * width, width) + b;
          Row out(dxp + r * width, width);
          // dy may share dx's buffer (forwarded input): read it fully before writing.
          out = ConstRow(dyp + r * width, width) *
                ((t * kInvSqrt2).erf() * 0.5f + 0.5f + t * kInvSqrt2Pi * (t.square() * -0.5f).exp());
          acc += out;
        }
      }
    };
    ctx->eigen_device<CPUDevice>().parallelFor(
        chunks, Eigen::TensorOpCost(8.0 * width * rows_per_chunk, 4.0 * width * rows_per_chunk,
                                    40.0 * width * rows_per_chunk),
        work);
    float* db = dbias->flat<float>().data();
    std::fill(db, db + width, 0.0f);
    for (int64_t c = 0; c < chunks; ++c) {
      for (int64_t j = 0; j < width; ++j) db[j] += partial[c * width + j];
    }
  }
};

REGISTER_KERNEL_BUILDER(Name("BertBiasGelu").Device(DEVICE_CPU), BiasGeluOp);
REGISTER_KERNEL_BUILDER(Name("BertBiasGeluGrad").Device(DEVICE_CPU), BiasGeluGradOp);

// ------------------------------------------------------------------------------------------------
// Dropout
// ------------------------------------------------------------------------------------------------
// The next 8 outputs of `gen` (Philox4x32-10 at counters c, c+1, ..., c+7) in AVX2 lanes: lane d of
// c[j] = word j of output d, the same bits as 8 calls of gen() (tested).
inline __m256i MulHi(__m256i a, __m256i m, __m256i* lo) {
  const __m256i even = _mm256_mul_epu32(a, m);                          // lanes 0, 2, 4, 6 (64-bit)
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);    // lanes 1, 3, 5, 7
  *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  return _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

inline void Philox8(const tensorflow::random::PhiloxRandom& gen, __m256i c[4]) {
  const auto& counter = gen.counter();
  if (counter[0] <= 0xFFFFFFFFu - 7) {  // no carry out of the low word within these 8
    c[0] = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(counter[0])), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int j = 1; j < 4; ++j) c[j] = _mm256_set1_epi32(static_cast<int>(counter[j]));
  } else {
    alignas(32) uint32_t words[4][8];
    tensorflow::random::PhiloxRandom next = gen;
    for (int d = 0; d < 8; ++d) {
      for (int j = 0; j < 4; ++j) words[j][d] = next.counter()[j];
      next.Skip(1);
    }
    for (int j = 0; j < 4; ++j) c[j] = _mm256_load_si256(reinterpret_cast<const __m256i*>(words[j]));
  }
  uint32_t k0 = gen.key()[0], k1 = gen.key()[1];
  const __m256i ma = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i mb = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  for (int round = 0; round < 10; ++round) {
    __m256i lo0, lo1;
    const __m256i hi0 = MulHi(c[0], ma, &lo0);
    const __m256i hi1 = MulHi(c[2], mb, &lo1);
    c[0] = _mm256_xor_si256(_mm256_xor_si256(hi1, c[1]), _mm256_set1_epi32(static_cast<int>(k0)));
    c[1] = lo1;
    c[2] = _mm256_xor_si256(_mm256_xor_si256(hi0, c[3]), _mm256_set1_epi32(static_cast<int>(k1)));
    c[3] = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

// Dropout of one tile of 64 elements from the next 8 draws of `gen`: element 16 j + 8 h + d takes
// half h (low, high) of word j of draw d. y = x * scale where kept, else 0; mask = 1 where kept.
inline void DropoutTile(const tensorflow::random::PhiloxRandom& gen, const float* x, float* y, uint8_t* mask,
                        int threshold, float scale) {
  __m256i c[4];
  Philox8(gen, c);
  const __m256i low16 = _mm256_set1_epi32(0xFFFF);
  const __m256i below = _mm256_set1_epi32(threshold - 1);
  const __m256 scale8 = _mm256_set1_ps(scale);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i one = _mm256_set1_epi8(1);
  __m256i keep[8];
  for (int j = 0; j < 4; ++j) {
    for (int h = 0; h < 2; ++h) {
      const int e = 2 * j + h;
      const __m256i draws = h ? _mm256_srli_epi32(c[j], 16) : _mm256_and_si256(c[j], low16);
      keep[e] = _mm256_cmpgt_epi32(draws, below);  // draw >= threshold (both < 2^16: signed is fine)
      const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + 8 * e), scale8);
      _mm256_storeu_ps(y + 8 * e, _mm256_and_ps(v, _mm256_castsi256_ps(keep[e])));
    }
  }
  for (int q = 0; q < 2; ++q) {  // 4 x 8 int32 masks -> 32 bytes, in element order
    const __m256i w01 = _mm256_packs_epi32(keep[4 * q], keep[4 * q + 1]);
    const __m256i w23 = _mm256_packs_epi32(keep[4 * q + 2], keep[4 * q + 3]);
    const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(w01, w23), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(mask + 32 * q), _mm256_and_si256(bytes, one));
  }
}

REGISTER_OP("BertDropout")
    .Input("x: float")
    .Input("seed: int64")
    .Attr("threshold: int")
    .Output("y: float")
    .Output("mask: uint8")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(0));
      return absl::OkStatus();
    });

REGISTER_OP("BertDropoutGrad")
    .Input("dy: float")
    .Input("mask: uint8")
    .Attr("threshold: int")
    .Output("dx: float")
    .SetShapeFn([](InferenceContext* c) { return SameAsInput(c, 0); });

float KeptScale(int threshold) { return 65536.0f / static_cast<float>(65536 - threshold); }

class DropoutOp : public OpKernel {
 public:
  explicit DropoutOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("threshold", &threshold_));
    OP_REQUIRES(c, threshold_ > 0 && threshold_ < 65536,
                absl::InvalidArgumentError("BertDropout: threshold must be in [1, 65535]"));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& seed = ctx->input(1);
    OP_REQUIRES(ctx, seed.NumElements() == 2,
                absl::InvalidArgumentError("BertDropout: seed must have 2 elements"));
    Tensor* y = nullptr;
    Tensor* mask = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, x.shape(), &mask));
    const auto s = seed.flat<int64_t>();
    const uint64_t key = static_cast<uint64_t>(s(0));
    const uint64_t stream = static_cast<uint64_t>(s(1));
    const float* __restrict in = x.flat<float>().data();
    float* __restrict out = y->flat<float>().data();
    uint8_t* __restrict keep = mask->flat<uint8_t>().data();
    const int64_t n = x.NumElements();
    const float scale = KeptScale(threshold_);
    // Tile t of 64 elements uses Philox draws 8t .. 8t + 7 (DropoutTile), so the result depends on the
    // seed only, not on how the work is split between threads.
    constexpr int64_t kTile = 64;
    const int64_t tiles = (n + kTile - 1) / kTile;
    auto work = [&](Eigen::Index first, Eigen::Index last) {
      tensorflow::random::PhiloxRandom gen(key, stream);
      gen.Skip(static_cast<uint64_t>(first) * (kTile / 8));
      alignas(32) float xt[kTile], yt[kTile];
      alignas(32) uint8_t mt[kTile];
      for (Eigen::Index t = first; t < last; ++t, gen.Skip(kTile / 8)) {
        const int64_t base = t * kTile;
        const int64_t count = std::min<int64_t>(kTile, n - base);
        if (count == kTile) {
          DropoutTile(gen, in + base, out + base, keep + base, threshold_, scale);
        } else {  // the last, partial tile: through a buffer
          std::fill(xt, xt + kTile, 0.0f);
          std::copy(in + base, in + base + count, xt);
          DropoutTile(gen, xt, yt, mt, threshold_, scale);
          std::copy(yt, yt + count, out + base);
          std::copy(mt, mt + count, keep + base);
        }
      }
    };
    ctx->eigen_device<CPUDevice>().parallelFor(tiles, Eigen::TensorOpCost(4 * kTile, 5 * kTile, 10 * kTile), work);
  }

 private:
  int threshold_;
};

class DropoutGradOp : public OpKernel {
 public:
  explicit DropoutGradOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("threshold", &threshold_));
    OP_REQUIRES(c, threshold_ > 0 && threshold_ < 65536,
                absl::InvalidArgumentError("BertDropoutGrad: threshold must be in [1, 65535]"));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& mask = ctx->input(1);
    OP_REQUIRES(ctx, dy.shape() == mask.shape(),
                absl::InvalidArgumentError("BertDropoutGrad: dy and mask shapes differ"));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, dy.shape(), &dx));
    // A select, not dy * mask: a non-finite dy at a dropped element gives 0, as TF's dropout.
    auto DY = dy.flat<float>();
    dx->flat<float>().device(ctx->eigen_device<CPUDevice>()) =
        (mask.flat<uint8_t>() != static_cast<uint8_t>(0)).select(DY * KeptScale(threshold_), DY.constant(0.0f));
  }

 private:
  int threshold_;
};

REGISTER_KERNEL_BUILDER(Name("BertDropout").Device(DEVICE_CPU).HostMemory("seed"), DropoutOp);
REGISTER_KERNEL_BUILDER(Name("BertDropoutGrad").Device(DEVICE_CPU), DropoutGradOp);

// ------------------------------------------------------------------------------------------------
// LayerNorm over the last axis
// ------------------------------------------------------------------------------------------------
REGISTER_OP("BertLayerNorm")
    .Input("x: float")
    .Input("gamma: float")
    .Input("beta: float")
    .Attr("epsilon: float")
    .Output("y: float")
    .Output("mean: float")
    .Output("rstd: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x = c->input(0);
      ShapeHandle rows;
      c->set_output(0, x);
      if (c->RankKnown(x)) {
        TF_RETURN_IF_ERROR(c->Subshape(x, 0, -1, &rows));
      } else {
        rows = c->UnknownShape();
      }
      c->set_output(1, rows);
      c->set_output(2, rows);
      return absl::OkStatus();
    });

REGISTER_OP("BertLayerNormGrad")
    .Input("dy: float")
    .Input("x: float")
    .Input("gamma: float")
    .Input("mean: float")
    .Input("rstd: float")
    .Output("dx: float")
    .Output("dgamma: float")
    .Output("dbeta: float")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(2));
      c->set_output(2, c->input(2));
      return absl::OkStatus();
    });

// Rows and width of x, checked against gamma.
void RowsAndWidth(OpKernelContext* ctx, const Tensor& x, const Tensor& gamma, int64_t* rows, int64_t* width) {
  OP_REQUIRES(ctx, x.dims() >= 1, absl::InvalidArgumentError("LayerNorm: x must have rank >= 1"));
  *width = x.dim_size(x.dims() - 1);
  OP_REQUIRES(ctx, gamma.NumElements() == *width,
              absl::InvalidArgumentError("LayerNorm: gamma/beta size differs from the last axis of x"));
  *rows = *width == 0 ? 0 : x.NumElements() / *width;
}

TensorShape RowShape(const Tensor& x) {
  TensorShape s = x.shape();
  s.RemoveLastDims(1);
  return s;
}

class LayerNormOp : public OpKernel {
 public:
  explicit LayerNormOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& gamma = ctx->input(1);
    const Tensor& beta = ctx->input(2);
    int64_t rows = 0, width = 0;
    RowsAndWidth(ctx, x, gamma, &rows, &width);
    if (!ctx->status().ok()) return;
    OP_REQUIRES(ctx, beta.NumElements() == width,
                absl::InvalidArgumentError("LayerNorm: beta size differs from the last axis of x"));
    Tensor *y = nullptr, *mean = nullptr, *rstd = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, RowShape(x), &mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, RowShape(x), &rstd));
    const float* in = x.flat<float>().data();
    const float* g = gamma.flat<float>().data();
    const float* b = beta.flat<float>().data();
    float* out = y->flat<float>().data();
    float* mu = mean->flat<float>().data();
    float* rs = rstd->flat<float>().data();
    const float eps = epsilon_;
    const float inv_w = 1.0f / static_cast<float>(width);
    auto work = [&](Eigen::Index first, Eigen::Index last) {
      for (Eigen::Index r = first; r < last; ++r) {
        const float* xr = in + r * width;
        float* yr = out + r * width;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < width; ++j) sum += xr[j];
        const float m = sum * inv_w;
        float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
        for (int64_t j = 0; j < width; ++j) sq += (xr[j] - m) * (xr[j] - m);
        const float inv = 1.0f / std::sqrt(sq * inv_w + eps);
#pragma omp simd
        for (int64_t j = 0; j < width; ++j) yr[j] = (xr[j] - m) * inv * g[j] + b[j];
        mu[r] = m;
        rs[r] = inv;
      }
    };
    ctx->eigen_device<CPUDevice>().parallelFor(
        rows, Eigen::TensorOpCost(4.0 * width, 4.0 * width + 8, 8.0 * width), work);
  }

 private:
  float epsilon_;
};

class LayerNormGradOp : public OpKernel {
 public:
  explicit LayerNormGradOp(OpKernelConstruction* c) : OpKernel(c) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& x = ctx->input(1);
    const Tensor& gamma = ctx->input(2);
    const Tensor& mean = ctx->input(3);
    const Tensor& rstd = ctx->input(4);
    int64_t rows = 0, width = 0;
    RowsAndWidth(ctx, x, gamma, &rows, &width);
    if (!ctx->status().ok()) return;
    OP_REQUIRES(ctx, dy.shape() == x.shape() && mean.NumElements() == rows && rstd.NumElements() == rows,
                absl::InvalidArgumentError("LayerNormGrad: dy, x, mean, rstd shapes disagree"));
    Tensor *dx = nullptr, *dgamma = nullptr, *dbeta = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, gamma.shape(), &dgamma));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, gamma.shape(), &dbeta));
    const float* dyp = dy.flat<float>().data();
    const float* xp = x.flat<float>().data();
    const float* g = gamma.flat<float>().data();
    const float* mu = mean.flat<float>().data();
    const float* rs = rstd.flat<float>().data();
    float* dxp = dx->flat<float>().data();
    const float inv_w = width == 0 ? 0.0f : 1.0f / static_cast<float>(width);

    // dgamma and dbeta sum over rows: each of a fixed number of row chunks sums into its own
    // buffer, then the chunks are added in order, so the result does not depend on threading.
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(rows, 64));
    const int64_t rows_per_chunk = rows == 0 ? 0 : (rows + chunks - 1) / chunks;
    std::vector<float> partial(static_cast<size_t>(2 * chunks * width), 0.0f);
    auto work = [&](Eigen::Index first, Eigen::Index last) {
      std::vector<float> xhat(static_cast<size_t>(width));
      for (Eigen::Index c = first; c < last; ++c) {
        float* pg = partial.data() + 2 * c * width;
        float* pb = pg + width;
        const int64_t r0 = c * rows_per_chunk;
        const int64_t r1 = std::min<int64_t>(rows, r0 + rows_per_chunk);
        for (int64_t r = r0; r < r1; ++r) {
          const float* dyr = dyp + r * width;
          const float* xr = xp + r * width;
          float* dxr = dxp + r * width;
          const float m = mu[r], inv = rs[r];
          float sum_g = 0.0f, sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_g, sum_gx)
          for (int64_t j = 0; j < width; ++j) {
            const float xh = (xr[j] - m) * inv;
            const float gj = dyr[j] * g[j];
            xhat[j] = xh;
            sum_g += gj;
            sum_gx += gj * xh;
            pg[j] += dyr[j] * xh;
            pb[j] += dyr[j];
          }
          const float a = sum_g * inv_w, bb = sum_gx * inv_w;
#pragma omp simd
          for (int64_t j = 0; j < width; ++j) dxr[j] = inv * (dyr[j] * g[j] - a - xhat[j] * bb);
        }
      }
    };
    ctx->eigen_device<CPUDevice>().parallelFor(
        chunks, Eigen::TensorOpCost(8.0 * width * rows_per_chunk, 4.0 * width * rows_per_chunk,
                                    16.0 * width * rows_per_chunk),
        work);
    float* dg = dgamma->flat<float>().data();
    float* db = dbeta->flat<float>().data();
    std::fill(dg, dg + width, 0.0f);
    std::fill(db, db + width, 0.0f);
    for (int64_t c = 0; c < chunks; ++c) {
      const float* pg = partial.data() + 2 * c * width;
      for (int64_t j = 0; j < width; ++j) {
        dg[j] += pg[j];
        db[j] += pg[width + j];
      }
    }
  }
};

REGISTER_KERNEL_BUILDER(Name("BertLayerNorm").Device(DEVICE_CPU), LayerNormOp);
REGISTER_KERNEL_BUILDER(Name("BertLayerNormGrad").Device(DEVICE_CPU), LayerNormGradOp);

// ------------------------------------------------------------------------------------------------
// Gradient of dropout(softmax(x)) over the last axis (attention probabilities)
// ------------------------------------------------------------------------------------------------
REGISTER_OP("BertSoftmaxDropoutGrad")
    .Input("dq: float")
    .Input("probs: float")
    .Input("mask: uint8")
    .Attr("threshold: int")
    .Output("dx: float")
    .SetShapeFn([](InferenceContext* c) { return SameAsInput(c, 1); });

class SoftmaxDropoutGradOp : public OpKernel {
 public:
  explicit SoftmaxDropoutGradOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("threshold", &threshold_));
    OP_REQUIRES(c, threshold_ >= 0 && threshold_ < 65536,
                absl::InvalidArgumentError("BertSoftmaxDropoutGrad: threshold must be in [0, 65535]"));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dq = ctx->input(0);
    const Tensor& probs = ctx->input(1);
    const Tensor& mask = ctx->input(2);
    const bool dropout = threshold_ > 0;
    OP_REQUIRES(ctx, probs.dims() >= 1 && dq.shape() == probs.shape() && (!dropout || mask.shape() == probs.shape()),
                absl::InvalidArgumentError("BertSoftmaxDropoutGrad: dq, probs and mask shapes differ"));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, probs.shape(), &dx));
    const int64_t width = probs.dim_size(probs.dims() - 1);
    const int64_t rows = width == 0 ? 0 : probs.NumElements() / width;
    const float* __restrict g = dq.flat<float>().data();
    const float* __restrict p = probs.flat<float>().data();
    const uint8_t* __restrict m = dropout ? mask.flat<uint8_t>().data() : nullptr;
    float* __restrict out = dx->flat<float>().data();
    const float scale = dropout ? KeptScale(threshold_) : 1.0f;
    auto work = [&](Eigen::Index first, Eigen::Index last) {
      for (Eigen::Index r = first; r < last; ++r) {
        const int64_t o = r * width;
        float dot = 0.0f;
        if (dropout) {
#pragma omp simd reduction(+ : dot)
          for (int64_t j = 0; j < width; ++j) {
            const float gj = m[o + j] ? g[o + j] * scale : 0.0f;
            out[o + j] = gj;
            dot += gj * p[o + j];
          }
        } else {
#pragma omp simd reduction(+ : dot)
          for (int64_t j = 0; j < width; ++j) {
            out[o + j] = g[o + j];
            dot += g[o + j] * p[o + j];
          }
        }
#pragma omp simd
        for (int64_t j = 0; j < width; ++j) out[o + j] = p[o + j] * (out[o + j] - dot);
      }
    };
    ctx->eigen_device<CPUDevice>().parallelFor(rows, Eigen::TensorOpCost(9.0 * width, 4.0 * width, 6.0 * width),
                                               work);
  }

 private:
  int threshold_;
};

REGISTER_KERNEL_BUILDER(Name("BertSoftmaxDropoutGrad").Device(DEVICE_CPU), SoftmaxDropoutGradOp);

// ------------------------------------------------------------------------------------------------
// Softmax cross-entropy with integer labels, rows of a [N, V] matrix (the masked-LM's 30k classes)
// ------------------------------------------------------------------------------------------------
REGISTER_OP("BertSparseCrossEntropy")
    .Input("logits: float")
    .Input("labels: int32")
    .Output("nll: float")
    .Output("log_sum_exp: float")
    .Output("argmax: int32")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle logits, rows;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &logits));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &rows));
      c->set_output(0, rows);
      c->set_output(1, rows);
      c->set_output(2, rows);
      return absl::OkStatus();
    });

REGISTER_OP("BertSparseCrossEntropyGrad")
    .Input("dnll: float")
    .Input("logits: float")
    .Input("labels: int32")
    .Input("log_sum_exp: float")
    .Output("dlogits: float")
    .SetShapeFn([](InferenceContext* c) { return SameAsInput(c, 1); });

constexpr int64_t kChunk = 1024;

// Checks shapes and labels; returns false (with the error set) when they are wrong.
bool CheckRowsAndLabels(OpKernelContext* ctx, const Tensor& logits, const Tensor& labels) {
  if (logits.dims() != 2 || labels.dims() != 1 || labels.dim_size(0) != logits.dim_size(0)) {
    ctx->CtxFailure(absl::InvalidArgumentError("BertSparseCrossEntropy: logits must be [N, V] and labels [N]"));
    return false;
  }
  const int64_t classes = logits.dim_size(1);
  const auto lab = labels.flat<int32_t>();
  for (int64_t r = 0; r < lab.size(); ++r) {
    if (lab(r) < 0 || lab(r) >= classes) {
      ctx->CtxFailure(absl::InvalidArgumentError(absl::StrCat(
          "BertSparseCrossEntropy: label ", lab(r), " at row ", r, " is outside [0, ", classes, ")")));
      return false;
    }
  }
  return true;
}

class SparseCrossEntropyOp : public OpKernel {
 public:
  explicit SparseCrossEntropyOp(OpKernelConstruction* c) : OpKernel(c) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& logits = ctx->input(0);
    const Tensor& labels = ctx->input(1);
    if (!CheckRowsAndLabels(ctx, logits, labels)) return;
    const int64_t rows = logits.dim_size(0), classes = logits.dim_size(1);
    OP_REQUIRES(ctx, classes > 0, absl::InvalidArgumentError("BertSparseCrossEntropy: no classes"));
    Tensor *nll = nullptr, *lse = nullptr, *argmax = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({rows}), &nll));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({rows}), &lse));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({rows}), &argmax));
    int32_t* out_argmax = argmax->flat<int32_t>().data();
    const float* x = logits.flat<float>().data();
    const int32_t* lab = labels.flat<int32_t>().data();
    float* out = nll->flat<float>().data();
    float* out_lse = lse->flat<float>().data();
    auto work = [&](Eigen::Index first, Eigen::Index last) {
      for (Eigen::Index r = first; r < last; ++r) {
        // One read of the row: max (and its first index, the prediction) and sum of exp per
        // L1-sized chunk, the sum rescaled when the max grows.
        const float* row = x + r * classes;
        float m = -std::numeric_limits<float>::infinity(), sum = 0.0f;
        int64_t best = 0;
        for (int64_t c = 0; c < classes; c += kChunk) {
          ConstRow chunk(row + c, std::min<int64_t>(kChunk, classes - c));
          const float cm = chunk.maxCoeff();  // vectorized; the index only when the max grows (rarely)
          if (cm == -std::numeric_limits<float>::infinity()) continue;  // adds nothing (and no NaN)
          if (cm > m) {
            sum *= std::exp(m - cm);
            m = cm;
            const float* hit = std::find(chunk.data(), chunk.data() + chunk.size(), cm);
            best = c + (hit == chunk.data() + chunk.size() ? 0 : hit - chunk.data());
          }
          sum += (chunk - m).exp().sum();
        }
        const float l = m + std::log(sum);
        out_lse[r] = l;
        out[r] = l - row[lab[r]];
        out_argmax[r] = static_cast<int32_t>(best);
      }
    };
    ctx->eigen_device<CPUDevice>().parallelFor(rows, Eigen::TensorOpCost(8.0 * classes, 8, 12.0 * classes), work);
  }
};

class SparseCrossEntropyGradOp : public OpKernel {
 public:
  explicit SparseCrossEntropyGradOp(OpKernelConstruction* c) : OpKernel(c) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dnll = ctx->input(0);
    const Tensor& logits = ctx->input(1);
    const Tensor& labels = ctx->input(2);
    const Tensor& lse = ctx->input(3);
    if (!CheckRowsAndLabels(ctx, logits, labels)) return;
    const int64_t rows = logits.dim_size(0), classes = logits.dim_size(1);
    OP_REQUIRES(ctx, dnll.NumElements() == rows && lse.NumElements() == rows,
                absl::InvalidArgumentError("BertSparseCrossEntropyGrad: dnll and log_sum_exp must be [N]"));
    Tensor* dlogits = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, logits.shape(), &dlogits));
    const float* x = logits.flat<float>().data();
    const float* dy = dnll.flat<float>().data();
    const float* l = lse.flat<float>().data();
    const int32_t* lab = labels.flat<int32_t>().data();
    float* dx = dlogits->flat<float>().data();
    auto work = [&](Eigen::Index first, Eigen::Index last) {
      for (Eigen::Index r = first; r < last; ++r) {
        ConstRow row(x + r * classes, classes);
        Row out(dx + r * classes, classes);
        out = (row - l[r]).exp() * dy[r];
        out(lab[r]) -= dy[r];
      }
    };
    ctx->eigen_device<CPUDevice>().parallelFor(rows, Eigen::TensorOpCost(4.0 * classes, 4.0 * classes, 10.0 * classes),
                                               work);
  }
};

REGISTER_KERNEL_BUILDER(Name("BertSparseCrossEntropy").Device(DEVICE_CPU), SparseCrossEntropyOp);
REGISTER_KERNEL_BUILDER(Name("BertSparseCrossEntropyGrad").Device(DEVICE_CPU), SparseCrossEntropyGradOp);


// ------------------------------------------------------------------------------------------------
// AdamW update
// ------------------------------------------------------------------------------------------------
REGISTER_OP("BertApplyAdamW")
    .Input("var: resource")
    .Input("m: resource")
    .Input("v: resource")
    .Input("grad: float")
    .Input("grad_scale: float")
    .Input("lr: float")
    .Input("decay: float")
    .Attr("beta1: float")
    .Attr("beta2: float")
    .Attr("epsilon: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle unused;
      for (int i = 4; i < 7; ++i) TF_RETURN_IF_ERROR(c->WithRank(c->input(i), 0, &unused));
      return absl::OkStatus();
    });

// Per element, in this order and in float32 as the TF ops it replaces (Mul of the clipping factor,
// AssignSub of decay * w, ResourceApplyAdam with beta1_power = beta2_power = 0), equal to rounding
// (the compiler may fuse a multiply and an add):
//   g = grad * grad_scale;  w -= decay * w;  m += (g - m)(1 - beta1);  v += (g^2 - v)(1 - beta2);
//   w -= m lr / (sqrt(v) + epsilon)
class ApplyAdamWOp : public OpKernel {
 public:
  explicit ApplyAdamWOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("beta1", &beta1_));
    OP_REQUIRES_OK(c, c->GetAttr("beta2", &beta2_));
    OP_REQUIRES_OK(c, c->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* ctx) override {
    auto locks = tensorflow::MaybeLockVariableInputMutexesInOrder<CPUDevice, float>(ctx, true, false, {0, 1, 2});
    Tensor var, m, v;
    OP_REQUIRES_OK(ctx, tensorflow::GetInputTensorFromVariable<CPUDevice, float>(ctx, 0, true, false, &var));
    OP_REQUIRES_OK(ctx, tensorflow::GetInputTensorFromVariable<CPUDevice, float>(ctx, 1, true, false, &m));
    OP_REQUIRES_OK(ctx, tensorflow::GetInputTensorFromVariable<CPUDevice, float>(ctx, 2, true, false, &v));
    OP_REQUIRES(ctx, var.IsInitialized() && m.IsInitialized() && v.IsInitialized(),
                absl::FailedPreconditionError("BertApplyAdamW: uninitialized variable"));
    const Tensor& grad = ctx->input(3);
    OP_REQUIRES(ctx, var.dtype() == tensorflow::DT_FLOAT && m.dtype() == tensorflow::DT_FLOAT &&
                         v.dtype() == tensorflow::DT_FLOAT,
                absl::InvalidArgumentError("BertApplyAdamW: var, m and v must be float32"));
    for (int i = 4; i < 7; ++i) {
      OP_REQUIRES(ctx, tensorflow::TensorShapeUtils::IsScalar(ctx->input(i).shape()),
                  absl::InvalidArgumentError("BertApplyAdamW: grad_scale, lr and decay must be scalars"));
    }
    OP_REQUIRES(ctx, var.shape() == m.shape() && var.shape() == v.shape() && var.shape() == grad.shape(),
                absl::InvalidArgumentError("BertApplyAdamW: var, m, v and grad shapes differ: " +
                                           var.shape().DebugString() + " " + m.shape().DebugString() + " " +
                                           v.shape().DebugString() + " " + grad.shape().DebugString()));
    const float scale = ctx->input(4).scalar<float>()();
    const float lr = ctx->input(5).scalar<float>()();
    const float decay = ctx->input(6).scalar<float>()();
    const float c1 = 1.0f - beta1_;
    const float c2 = 1.0f - beta2_;
    const float eps = epsilon_;
    float* __restrict w = var.flat<float>().data();
    float* __restrict mm = m.flat<float>().data();
    float* __restrict vv = v.flat<float>().data();
    const float* __restrict g = grad.flat<float>().data();
    auto work = [&](Eigen::Index first, Eigen::Index last) {
#pragma omp simd
      for (Eigen::Index i = first; i < last; ++i) {
        const float gi = g[i] * scale;
        const float wi = w[i] - decay * w[i];
        const float mi = mm[i] + (gi - mm[i]) * c1;
        const float vi = vv[i] + (gi * gi - vv[i]) * c2;
        mm[i] = mi;
        vv[i] = vi;
        w[i] = wi - (mi * lr) / (std::sqrt(vi) + eps);
      }
    };
    ctx->eigen_device<CPUDevice>().parallelFor(var.NumElements(), Eigen::TensorOpCost(16, 12, 12), work);
  }

 private:
  float beta1_, beta2_, epsilon_;
};

REGISTER_KERNEL_BUILDER(Name("BertApplyAdamW").Device(DEVICE_CPU), ApplyAdamWOp);

}  // namespace bert_kernels
