// Batched forward and backward passes with Eigen (see network.h).
//
// Per layer l with input A (in x n, column-major) the forward pass is
//   Z = W * A + b,  A' = f(Z)  (f = activation; none on the output layer)
// and the backward pass, given dZ (out x n),
//   dW = dZ * A^T,  db = rowsum(dZ),  dA = W^T * dZ,  dZ_prev = dA .* f'(Z_prev).
// The first layer's dA is never formed: nothing needs the input gradient,
// and it would cost a third of the work of the widest product.
//
// A cnn's convolution is the same product over im2col patches: P holds one
// column per output position (K*K*C_in rows, channel fastest, then kernel
// column, then kernel row), so Z = W * P + b is the stage's output with the
// channel fastest (HWC per sample; the input itself is CHW), and
//   dW = dZ * P^T,  db = rowsum(dZ),  dP = W^T * dZ,  dA = col2im(dP).
// P is built for up to kConvChunk samples at a time and rebuilt in the
// backward pass rather than kept: it is K*K times the size of the input.
//
// The products call Eigen's GEMM kernel directly instead of going through
// `z.noalias() = w * a`: the expression form allocates its packing buffers
// (blockA/blockB, 130-400 KB for 784-128-10 at batch 32, over Eigen's stack
// allocation limit) on the heap for every product, twice per step. Here they
// live in the Workspace, so a training step does not allocate at all.
#include "fedsgd/network.h"

#include <Eigen/Core>
#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdint>

#include "layer_kernels.h"

// general_matrix_matrix_product and level3_blocking are Eigen internals;
// their signatures are those of the 3.4 series. Check them on an upgrade.
static_assert(EIGEN_VERSION_AT_LEAST(3, 4, 0) && !EIGEN_VERSION_AT_LEAST(3, 4, 90),
              "network.cpp calls Eigen 3.4's internal GEMM; check its signature");

