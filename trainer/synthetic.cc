#include "trainer/synthetic.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace recall::trainer {
namespace {

// Deterministic random source: mt19937_64's output sequence is fixed by the standard; the
// mappings below are ours, so results do not depend on the standard library.
class Rng {
 public:
  explicit Rng(uint64_t seed) : g_(seed) {}
  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(g_() >> 11) * 0x1.0p-53; }
  // Uniform in [0, n) for n >= 1 (multiply-shift; bias < n / 2^64, irrelevant here).
  int64_t Below(int64_t n) {
    return static_cast<int64_t>((static_cast<unsigned __int128>(g_()) * static_cast<uint64_t>(n)) >>
                                64);
  }
  template <typename T>
  void Shuffle(std::vector<T>* v) {
    for (int64_t i = static_cast<int64_t>(v->size()) - 1; i > 0; --i) {
      std::swap((*v)[i], (*v)[Below(i + 1)]);
    }
  }

 private:
  std::mt19937_64 g_;
};

// Standard normal by Box-Muller from our own uniforms (std::normal_distribution is
// implementation-defined).
double Gaussian(Rng& rng) {
  const double u1 = 1.0 - rng.Uniform();  // (0, 1]: log is finite
  const double u2 = rng.Uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

double Clamp01(double x) { return std::isfinite(x) ? std::clamp(x, 0.0, 1.0) : 0.0; }

SyntheticConfig Sanitize(SyntheticConfig c) {
  c.num_users = std::max<int64_t>(c.num_users, 1);
  c.num_items = std::max<int64_t>(c.num_items, 2);
  c.num_categories = static_cast<int>(std::clamp<int64_t>(c.num_categories, 1, c.num_items));
  c.min_interactions = static_cast<int>(std::clamp<int64_t>(c.min_interactions, 2, c.num_items));
  c.max_interactions =
      static_cast<int>(std::clamp<int64_t>(c.max_interactions, c.min_interactions, c.num_items));
  c.test_fraction = Clamp01(c.test_fraction);
  c.zipf = std::isfinite(c.zipf) ? std::max(c.zipf, 0.0) : 0.0;
  c.off_category_rate = Clamp01(c.off_category_rate);
  c.region_signal = Clamp01(c.region_signal);
  c.item_numeric_features = std::clamp(c.item_numeric_features, 0, 1024);
  c.item_numeric_spread =
      std::isfinite(c.item_numeric_spread) ? std::max(c.item_numeric_spread, 0.0) : 0.0;
  c.taste_bandwidth = std::isfinite(c.taste_bandwidth) ? std::max(c.taste_bandwidth, 0.0) : 0.0;
  return c;
}

}  // namespace

absl::Status ValidateSyntheticConfig(const SyntheticConfig& c) {
  auto bad = [](const char* field, const auto& v, const char* want) {
    return absl::InvalidArgumentError(absl::StrCat("synthetic ", field, " = ", v, ": ", want));
  };
  if (c.num_users < 1) return bad("num_users", c.num_users, "must be >= 1");
  if (c.num_items < 2) return bad("num_items", c.num_items, "must be >= 2");
  if (c.num_categories < 1 || c.num_categories > c.num_items) {
    return bad("num_categories", c.num_categories, "must be in [1, num_items]");
  }
  if (c.min_interactions < 2 || c.min_interactions > c.num_items) {
    return bad("min_interactions", c.min_interactions,
               "must be in [2, num_items] (each user needs a train and a test item)");
  }
  if (c.max_interactions < c.min_interactions || c.max_interactions > c.num_items) {
    return bad("max_interactions", c.max_interactions, "must be in [min_interactions, num_items]");
  }
  if (!(c.test_fraction >= 0.0 && c.test_fraction <= 1.0)) {
    return bad("test_fraction", c.test_fraction, "must be in [0, 1]");
  }
  if (!(c.zipf >= 0.0) || !std::isfinite(c.zipf)) return bad("zipf", c.zipf, "must be >= 0");
  if (!(c.off_category_rate >= 0.0 && c.off_category_rate <= 1.0)) {
    return bad("off_category_rate", c.off_category_rate, "must be in [0, 1]");
  }
  if (!(c.region_signal >= 0.0 && c.region_signal <= 1.0)) {
    return bad("region_signal", c.region_signal, "must be in [0, 1]");
  }
  if (c.item_numeric_features < 0 || c.item_numeric_features > 1024) {
    return bad("item_numeric_features", c.item_numeric_features, "must be in [0, 1024]");
  }
  if (!(c.item_numeric_spread >= 0.0) || !std::isfinite(c.item_numeric_spread)) {
    return bad("item_numeric_spread", c.item_numeric_spread, "must be >= 0");
  }
  if (!(c.taste_bandwidth >= 0.0) || !std::isfinite(c.taste_bandwidth)) {
    return bad("taste_bandwidth", c.taste_bandwidth, "must be >= 0");
  }
  if (c.taste_bandwidth > 0.0 && c.item_numeric_features == 0) {
    return bad("taste_bandwidth", c.taste_bandwidth,
               "needs item_numeric_features > 0 (the taste lives in the feature space)");
  }
  return absl::OkStatus();
}

