// Class balance: what a device derives from the class counts of its
// training data to correct for label skew and class imbalance.
//
//   LogitOffsets   logit adjustment's offsets (TrainOptions::logit_adjustment)
//   ClassWeights   the per-class weights of a class-weighted cross-entropy
//                  (TrainOptions::class_weighting)
//
// Pure functions of the data's targets, computed once per Train() call
// (one pass over the labels; memory: one float per class). Reentrant.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "fedsgd/dataset_view.h"

namespace fedsgd {

// Class weighting of the cross-entropy for class imbalance (cost-sensitive
// learning; background: Cui et al. 2019, "Class-Balanced Loss Based on
// Effective Number of Samples", whose beta -> 1 limit this is):
//   none               every sample counts once
//   inverse_frequency  a sample of class c counts w_c = 1 / n_c, the n_c
//                      being this data set's class counts, normalised so the
//                      w_c of the classes present average 1 (ClassWeights)
enum class ClassWeighting { kNone, kInverseFrequency };
// "none" | "inverse_frequency"; throws Error naming --class-weighting.
ClassWeighting ParseClassWeighting(std::string_view text);
std::string ToString(ClassWeighting weighting);

// The offsets logit adjustment adds: tau * log((n_c + 1) / (n + classes)) for
// each of `classes` classes, n_c the samples of class c in data (add-one
// smoothing, so a class the data lacks gets a large negative offset, not
// minus infinity).
std::vector<float> LogitOffsets(const DatasetView& data, int classes, float tau);

// Inverse-frequency class weights for `classes` classes: w_c proportional to
// 1 / n_c for each class c present in data, scaled so their mean over the
// present classes is 1; a class the data lacks gets 1 (no sample uses it).
// Throws Error when classes < 1.
std::vector<float> ClassWeights(const DatasetView& data, int classes);

}  // namespace fedsgd