namespace fedsgd {
namespace {

using Eigen::Index;
using kernels::Activate;
using kernels::Col2ImAdd;
using kernels::Im2Col;
using kernels::MapStrides;
using kernels::MaxPool;
using kernels::MultiplyDerivative;
using kernels::OutputLoss;
using kernels::RowSums;
using kernels::StridesOf;
using Matrix = Eigen::Map<Eigen::MatrixXf>;
using ConstMatrix = Eigen::Map<const Eigen::MatrixXf>;
using ConstVector = Eigen::Map<const Eigen::VectorXf>;
using Vector = Eigen::Map<Eigen::VectorXf>;

bool IsHidden(const Architecture& arch, std::size_t layer, std::size_t layers) {
  return (arch.kind == ModelKind::kMlp || arch.kind == ModelKind::kCnn) && layer + 1 < layers;
}

// Samples whose im2col patches are built at once.
constexpr int kConvChunk = 32;

// The three products of layer l, each with its own cache-block sizes.
enum Product : std::size_t { kForward = 0, kWeightGradient = 1, kInputGradient = 2 };
constexpr std::size_t kProducts = 3;

// Eigen's GEMM reads its packed blocks with aligned loads.
constexpr std::size_t kAlignFloats = EIGEN_DEFAULT_ALIGN_BYTES / sizeof(float);

float* Aligned(std::vector<float>& buffer) {
  const auto p = reinterpret_cast<std::uintptr_t>(buffer.data());
  const std::uintptr_t mask = EIGEN_DEFAULT_ALIGN_BYTES - 1;
  return reinterpret_cast<float*>((p + mask) & ~mask);
}

// Eigen's blocking interface over packing buffers owned by a Workspace.
class BorrowedBlocking : public Eigen::internal::level3_blocking<float, float> {
 public:
  BorrowedBlocking(float* block_a, float* block_b, const std::ptrdiff_t* kc_mc_nc) {
    m_blockA = block_a;
    m_blockB = block_b;
    m_kc = kc_mc_nc[0];
    m_mc = kc_mc_nc[1];
    m_nc = kc_mc_nc[2];
  }
};

}  // namespace

Workspace::Workspace(const Architecture& arch, int max_batch)
    : max_batch_(std::max(1, max_batch)), layout_(arch.Layout()) {
  const std::size_t layers = layout_.size();
  const std::size_t b = static_cast<std::size_t>(max_batch_);
  activations_.resize(layers);
  deltas_.resize(layers);
  inputs_.resize(layers);
  masks_.resize(layers);
  if (arch.kind == ModelKind::kCnn) {
    stage_shapes_ = arch.StageShapes();
    conv_chunk_ = std::min(max_batch_, kConvChunk);
    const std::size_t stages = arch.stages.size();
    stage_outputs_.resize(stages);
    stage_deltas_.resize(stages);
    argmax_.resize(stages);
    std::size_t patch_size = 0;
    for (std::size_t s = 0; s < stages; ++s) {
      const ImageShape& out = stage_shapes_[s + 1];
      const std::size_t size = static_cast<std::size_t>(out.size()) * b;
      stage_outputs_[s].assign(size, 0.0f);
      stage_deltas_[s].assign(size, 0.0f);
      if (arch.stages[s].type == FeatureStage::Type::kMaxPool) {
        argmax_[s].assign(size, 0);
        continue;
      }
      const Index positions = Index{out.height} * out.width * conv_chunk_;
      patch_size = std::max(patch_size, static_cast<std::size_t>(positions) *
                                            static_cast<std::size_t>(layout_[conv_layers_].in));
      ++conv_layers_;
    }
    patches_.assign(patch_size, 0.0f);
    patch_deltas_.assign(patch_size, 0.0f);
  }
  for (std::size_t l = conv_layers_; l < layers; ++l) {
    activations_[l].assign(static_cast<std::size_t>(layout_[l].out) * b, 0.0f);
    deltas_[l].assign(static_cast<std::size_t>(layout_[l].out) * b, 0.0f);
    if (IsHidden(arch, l, layers) && arch.dropout > 0) {
      masks_[l].assign(static_cast<std::size_t>(layout_[l].out) * b, 0.0f);
      inputs_[l].assign(static_cast<std::size_t>(layout_[l].out) * b, 0.0f);
    }
  }
  // Block sizes as Eigen would choose them for each product at full batch
  // (a smaller batch only uses part of a block). Products: forward
  // out x in * in x b, weight gradient out x b * b x in, input gradient
  // in x out * out x b (b: the batch for a dense layer, a chunk's output
  // positions for a convolution).
  gemm_blocking_.resize(layers * kProducts * 3);
  Index size_a = 0, size_b = 0;
  std::size_t stage = 0;  // a cnn: the stage of convolution l
  for (std::size_t l = 0; l < layers; ++l) {
    Index batch = max_batch_;
    if (l < conv_layers_) {
      while (arch.stages[stage].type != FeatureStage::Type::kConv) ++stage;
      const ImageShape& out_shape = stage_shapes_[++stage];
      batch = Index{out_shape.height} * out_shape.width * conv_chunk_;
    }
    const Index in = layout_[l].in, out = layout_[l].out;
    const Index dims[kProducts][3] = {{in, out, batch}, {batch, out, in}, {out, in, batch}};
    for (std::size_t p = 0; p < kProducts; ++p) {
      Index kc = dims[p][0], mc = dims[p][1], nc = dims[p][2];
      Eigen::internal::computeProductBlockingSizes<float, float, 1>(kc, mc, nc, Index{1});
      std::ptrdiff_t* blocking = &gemm_blocking_[(l * kProducts + p) * 3];
      blocking[0] = kc;
      blocking[1] = mc;
      blocking[2] = nc;
      size_a = std::max(size_a, kc * mc);
      size_b = std::max(size_b, kc * nc);
    }
  }
  gemm_lhs_.assign(static_cast<std::size_t>(size_a) + kAlignFloats, 0.0f);
  gemm_rhs_.assign(static_cast<std::size_t>(size_b) + kAlignFloats, 0.0f);
}

struct NetworkKernels {
  // c += a * b, c column-major m x n (leading dimension m), a m x k and b
  // k x n. An operand with RowMajor order is the transpose of a column-major
  // matrix (leading dimension lda / ldb), read in place.
  template <int kLhsOrder, int kRhsOrder>
  static void GemmAdd(Workspace& ws, std::size_t layer, Product product, Index m, Index n, Index k,
                      const float* a, Index lda, const float* b, Index ldb, float* c) {
    using Gemm =
        Eigen::internal::general_matrix_matrix_product<Index, float, kLhsOrder, false, float,
                                                       kRhsOrder, false, Eigen::ColMajor, 1>;
    BorrowedBlocking blocking(Aligned(ws.gemm_lhs_), Aligned(ws.gemm_rhs_),
                              &ws.gemm_blocking_[(layer * kProducts + product) * 3]);
    Gemm::run(m, n, k, a, lda, b, ldb, c, 1, m, 1.0f, blocking, nullptr);
  }

