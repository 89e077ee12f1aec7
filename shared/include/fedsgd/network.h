// Batched forward and backward passes over a flat parameter vector.
//
// Inputs are column-major (input_size x n): each sample's features are
// contiguous, as they are in a Dataset (a cnn's: C x H x W, see model.h). Targets are one float per
// sample: the class index for classifiers, the value for regression.
//
// Losses per sample, for output o (logits z):
//   linear     0.5 * (o - y)^2          (so the gradient is o - y)
//   logistic   -y log s(z) - (1 - y) log(1 - s(z)), s = sigmoid, computed
//              as softplus(z) - y z, stable for any z
//   softmax, mlp   log sum_k exp(z_k) - z_y, with the max subtracted first
//
// A Workspace holds all scratch memory for batches of up to max_batch
// samples, so the training loop never allocates. One Workspace per thread;
// the functions themselves keep no state and are safe to call concurrently
// with distinct Workspaces and gradient buffers.
//
// A cnn's convolutions run as im2col (the patches of up to 32 samples at a
// time) and one GEMM per chunk; max pooling keeps the position of each
// window's maximum for the backward pass. Dropout applies to mlp only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "fedsgd/dataset_view.h"
#include "fedsgd/model.h"

namespace fedsgd {

class Workspace {
 public:
  Workspace(const Architecture& arch, int max_batch);
  int max_batch() const { return max_batch_; }

 private:
  friend struct NetworkKernels;
  int max_batch_;
  std::vector<LayerLayout> layout_;
  // Per layer l, each out_l x max_batch: outputs after the activation, the
  // gradient w.r.t. the pre-activation, and for dropout the mask and the
  // masked outputs fed to the next layer.
  std::vector<std::vector<float>> activations_;
  std::vector<std::vector<float>> deltas_;
  std::vector<std::vector<float>> masks_;
  std::vector<std::vector<float>> inputs_;
  // A cnn: the feature map shapes (input, then after each stage), the
  // number of convolutions (its first layers in layout_), per stage its
  // output (after ReLU or pooling) and the loss gradient w.r.t. that output,
  // max_batch samples each, and for pooling each output's input position;
  // the im2col patches of conv_chunk_ samples and their gradient.
  std::vector<ImageShape> stage_shapes_;
  std::size_t conv_layers_ = 0;
  int conv_chunk_ = 0;
  std::vector<std::vector<float>> stage_outputs_;
  std::vector<std::vector<float>> stage_deltas_;
  std::vector<std::vector<std::int32_t>> argmax_;
  std::vector<float> patches_;
  std::vector<float> patch_deltas_;
  // Packing buffers for the matrix products: Eigen's GEMM would otherwise
  // allocate them (hundreds of KB) on every product. Sized for the largest
  // product; gemm_blocking_ holds each product's cache-block sizes
  // (kc, mc, nc), three products per layer: forward, weight and input
  // gradient.
  std::vector<float> gemm_lhs_;
  std::vector<float> gemm_rhs_;
  std::vector<std::ptrdiff_t> gemm_blocking_;
};

// Mean loss over the n samples (regularisation not included), and the
// gradient of that mean w.r.t. params written to grad (ParameterCount()
// floats, overwritten). n must be in [1, ws.max_batch()]. dropout_rng may be
// null (no dropout, as at evaluation); with it, hidden units are dropped with
// probability arch.dropout (inverted dropout). logit_offsets may be null;
// with it (output-width floats, cross-entropy models only) the loss and its
// gradient are those of the logits plus the offsets: logit adjustment (see
// LogitAdjustment in trainer.h). class_weights may be null; with it
// (output-width floats, cross-entropy models only) sample j's loss counts
// class_weights[y_j] times: the mean over the batch of w_y * cross-entropy
// (class weighting, ClassWeights in trainer.h). Other losses ignore both.
// frozen (fine-tuning, TrainOptions::frozen): the first `frozen` gradient
// entries are not wanted. The backward pass stops at the first layer (from
// the output) whose parameters all lie there, and skips the input gradient
// into it, so such layers cost no backward work; their grad entries are left
// as they were. Other entries are as with frozen = 0.
float ForwardBackward(const Architecture& arch, const float* params, const float* x, const float* y,
                      int n, float* grad, Workspace& ws, std::mt19937_64* dropout_rng = nullptr,
                      const float* logit_offsets = nullptr, const float* class_weights = nullptr,
                      std::size_t frozen = 0);

// Mean loss and the number of correct predictions over n samples, no
// gradient (classifiers: argmax, or p >= 0.5 for logistic; regression
// reports correct = 0).
struct BatchScore {
  double loss_sum = 0;  // summed, not mean, so batches add up
  std::size_t correct = 0;
};
BatchScore Score(const Architecture& arch, const float* params, const float* x, const float* y,
                 int n, Workspace& ws);

// The model's outputs for n samples (n in [1, ws.max_batch()]), no
// dropout: out gets n x output_size() floats, sample after sample: class
// probabilities (softmax) for cross-entropy models, P(y = 1) for logistic
// ones, the prediction for regression.
void Predict(const Architecture& arch, const float* params, const float* x, int n, float* out,
             Workspace& ws);

// The batch evaluation and prediction use: 256 samples, 64 for a cnn (whose
// feature maps take tens of KB per sample in a Workspace).
int InferenceBatch(const Architecture& arch);

// Loss and accuracy of params over a data set (or a view of some of its
// samples), in batches. accuracy is 0 for regression models.
struct Evaluation {
  double loss = 0;
  double accuracy = 0;
  std::size_t samples = 0;
};
Evaluation Evaluate(const Architecture& arch, const float* params, const DatasetView& data,
                    int threads = 1);

}  // namespace fedsgd