SyntheticData GenerateSyntheticWithTruth(const SyntheticConfig& config) {
  const SyntheticConfig c = Sanitize(config);
  const int num_cat = c.num_categories;
  Rng rng(c.seed);

  SyntheticData out;
  Dataset& d = out.dataset;
  d.name = "synthetic";
  d.num_users = c.num_users;
  d.num_items = c.num_items;

  // Items: a random permutation dealt round-robin into categories; position in the deal is the
  // item's popularity rank inside its category.
  std::vector<int64_t> perm(c.num_items);
  for (int64_t i = 0; i < c.num_items; ++i) perm[i] = i;
  rng.Shuffle(&perm);
  out.item_category.assign(c.num_items, 0);
  std::vector<std::vector<int64_t>> cat_items(num_cat);  // in popularity rank order
  for (int64_t j = 0; j < c.num_items; ++j) {
    const int k = static_cast<int>(j % num_cat);
    out.item_category[perm[j]] = k;
    cat_items[k].push_back(perm[j]);
  }
  // Zipf weight of each popularity rank, weight(r) = 1 / (r + 1)^zipf, and its CDF per category.
  size_t largest = 0;
  for (const auto& members : cat_items) largest = std::max(largest, members.size());
  std::vector<double> rank_weight(largest);
  for (size_t r = 0; r < largest; ++r) rank_weight[r] = std::pow(static_cast<double>(r + 1), -c.zipf);
  std::vector<std::vector<double>> cat_cdf(num_cat);
  for (int k = 0; k < num_cat; ++k) {
    double total = 0.0;
    cat_cdf[k].reserve(cat_items[k].size());
    for (size_t r = 0; r < cat_items[k].size(); ++r) {
      total += rank_weight[r];
      cat_cdf[k].push_back(total);
    }
  }
  // Category k's member at a rank drawn from cdf (cumulative weights over k's ranks).
  auto draw_by_cdf = [&](int k, const std::vector<double>& cdf) {
    const double x = rng.Uniform() * cdf.back();
    size_t r = std::upper_bound(cdf.begin(), cdf.end(), x) - cdf.begin();
    if (r >= cdf.size()) r = cdf.size() - 1;
    return cat_items[k][r];
  };

  d.item_cat_names = {"category"};
  d.item_cat_values.assign(1, std::vector<std::string>(c.num_items));
  for (int64_t i = 0; i < c.num_items; ++i) {
    d.item_cat_values[0][i] = absl::StrCat("c", out.item_category[i]);
  }
  std::vector<std::vector<double>> center;  // [category][feature]
  if (c.item_numeric_features > 0) {
    // Own stream: the interactions below stay those of the same config without features.
    Rng frng(c.seed ^ 0x9e3779b97f4a7c15ULL);
    const int n = c.item_numeric_features;
    center.assign(num_cat, std::vector<double>(n));
    for (auto& cc : center) {
      for (double& x : cc) x = 2.0 * frng.Uniform() - 1.0;
    }
    d.item_num_names.resize(n);
    d.item_num_values.assign(n, std::vector<float>(c.num_items));
    for (int f = 0; f < n; ++f) d.item_num_names[f] = absl::StrCat("x", f);
    for (int64_t i = 0; i < c.num_items; ++i) {
      const std::vector<double>& cc = center[out.item_category[i]];
      for (int f = 0; f < n; ++f) {
        d.item_num_values[f][i] = static_cast<float>(cc[f] + c.item_numeric_spread * Gaussian(frng));
      }
    }
  }
  const bool taste = c.taste_bandwidth > 0.0 && c.item_numeric_features > 0;
  // Taste: each category's members' features contiguous in rank order, for the per-user kernel.
  std::vector<std::vector<float>> cat_features(taste ? num_cat : 0);
  for (size_t k = 0; k < cat_features.size(); ++k) {
    const int n = c.item_numeric_features;
    cat_features[k].resize(cat_items[k].size() * n);
    for (size_t r = 0; r < cat_items[k].size(); ++r) {
      for (int f = 0; f < n; ++f) cat_features[k][r * n + f] = d.item_num_values[f][cat_items[k][r]];
    }
  }
  std::vector<double> taste_cdf;  // the current user's preferred category: Zipf times the kernel
  std::vector<double> dist2;

  // Users.
  out.user_category.assign(c.num_users, 0);
  d.user_cat_names = {"region"};
  d.user_cat_values.assign(1, std::vector<std::string>(c.num_users));
  d.train.assign(c.num_users, {});
  d.test.assign(c.num_users, {});
  if (taste) out.user_taste.assign(c.num_users, {});
  std::vector<int64_t> items;
  absl::flat_hash_set<int64_t> taken;
  for (int64_t u = 0; u < c.num_users; ++u) {
    const int pref = static_cast<int>(rng.Below(num_cat));
    out.user_category[u] = pref;
    const int region = rng.Uniform() < c.region_signal ? pref : static_cast<int>(rng.Below(num_cat));
    d.user_cat_values[0][u] = absl::StrCat("r", region);
    if (taste) {
      const int n = c.item_numeric_features;
      std::vector<float>& t = out.user_taste[u];
      t.resize(n);
      for (int f = 0; f < n; ++f) {
        t[f] = static_cast<float>(center[pref][f] + c.item_numeric_spread * Gaussian(rng));
      }
      const std::vector<float>& feats = cat_features[pref];
      const size_t members = cat_items[pref].size();
      dist2.resize(members);
      double min_d2 = std::numeric_limits<double>::infinity();
      for (size_t r = 0; r < members; ++r) {
        double s2 = 0.0;
        for (int f = 0; f < n; ++f) {
          const double diff = feats[r * n + f] - t[f];
          s2 += diff * diff;
        }
        dist2[r] = s2;
        min_d2 = std::min(min_d2, s2);
      }
      // Relative to the nearest member, so the kernel never underflows to all zeros.
      const double inv_2h2 = 1.0 / (2.0 * c.taste_bandwidth * c.taste_bandwidth);
      taste_cdf.resize(members);
      double total = 0.0;
      for (size_t r = 0; r < members; ++r) {
        total += rank_weight[r] * std::exp(-(dist2[r] - min_d2) * inv_2h2);
        taste_cdf[r] = total;
      }
    }

    const int64_t n =
        c.min_interactions + rng.Below(int64_t{c.max_interactions} - c.min_interactions + 1);
    items.clear();
    taken.clear();
    while (static_cast<int64_t>(items.size()) < n) {
      // The category is fixed per interaction, so off_category_rate is the off-category share
      // of the result (retrying the category on a collision would bias toward big catalogs).
      int k = pref;
      if (num_cat > 1 && rng.Uniform() < c.off_category_rate) {
        k = static_cast<int>(rng.Below(num_cat - 1));
        if (k >= pref) ++k;
      }
      const std::vector<double>& cdf = taste && k == pref ? taste_cdf : cat_cdf[k];
      auto draw = [&] { return draw_by_cdf(k, cdf); };
      int64_t item = draw();
      for (int tries = 1; taken.contains(item) && tries < 64; ++tries) item = draw();
      if (taken.contains(item)) {
        // The skewed draw keeps hitting taken items: take the next free item of the category
        // after a random rank, else the next free item of the catalog (n <= num_items).
        const std::vector<int64_t>& members = cat_items[k];
        const int64_t start = rng.Below(static_cast<int64_t>(members.size()));
        for (size_t j = 0; j < members.size() && taken.contains(item); ++j) {
          item = members[(start + j) % members.size()];
        }
        while (taken.contains(item)) item = (item + 1) % c.num_items;
      }
      taken.insert(item);
      items.push_back(item);
    }
    rng.Shuffle(&items);
    const int64_t num_test =
        std::clamp<int64_t>(std::llround(c.test_fraction * static_cast<double>(n)), 1, n - 1);
    d.test[u].assign(items.begin(), items.begin() + num_test);
    d.train[u].assign(items.begin() + num_test, items.end());
    std::sort(d.test[u].begin(), d.test[u].end());
    std::sort(d.train[u].begin(), d.train[u].end());
  }
  return out;
}

Dataset GenerateSynthetic(const SyntheticConfig& c) {
  return std::move(GenerateSyntheticWithTruth(c).dataset);
}

}  // namespace recall::trainer