  // Inverted dropout: each unit is kept with probability keep and scaled by
  // 1/keep. Two units per 64-bit draw, each half compared with keep * 2^32
  // (bernoulli_distribution per unit costs a quarter of a step).
  static void DropoutMask(float keep, std::mt19937_64& rng, float* mask, std::size_t size) {
    const auto threshold = static_cast<std::uint64_t>(std::ldexp(static_cast<double>(keep), 32));
    const float scale = 1.0f / keep;
    std::size_t i = 0;
    for (; i + 1 < size; i += 2) {
      const std::uint64_t bits = rng();
      mask[i] = (bits & 0xffffffffu) < threshold ? scale : 0.0f;
      mask[i + 1] = (bits >> 32) < threshold ? scale : 0.0f;
    }
    if (i < size) mask[i] = (rng() & 0xffffffffu) < threshold ? scale : 0.0f;
  }

  // A cnn's stages over n samples of x, into stage_outputs_.
  static void ForwardStages(const Architecture& arch, const float* params, const float* x, int n,
                            Workspace& ws) {
    const float* a = x;
    std::size_t layer = 0;
    for (std::size_t s = 0; s < arch.stages.size(); ++s) {
      const FeatureStage& f = arch.stages[s];
      const ImageShape& is = ws.stage_shapes_[s];
      const ImageShape& os = ws.stage_shapes_[s + 1];
      const MapStrides st = StridesOf(is, s == 0);
      float* out = ws.stage_outputs_[s].data();
      if (f.type == FeatureStage::Type::kMaxPool) {
        MaxPool(a, is, st, f.kernel, os, n, out, ws.argmax_[s].data());
        a = out;
        continue;
      }
      const LayerLayout& L = ws.layout_[layer];
      const Index positions = Index{os.height} * os.width;
      Matrix z(out, L.out, positions * n);
      z.colwise() = ConstVector(params + L.bias_offset, L.out);
      for (int j = 0; j < n; j += ws.conv_chunk_) {
        const int count = std::min(ws.conv_chunk_, n - j);
        Im2Col(a, is, st, f, os, j, count, ws.patches_.data());
        GemmAdd<Eigen::ColMajor, Eigen::ColMajor>(
            ws, layer, kForward, L.out, positions * count, L.in, params + L.weight_offset, L.out,
            ws.patches_.data(), L.in, z.data() + L.out * positions * j);
      }
      z = z.cwiseMax(0.0f);
      a = out;
      ++layer;
    }
  }

  // The backward pass through a cnn's stages, from stage_deltas_.back()
  // (the loss gradient w.r.t. the last stage's output): convolution
  // gradients into grad. The input's gradient is not formed.
  static void BackwardStages(const Architecture& arch, const float* params, const float* x, int n,
                             float* grad, Workspace& ws) {
    std::size_t layer = ws.conv_layers_;
    for (std::size_t s = arch.stages.size(); s-- > 0;) {
      const FeatureStage& f = arch.stages[s];
      const ImageShape& is = ws.stage_shapes_[s];
      const ImageShape& os = ws.stage_shapes_[s + 1];
      float* delta = ws.stage_deltas_[s].data();
      float* prev = s > 0 ? ws.stage_deltas_[s - 1].data() : nullptr;
      if (prev) std::fill_n(prev, static_cast<std::size_t>(is.size()) * n, 0.0f);
      if (f.type == FeatureStage::Type::kMaxPool) {
        if (!prev) continue;
        const std::int32_t* arg = ws.argmax_[s].data();
        for (int j = 0; j < n; ++j) {
          float* p = prev + static_cast<std::size_t>(j) * is.size();
          const std::size_t base = static_cast<std::size_t>(j) * os.size();
          for (int i = 0; i < os.size(); ++i) p[arg[base + i]] += delta[base + i];
        }
        continue;
      }
      --layer;
      const LayerLayout& L = ws.layout_[layer];
      const Index positions = Index{os.height} * os.width;
      Matrix d(delta, L.out, positions * n);
      d = (Matrix(ws.stage_outputs_[s].data(), L.out, positions * n).array() > 0.0f)
              .select(d, 0.0f);
      RowSums(d, grad + L.bias_offset);
      Matrix dw(grad + L.weight_offset, L.out, L.in);
      dw.setZero();
      const float* a = s > 0 ? ws.stage_outputs_[s - 1].data() : x;
      const MapStrides st = StridesOf(is, s == 0);
      for (int j = 0; j < n; j += ws.conv_chunk_) {
        const int count = std::min(ws.conv_chunk_, n - j);
        const float* dj = d.data() + L.out * positions * j;
        Im2Col(a, is, st, f, os, j, count, ws.patches_.data());
        GemmAdd<Eigen::ColMajor, Eigen::RowMajor>(ws, layer, kWeightGradient, L.out, L.in,
                                                  positions * count, dj, L.out, ws.patches_.data(),
                                                  L.in, dw.data());
        if (!prev) continue;
        float* dcols = ws.patch_deltas_.data();
        std::fill_n(dcols, static_cast<std::size_t>(L.in * positions * count), 0.0f);
        GemmAdd<Eigen::RowMajor, Eigen::ColMajor>(
            ws, layer, kInputGradient, L.in, positions * count, L.out, params + L.weight_offset,
            L.out, dj, L.out, dcols);
        Col2ImAdd(dcols, is, f, os, j, count, prev);
      }
    }
  }

