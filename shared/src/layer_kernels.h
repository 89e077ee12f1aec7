// The per-layer kernels of network.cpp's passes that are not products:
// a cnn's im2col / col2im and max pooling over feature maps, activations and
// their derivatives, bias gradients and the output losses. Internal to the
// library (network.h is the interface); each works on a whole batch, so a
// call across translation units costs nothing measurable.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>

#include "fedsgd/model.h"

namespace fedsgd::kernels {

using Eigen::Index;
using Matrix = Eigen::Map<Eigen::MatrixXf>;
using Vector = Eigen::Map<Eigen::VectorXf>;

// Where element (channel c, row y, column x) of a sample's feature map is:
// c * c_step + y * y_step + x * x_step. The input is CHW, every stage's
// output HWC.
struct MapStrides {
  Index c_step, y_step, x_step;
};

MapStrides StridesOf(const ImageShape& s, bool channel_major);

// The patches of samples [first, first + count) of in (shape is, strides st)
// for convolution f with output shape os, into cols (K*K*C_in rows, one
// column per output position, sample after sample).
void Im2Col(const float* in, const ImageShape& is, MapStrides st, const FeatureStage& f,
            const ImageShape& os, int first, int count, float* cols);

// The adjoint of Im2Col for an HWC map: adds each patch entry of dcols into
// the position of d it was read from (padding entries are dropped).
void Col2ImAdd(const float* dcols, const ImageShape& is, const FeatureStage& f,
               const ImageShape& os, int first, int count, float* d);

// Max pooling of n samples of in (shape is, strides st) into out (HWC,
// shape os); arg gets each output's position in its sample's input.
void MaxPool(const float* in, const ImageShape& is, MapStrides st, int kernel, const ImageShape& os,
             int n, float* out, std::int32_t* arg);

// z = f(z), in place.
void Activate(Activation f, Matrix z);

// d *= f'(z), given a = f(z).
void MultiplyDerivative(Activation f, Matrix d, const Matrix& a);

// out = the row sums of d, column after column. Not d.rowwise().sum():
// Eigen vectorises that over out from its first aligned element, and the
// scalar and vector paths add in different orders, so the bias gradients'
// last bits would depend on where the caller's gradient buffer lies in
// memory (and a seeded sync run would not repeat exactly).
void RowSums(const Matrix& d, float* out);

// Output loss summed over the n columns of z (logits / predictions), and
// optionally dL/dz scaled by `scale` into d. Counts correct predictions.
double OutputLoss(const Architecture& arch, const Matrix& z, const float* y, int n, float* d,
                  float scale, std::size_t* correct, const float* class_weights = nullptr);

}  // namespace fedsgd::kernels
