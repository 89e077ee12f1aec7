// An independent double-precision reference for the forward/backward
// passes (per-sample loops straight from the definitions, sharing no code
// with network.cpp or its kernels), and random batches and models for the
// network tests.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "fedsgd/model.h"

namespace fedsgd::testing {

// A cnn's mean loss in double, one sample at a time: direct convolution and
// pooling over [channel][row][column] maps, the parameters indexed as
// model.h documents them (shares no code with network.cpp's im2col).
inline double ReferenceCnnLoss(const Architecture& arch, const std::vector<double>& p,
                               const std::vector<float>& x, const std::vector<float>& y, int n,
                               const std::vector<double>* class_weights) {
  const std::vector<LayerLayout> layers = arch.Layout();
  double total = 0;
  for (int j = 0; j < n; ++j) {
    int channels = arch.input_shape.channels, height = arch.input_shape.height,
        width = arch.input_shape.width;
    std::vector<double> map(x.begin() + static_cast<std::ptrdiff_t>(j) * arch.input_size(),
                            x.begin() + static_cast<std::ptrdiff_t>(j + 1) * arch.input_size());
    auto at = [&](const std::vector<double>& m, int c, int r, int col) {
      return m[(static_cast<std::size_t>(c) * height + r) * width + col];
    };
    std::size_t layer = 0;
    for (const FeatureStage& s : arch.stages) {
      const int k = s.kernel;
      if (s.type == FeatureStage::Type::kMaxPool) {
        const int oh = height / k, ow = width / k;
        std::vector<double> out(static_cast<std::size_t>(channels) * oh * ow);
        for (int c = 0; c < channels; ++c) {
          for (int r = 0; r < oh; ++r) {
            for (int col = 0; col < ow; ++col) {
              double m = -INFINITY;
              for (int i = 0; i < k; ++i) {
                for (int jj = 0; jj < k; ++jj) m = std::max(m, at(map, c, r * k + i, col * k + jj));
              }
              out[(static_cast<std::size_t>(c) * oh + r) * ow + col] = m;
            }
          }
        }
        map = out;
        height = oh;
        width = ow;
        continue;
      }
      const LayerLayout& L = layers[layer++];
      const int oc = s.channels;
      const int oh = (height + 2 * s.padding - k) / s.stride + 1;
      const int ow = (width + 2 * s.padding - k) / s.stride + 1;
      std::vector<double> out(static_cast<std::size_t>(oc) * oh * ow);
      for (int o = 0; o < oc; ++o) {
        for (int r = 0; r < oh; ++r) {
          for (int col = 0; col < ow; ++col) {
            double v = p[L.bias_offset + o];
            for (int c = 0; c < channels; ++c) {
              for (int i = 0; i < k; ++i) {
                for (int jj = 0; jj < k; ++jj) {
                  const int ir = r * s.stride - s.padding + i;
                  const int ic = col * s.stride - s.padding + jj;
                  if (ir < 0 || ir >= height || ic < 0 || ic >= width) continue;
                  const std::size_t w =
                      L.weight_offset + o +
                      static_cast<std::size_t>(oc) * (c + channels * (jj + k * i));
                  v += p[w] * at(map, c, ir, ic);
                }
              }
            }
            out[(static_cast<std::size_t>(o) * oh + r) * ow + col] = v > 0 ? v : 0;
          }
        }
      }
      map = out;
      channels = oc;
      height = oh;
      width = ow;
    }
    // Flattened (row, column, channel), channel fastest.
    std::vector<double> a(map.size());
    for (int c = 0; c < channels; ++c) {
      for (int r = 0; r < height; ++r) {
        for (int col = 0; col < width; ++col) {
          a[c + static_cast<std::size_t>(channels) * (col + static_cast<std::size_t>(width) * r)] =
              at(map, c, r, col);
        }
      }
    }
    for (std::size_t l = layer; l < layers.size(); ++l) {
      const LayerLayout& L = layers[l];
      std::vector<double> z(L.out);
      for (int o = 0; o < L.out; ++o) {
        z[o] = p[L.bias_offset + o];
        for (int i = 0; i < L.in; ++i)
          z[o] += p[L.weight_offset + o + static_cast<std::size_t>(i) * L.out] * a[i];
        if (l + 1 < layers.size()) z[o] = z[o] > 0 ? z[o] : 0;
      }
      a = z;
    }
    double sum = 0;
    for (double v : a) sum += std::exp(v);
    const auto label = static_cast<std::size_t>(y[j]);
    total += (class_weights ? (*class_weights)[label] : 1.0) * (std::log(sum) - a[label]);
  }
  return total / n;
}

// The mean loss of params over n samples, in double, one sample at a time:
// shares no code with network.cpp, so the two cannot be wrong the same way.
// class_weights (cross-entropy only) multiply each sample's loss by its
// class's weight.
inline double ReferenceLoss(const Architecture& arch, const std::vector<double>& p,
                            const std::vector<float>& x, const std::vector<float>& y, int n,
                            const std::vector<double>* class_weights = nullptr) {
  if (arch.kind == ModelKind::kCnn) return ReferenceCnnLoss(arch, p, x, y, n, class_weights);
  const std::vector<LayerLayout> layers = arch.Layout();
  double total = 0;
  for (int j = 0; j < n; ++j) {
    std::vector<double> a(x.begin() + static_cast<std::ptrdiff_t>(j) * arch.input_size(),
                          x.begin() + static_cast<std::ptrdiff_t>(j + 1) * arch.input_size());
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const LayerLayout& L = layers[l];
      std::vector<double> z(L.out);
      for (int o = 0; o < L.out; ++o) {
        z[o] = p[L.bias_offset + o];
        for (int i = 0; i < L.in; ++i)
          z[o] += p[L.weight_offset + o + static_cast<std::size_t>(i) * L.out] * a[i];
      }
      if (arch.kind == ModelKind::kMlp && l + 1 < layers.size()) {
        for (double& v : z) {
          switch (arch.activation) {
            case Activation::kRelu:
              v = v > 0 ? v : 0;
              break;
            case Activation::kTanh:
              v = std::tanh(v);
              break;
            case Activation::kSigmoid:
              v = 1 / (1 + std::exp(-v));
              break;
          }
        }
      }
      a = z;
    }
    switch (arch.loss()) {
      case LossKind::kMeanSquaredError:
        total += 0.5 * (a[0] - y[j]) * (a[0] - y[j]);
        break;
      case LossKind::kBinaryCrossEntropy: {
        const double s = 1 / (1 + std::exp(-a[0]));
        total += -y[j] * std::log(s) - (1 - y[j]) * std::log(1 - s);
        break;
      }
      case LossKind::kCrossEntropy: {
        double sum = 0;
        for (double v : a) sum += std::exp(v);
        const auto label = static_cast<std::size_t>(y[j]);
        total += (class_weights ? (*class_weights)[label] : 1.0) * (std::log(sum) - a[label]);
        break;
      }
    }
  }
  return total / n;
}