  // Forward pass over n columns of x; leaves each layer's output in
  // activations_ (the last one: logits / predictions). With a dropout RNG,
  // hidden outputs are also masked (inverted dropout) into inputs_. A cnn's
  // stages run first, their outputs in stage_outputs_.
  static void Forward(const Architecture& arch, const float* params, const float* x, int n,
                      Workspace& ws, std::mt19937_64* dropout_rng) {
    const std::size_t layers = ws.layout_.size();
    const float* a = x;
    if (arch.kind == ModelKind::kCnn) {
      ForwardStages(arch, params, x, n, ws);
      a = ws.stage_outputs_.back().data();
    }
    for (std::size_t l = ws.conv_layers_; l < layers; ++l) {
      const LayerLayout& L = ws.layout_[l];
      ConstMatrix w(params + L.weight_offset, L.out, L.in);
      ConstVector b(params + L.bias_offset, L.out);
      ConstMatrix in(a, L.in, n);
      Matrix z(ws.activations_[l].data(), L.out, n);
      z.colwise() = b;
      GemmAdd<Eigen::ColMajor, Eigen::ColMajor>(ws, l, kForward, L.out, n, L.in, w.data(), L.out,
                                                in.data(), L.in, z.data());
      a = ws.activations_[l].data();
      if (!IsHidden(arch, l, layers)) continue;
      Activate(arch.activation, z);
      if (dropout_rng && arch.dropout > 0) {
        Matrix mask(ws.masks_[l].data(), L.out, n);
        DropoutMask(1.0f - arch.dropout, *dropout_rng, mask.data(),
                    static_cast<std::size_t>(mask.size()));
        Matrix masked(ws.inputs_[l].data(), L.out, n);
        masked = z.cwiseProduct(mask);
        a = ws.inputs_[l].data();
      }
    }
  }

