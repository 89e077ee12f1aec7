// Batched forward and backward passes with Eigen (see network.h).
//
// Per layer l with input A (in x n, column-major) the forward pass is
//   Z = W * A + b,  A' = f(Z)  (f = activation; none on the output layer)
// and the backward pass, given dZ (out x n),
//   dW = dZ * A^T,  db = rowsum(dZ),  dA = W^T * dZ,  dZ_prev = dA .* f'(Z_prev).
// The first layer's dA is never formed: nothing needs the input gradient,
// and it would cost a third of the work of the widest product.
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
#include <thread>

#include "fedsgd/dataset.h"

// general_matrix_matrix_product and level3_blocking are Eigen internals;
// their signatures are those of the 3.4 series. Check them on an upgrade.
static_assert(EIGEN_VERSION_AT_LEAST(3, 4, 0) && !EIGEN_VERSION_AT_LEAST(3, 4, 90),
              "network.cpp calls Eigen 3.4's internal GEMM; check its signature");

namespace fedsgd {
namespace {

using Eigen::Index;
using Matrix = Eigen::Map<Eigen::MatrixXf>;
using ConstMatrix = Eigen::Map<const Eigen::MatrixXf>;
using ConstVector = Eigen::Map<const Eigen::VectorXf>;
using Vector = Eigen::Map<Eigen::VectorXf>;

bool IsHidden(const Architecture& arch, std::size_t layer, std::size_t layers) {
  return arch.kind == ModelKind::kMlp && layer + 1 < layers;
}

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

void Activate(Activation f, Matrix z) {
  switch (f) {
    case Activation::kRelu:
      z = z.cwiseMax(0.0f);
      break;
    case Activation::kTanh:
      z = z.array().tanh();
      break;
    case Activation::kSigmoid:
      z = (1.0f + (-z.array()).exp()).inverse();
      break;
  }
}

// d *= f'(z), given a = f(z).
void MultiplyDerivative(Activation f, Matrix d, const Matrix& a) {
  switch (f) {
    case Activation::kRelu:
      d = (a.array() > 0.0f).select(d, 0.0f);
      break;
    case Activation::kTanh:
      d.array() *= 1.0f - a.array().square();
      break;
    case Activation::kSigmoid:
      d.array() *= a.array() * (1.0f - a.array());
      break;
  }
}

// log(1 + exp(z)), stable for any z.
inline double Softplus(double z) { return std::max(z, 0.0) + std::log1p(std::exp(-std::abs(z))); }

// Output loss summed over the n columns of z (logits / predictions), and
// optionally dL/dz scaled by `scale` into d. Counts correct predictions.
double OutputLoss(const Architecture& arch, const Matrix& z, const float* y, int n, float* d,
                  float scale, std::size_t* correct, const float* class_weights = nullptr) {
  double loss = 0;
  const int k = static_cast<int>(z.rows());
  switch (arch.loss()) {
    case LossKind::kCrossEntropy:
      for (int j = 0; j < n; ++j) {
        const auto col = z.col(j);
        const int label = static_cast<int>(y[j]);
        Eigen::Index arg = 0;
        const float m = col.maxCoeff(&arg);
        if (correct && arg == label) ++*correct;
        if (d) {
          const float w = class_weights ? class_weights[label] : 1.0f;
          Vector dj(d + static_cast<std::size_t>(j) * k, k);
          dj = (col.array() - m).exp();
          const float s = dj.sum();
          loss += w * (std::log(static_cast<double>(s)) + m - col(label));
          dj *= w * scale / s;
          dj(label) -= w * scale;
        } else {
          loss += std::log(static_cast<double>((col.array() - m).exp().sum())) + m - col(label);
        }
      }
      break;
    case LossKind::kBinaryCrossEntropy:
      for (int j = 0; j < n; ++j) {
        const double zj = z(0, j);
        loss += Softplus(zj) - y[j] * zj;
        if (correct && (zj >= 0) == (y[j] >= 0.5f)) ++*correct;
        if (d) d[j] = scale * (static_cast<float>(1.0 / (1.0 + std::exp(-zj))) - y[j]);
      }
      break;
    case LossKind::kMeanSquaredError:
      for (int j = 0; j < n; ++j) {
        const double e = static_cast<double>(z(0, j)) - y[j];
        loss += 0.5 * e * e;
        if (d) d[j] = scale * static_cast<float>(e);
      }
      break;
  }
  return loss;
}

}  // namespace

Workspace::Workspace(const Architecture& arch, int max_batch)
    : max_batch_(std::max(1, max_batch)), layout_(arch.Layout()) {
  const std::size_t layers = layout_.size();
  const std::size_t b = static_cast<std::size_t>(max_batch_);
  activations_.resize(layers);
  deltas_.resize(layers);
  inputs_.resize(layers);
  masks_.resize(layers);
  for (std::size_t l = 0; l < layers; ++l) {
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
  // in x out * out x b.
  gemm_blocking_.resize(layers * kProducts * 3);
  Index size_a = 0, size_b = 0;
  for (std::size_t l = 0; l < layers; ++l) {
    const Index in = layout_[l].in, out = layout_[l].out, batch = max_batch_;
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

  // Forward pass over n columns of x; leaves each layer's output in
  // activations_ (the last one: logits / predictions). With a dropout RNG,
  // hidden outputs are also masked (inverted dropout) into inputs_.
  static void Forward(const Architecture& arch, const float* params, const float* x, int n,
                      Workspace& ws, std::mt19937_64* dropout_rng) {
    const std::size_t layers = ws.layout_.size();
    const float* a = x;
    for (std::size_t l = 0; l < layers; ++l) {
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
                               const float* class_weights) {
    assert(n >= 1 && n <= ws.max_batch_);
    assert(ws.layout_.size() + 1 == arch.widths.size());
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

    for (std::size_t l = layers; l-- > 0;) {
      const LayerLayout& L = layout[l];
      Matrix d(ws.deltas_[l].data(), L.out, n);
      const float* input = l == 0    ? x
                           : dropout ? ws.inputs_[l - 1].data()
                                     : ws.activations_[l - 1].data();
      ConstMatrix in(input, L.in, n);
      Matrix dw(grad + L.weight_offset, L.out, L.in);
      dw.setZero();
      GemmAdd<Eigen::ColMajor, Eigen::RowMajor>(ws, l, kWeightGradient, L.out, L.in, n, d.data(),
                                                L.out, in.data(), L.in, dw.data());
      Vector db(grad + L.bias_offset, L.out);
      db.noalias() = d.rowwise().sum();
      if (l == 0) break;
      Matrix dprev(ws.deltas_[l - 1].data(), L.in, n);
      dprev.setZero();
      GemmAdd<Eigen::RowMajor, Eigen::ColMajor>(ws, l, kInputGradient, L.in, n, L.out,
                                                params + L.weight_offset, L.out, d.data(), L.out,
                                                dprev.data());
      if (dropout) dprev.array() *= Matrix(ws.masks_[l - 1].data(), L.in, n).array();
      MultiplyDerivative(arch.activation, dprev, Matrix(ws.activations_[l - 1].data(), L.in, n));
    }
    return static_cast<float>(loss);
  }

  static BatchScore Score(const Architecture& arch, const float* params, const float* x,
                          const float* y, int n, Workspace& ws) {
    assert(n >= 1 && n <= ws.max_batch_);
    assert(ws.layout_.size() + 1 == arch.widths.size());
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
                      const float* logit_offsets, const float* class_weights) {
  return NetworkKernels::ForwardBackward(arch, params, x, y, n, grad, ws, dropout_rng,
                                         logit_offsets, class_weights);
}

BatchScore Score(const Architecture& arch, const float* params, const float* x, const float* y,
                 int n, Workspace& ws) {
  return NetworkKernels::Score(arch, params, x, y, n, ws);
}

void Predict(const Architecture& arch, const float* params, const float* x, int n, float* out,
             Workspace& ws) {
  NetworkKernels::Predict(arch, params, x, n, out, ws);
}

Evaluation Evaluate(const Architecture& arch, const float* params, const DatasetView& data,
                    int threads) {
  constexpr int kBatch = 256;
  const std::size_t n = data.size();
  Evaluation result;
  result.samples = n;
  if (n == 0) return result;
  const std::size_t batches = (n + kBatch - 1) / kBatch;
  threads = static_cast<int>(std::clamp<std::size_t>(threads, 1, batches));
  std::vector<BatchScore> partial(threads);
  auto work = [&](int t) {
    Workspace ws(arch, kBatch);
    // Each batch is gathered (and byte features converted) into floats.
    std::vector<float> x(static_cast<std::size_t>(kBatch) * data.num_features()), y(kBatch);
    for (std::size_t b = t; b < batches; b += threads) {
      const std::size_t begin = b * kBatch;
      const int rows = static_cast<int>(std::min<std::size_t>(kBatch, n - begin));
      data.Copy(begin, static_cast<std::size_t>(rows), x.data(), y.data());
      const BatchScore s = Score(arch, params, x.data(), y.data(), rows, ws);
      partial[t].loss_sum += s.loss_sum;
      partial[t].correct += s.correct;
    }
  };
  {
    std::vector<std::jthread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(work, t);
    work(0);
  }
  double loss = 0;
  std::size_t correct = 0;
  for (const BatchScore& s : partial) {
    loss += s.loss_sum;
    correct += s.correct;
  }
  result.loss = loss / static_cast<double>(n);
  result.accuracy =
      arch.num_classes() > 0 ? static_cast<double>(correct) / static_cast<double>(n) : 0.0;
  return result;
}

}  // namespace fedsgd
