// The embedded default dataset: a generator with a known latent structure and side features.
//
// Every item belongs to one of num_categories categories (item feature "category" = "c<k>").
// Every user has a preferred category; the user feature "region" = "r<k>" equals the preferred
// category with probability region_signal, else a uniformly random one, so user features carry
// signal a tower can learn. A user draws between min_interactions and max_interactions distinct
// items: each draw comes from the preferred category with probability 1 - off_category_rate,
// else from a uniformly chosen other category; inside a category the item is drawn with a Zipf
// law of exponent `zipf` over a random rank order (popularity skew). Each user's items are split
// at random into train and test (round(test_fraction * n) test items, at least 1 of each).
//
// With item_numeric_features = n > 0 every item also gets numeric features "x0".."x{n-1}": its
// category's center (uniform in [-1, 1]^n, drawn once per category) plus independent Gaussian
// noise of standard deviation item_numeric_spread. They carry the category signal, and they make
// every item's feature vector distinct, so a tower that embeds items from features (hashed or
// no id rows) gives every item its own vector: the catalog of the serving benchmark (issue 5),
// where items are far too many to each have a trained id row. They come from their own random
// stream, so the interactions do not depend on n.
//
// With numeric features and taste_bandwidth = h > 0 users also have a continuous taste inside
// their preferred category: a point t_u drawn like an item of that category (center + noise), and
// a draw from the preferred category picks item i with weight zipf(rank_i) *
// exp(-|x_i - t_u|^2 / (2 h^2)) instead of zipf(rank_i) alone. Users and items then share one
// continuous latent space (the numeric features), so a trained item tower spreads a category's
// items by their features and a user's top items are the ones nearest its taste, not near-ties
// of one cluster (the serving benchmark's scenario needs that for HNSW recall@100 >= 0.95). It
// consumes the main random stream, so it changes the interactions; h = 0 (the default) leaves
// them as without it.
//
// The output depends only on the config: the generator uses std::mt19937_64 (fully specified
// by the standard) with hand-written mappings to ints and doubles, never the implementation-
// defined std::*_distribution classes, so a seed gives the same dataset on every platform.
#ifndef RECALL_TRAINER_SYNTHETIC_H_
#define RECALL_TRAINER_SYNTHETIC_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "trainer/dataset.h"

namespace recall::trainer {

struct SyntheticConfig {
  int64_t num_users = 2000;
  int64_t num_items = 1000;
  int num_categories = 10;
  int min_interactions = 10;
  int max_interactions = 40;
  double test_fraction = 0.2;
  double zipf = 0.8;               // item popularity skew within a category (0 = uniform)
  double off_category_rate = 0.1;  // fraction of interactions drawn from another category
  double region_signal = 0.7;      // P(region == preferred category)
  int item_numeric_features = 0;   // numeric item features per item (see above)
  double item_numeric_spread = 0.5;
  double taste_bandwidth = 0.0;    // in-category taste kernel width (see above); needs features
  uint64_t seed = 42;
};

// OK, or InvalidArgument naming the first bad field. GenerateSynthetic* accept any config and
// clamp bad values into range (documented in trainer/DATASETS.md); call this on user input to
// report mistakes instead.
absl::Status ValidateSyntheticConfig(const SyntheticConfig& c);

// The dataset plus the latent truth it was drawn from.
struct SyntheticData {
  Dataset dataset;
  std::vector<int> user_category;  // [user] -> preferred category in [0, num_categories)
  std::vector<int> item_category;  // [item] -> category in [0, num_categories)
  // [user] -> taste point in feature space; empty unless taste_bandwidth > 0 with features.
  std::vector<std::vector<float>> user_taste;
};

SyntheticData GenerateSyntheticWithTruth(const SyntheticConfig& c);
Dataset GenerateSynthetic(const SyntheticConfig& c);

}  // namespace recall::trainer

#endif  // RECALL_TRAINER_SYNTHETIC_H_
