// The kernels of layer_kernels.h.
#include "layer_kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace fedsgd::kernels {
namespace {

// log(1 + exp(z)), stable for any z.
double Softplus(double z) { return std::max(z, 0.0) + std::log1p(std::exp(-std::abs(z))); }

}  // namespace

MapStrides StridesOf(const ImageShape& s, bool channel_major) {
  if (channel_major) return {Index{s.height} * s.width, s.width, 1};
  return {1, Index{s.width} * s.channels, s.channels};
}

void Im2Col(const float* in, const ImageShape& is, MapStrides st, const FeatureStage& f,
            const ImageShape& os, int first, int count, float* cols) {
  const int k = f.kernel, c_in = is.channels;
  // A kernel row (K columns of C_in channels) lies contiguous in an HWC map
  // or a one-channel one: copied in one go where it is all inside the map.
  const bool rows_contiguous = st.x_step == c_in && (st.c_step == 1 || c_in == 1);
  const std::size_t row = static_cast<std::size_t>(k) * c_in;
  for (int j = first; j < first + count; ++j) {
    const float* sample = in + static_cast<std::size_t>(j) * is.size();
    for (int oy = 0; oy < os.height; ++oy) {
      for (int ox = 0; ox < os.width; ++ox) {
        const int ix0 = ox * f.stride - f.padding;
        const bool inside = ix0 >= 0 && ix0 + k <= is.width;
        for (int ky = 0; ky < k; ++ky, cols += row) {
          const int iy = oy * f.stride - f.padding + ky;
          if (iy < 0 || iy >= is.height) {
            std::fill_n(cols, row, 0.0f);
            continue;
          }
          const float* src = sample + iy * st.y_step;
          if (rows_contiguous && inside) {
            std::copy_n(src + ix0 * st.x_step, row, cols);
            continue;
          }
          for (int kx = 0; kx < k; ++kx) {
            float* dst = cols + static_cast<std::size_t>(kx) * c_in;
            const int ix = ix0 + kx;
            if (ix < 0 || ix >= is.width) {
              std::fill_n(dst, c_in, 0.0f);
            } else {
              for (int c = 0; c < c_in; ++c) dst[c] = src[ix * st.x_step + c * st.c_step];
            }
          }
        }
      }
    }
  }
}

void Col2ImAdd(const float* dcols, const ImageShape& is, const FeatureStage& f,
               const ImageShape& os, int first, int count, float* d) {
  const int k = f.kernel, c_in = is.channels;
  for (int j = first; j < first + count; ++j) {
    float* sample = d + static_cast<std::size_t>(j) * is.size();
    for (int oy = 0; oy < os.height; ++oy) {
      for (int ox = 0; ox < os.width; ++ox) {
        for (int ky = 0; ky < k; ++ky) {
          const int iy = oy * f.stride - f.padding + ky;
          for (int kx = 0; kx < k; ++kx, dcols += c_in) {
            const int ix = ox * f.stride - f.padding + kx;
            if (iy < 0 || iy >= is.height || ix < 0 || ix >= is.width) continue;
            float* dst = sample + (static_cast<std::size_t>(iy) * is.width + ix) * c_in;
            for (int c = 0; c < c_in; ++c) dst[c] += dcols[c];
          }
        }
      }
    }
  }
}

void MaxPool(const float* in, const ImageShape& is, MapStrides st, int kernel, const ImageShape& os,
             int n, float* out, std::int32_t* arg) {
  const int channels = is.channels;
  for (int j = 0; j < n; ++j) {
    const float* sample = in + static_cast<std::size_t>(j) * is.size();
    for (int oy = 0; oy < os.height; ++oy) {
      for (int ox = 0; ox < os.width; ++ox, out += channels, arg += channels) {
        const Index corner = oy * kernel * st.y_step + ox * kernel * st.x_step;
        for (int c = 0; c < channels; ++c) {
          out[c] = sample[corner + c * st.c_step];
          arg[c] = static_cast<std::int32_t>(corner + c * st.c_step);
        }
        for (int ky = 0; ky < kernel; ++ky) {
          for (int kx = 0; kx < kernel; ++kx) {
            const Index base = corner + ky * st.y_step + kx * st.x_step;
            for (int c = 0; c < channels; ++c) {
              const float v = sample[base + c * st.c_step];
              if (v > out[c]) {
                out[c] = v;
                arg[c] = static_cast<std::int32_t>(base + c * st.c_step);
              }
            }
          }
        }
      }
    }
  }
}

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

void RowSums(const Matrix& d, float* out) {
  Vector sums(out, d.rows());
  sums = d.col(0);
  for (Index j = 1; j < d.cols(); ++j) sums += d.col(j);
}

double OutputLoss(const Architecture& arch, const Matrix& z, const float* y, int n, float* d,
                  float scale, std::size_t* correct, const float* class_weights) {
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

}  // namespace fedsgd::kernels