  static float ForwardBackward(const Architecture& arch, const float* params, const float* x,
                               const float* y, int n, float* grad, Workspace& ws,
                               std::mt19937_64* rng, const float* logit_offsets,
                               const float* class_weights, std::size_t frozen) {
    assert(n >= 1 && n <= ws.max_batch_);
    assert(ws.layout_.size() == ws.conv_layers_ + arch.widths.size() - 1);
    const bool dropout = rng != nullptr && arch.dropout > 0;
    std::vector<LayerLayout>& layout = ws.layout_;
    const std::size_t layers = layout.size();
    Forward(arch, params, x, n, ws, dropout ? rng : nullptr);
    const LayerLayout& last = layout.back();
    Matrix out(ws.activations_[layers - 1].data(), last.out, n);
    // The backward pass reads the deltas and the hidden layers' outputs,
    // never the logits themselves: they can be adjusted in place.
    if (logit_offsets && arch.loss() == LossKind::kCrossEntropy) {
      out.colwise() += ConstVector(logit_offsets, last.out);
    }
    const float scale = 1.0f / static_cast<float>(n);
    const double loss =
        OutputLoss(arch, out, y, n, ws.deltas_[layers - 1].data(), scale, nullptr,
                   arch.loss() == LossKind::kCrossEntropy ? class_weights : nullptr) /
        n;

    const std::size_t first = ws.conv_layers_;  // the first dense layer
    const bool cnn = arch.kind == ModelKind::kCnn;
    // Layers are in parameter order and frozen ones are a prefix: once a
    // layer's parameters all lie in it, so do those of every layer before.
    const auto all_frozen = [frozen](const LayerLayout& L) {
      return L.bias_offset + static_cast<std::size_t>(L.out) <= frozen;
    };
    for (std::size_t l = layers; l-- > first;) {
      const LayerLayout& L = layout[l];
      if (all_frozen(L)) break;
      Matrix d(ws.deltas_[l].data(), L.out, n);
      const float* input = l == first ? (cnn ? ws.stage_outputs_.back().data() : x)
                           : dropout  ? ws.inputs_[l - 1].data()
                                      : ws.activations_[l - 1].data();
      ConstMatrix in(input, L.in, n);
      Matrix dw(grad + L.weight_offset, L.out, L.in);
      dw.setZero();
      GemmAdd<Eigen::ColMajor, Eigen::RowMajor>(ws, l, kWeightGradient, L.out, L.in, n, d.data(),
                                                L.out, in.data(), L.in, dw.data());
      RowSums(d, grad + L.bias_offset);
      if (l == first && !cnn) break;
      // Nothing below wants a gradient (for a cnn's first dense layer: its
      // convolutions are all frozen).
      if (all_frozen(layout[l - 1])) break;
      // Into the stages' last output gradient (its own backward pass applies
      // the ReLU), or the previous dense layer's.
      Matrix dprev(l == first ? ws.stage_deltas_.back().data() : ws.deltas_[l - 1].data(), L.in, n);
      dprev.setZero();
      GemmAdd<Eigen::RowMajor, Eigen::ColMajor>(ws, l, kInputGradient, L.in, n, L.out,
                                                params + L.weight_offset, L.out, d.data(), L.out,
                                                dprev.data());
      if (l == first) {
        BackwardStages(arch, params, x, n, grad, ws);
        break;
      }
      if (dropout) dprev.array() *= Matrix(ws.masks_[l - 1].data(), L.in, n).array();
      MultiplyDerivative(arch.activation, dprev, Matrix(ws.activations_[l - 1].data(), L.in, n));
    }
    return static_cast<float>(loss);
  }

  static BatchScore Score(const Architecture& arch, const float* params, const float* x,
                          const float* y, int n, Workspace& ws) {
    assert(n >= 1 && n <= ws.max_batch_);
    assert(ws.layout_.size() == ws.conv_layers_ + arch.widths.size() - 1);
    std::vector<LayerLayout>& layout = ws.layout_;
    Forward(arch, params, x, n, ws, nullptr);
    const LayerLayout& last = layout.back();
    Matrix out(ws.activations_[layout.size() - 1].data(), last.out, n);
    BatchScore s;
    s.loss_sum = OutputLoss(arch, out, y, n, nullptr, 0.0f, &s.correct);
    return s;
  }

  static void Predict(const Architecture& arch, const float* params, const float* x, int n,
                      float* result, Workspace& ws) {
    assert(n >= 1 && n <= ws.max_batch_);
    std::vector<LayerLayout>& layout = ws.layout_;
    Forward(arch, params, x, n, ws, nullptr);
    const LayerLayout& last = layout.back();
    const ConstMatrix z(ws.activations_[layout.size() - 1].data(), last.out, n);
    Matrix out(result, last.out, n);
    switch (arch.loss()) {
      case LossKind::kCrossEntropy:
        for (int j = 0; j < n; ++j) {
          out.col(j) = (z.col(j).array() - z.col(j).maxCoeff()).exp();
          out.col(j) /= out.col(j).sum();
        }
        break;
      case LossKind::kBinaryCrossEntropy:
        out = (1.0f + (-z.array()).exp()).inverse().matrix();
        break;
      case LossKind::kMeanSquaredError:
        out = z;
        break;
    }
  }
};

float ForwardBackward(const Architecture& arch, const float* params, const float* x, const float* y,
                      int n, float* grad, Workspace& ws, std::mt19937_64* dropout_rng,
                      const float* logit_offsets, const float* class_weights, std::size_t frozen) {
  return NetworkKernels::ForwardBackward(arch, params, x, y, n, grad, ws, dropout_rng,
                                         logit_offsets, class_weights, frozen);
}

BatchScore Score(const Architecture& arch, const float* params, const float* x, const float* y,
                 int n, Workspace& ws) {
  return NetworkKernels::Score(arch, params, x, y, n, ws);
}

void Predict(const Architecture& arch, const float* params, const float* x, int n, float* out,
             Workspace& ws) {
  NetworkKernels::Predict(arch, params, x, n, out, ws);
}

int InferenceBatch(const Architecture& arch) { return arch.kind == ModelKind::kCnn ? 64 : 256; }

}  // namespace fedsgd