// dL/dp[i] of ReferenceLoss by central differences with step h (p is
// restored). The reference's error is ~1e-10, so with h = 1e-4..1e-5 the
// quotient is good to about 1e-6.
inline double NumericGradient(const Architecture& arch, std::vector<double>& p, std::size_t i,
                              double h, const std::vector<float>& x, const std::vector<float>& y,
                              int n, const std::vector<double>* class_weights = nullptr) {
  const double saved = p[i];
  p[i] = saved + h;
  const double up = ReferenceLoss(arch, p, x, y, n, class_weights);
  p[i] = saved - h;
  const double down = ReferenceLoss(arch, p, x, y, n, class_weights);
  p[i] = saved;
  return (up - down) / (2 * h);
}

// Random inputs and valid targets for arch (logistic targets 0 or 1).
inline void RandomBatch(const Architecture& arch, int n, std::mt19937_64& rng,
                        std::vector<float>& x, std::vector<float>& y) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  x.resize(static_cast<std::size_t>(arch.input_size()) * n);
  for (float& v : x) v = normal(rng);
  y.resize(n);
  for (int j = 0; j < n; ++j) {
    y[j] = arch.num_classes() > 0 ? static_cast<float>(rng() % arch.num_classes()) : normal(rng);
  }
}

// A model with every parameter (biases included) in general position.
inline Model RandomModel(const Architecture& arch, std::uint64_t seed) {
  Model m = Model::Create(arch, seed);
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<float> small(0.0f, 0.1f);
  for (float& p : m.params) p += small(rng);
  return m;
}

}  // namespace fedsgd::testing
