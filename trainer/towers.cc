#include "trainer/towers.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace recall::trainer {
namespace {

// Forward source for an MLP over `x` with layers w0/b0.. and a final normalization.
std::string MlpSource(size_t num_hidden, bool l2_normalize) {
  std::string src;
  for (size_t l = 0; l < num_hidden; ++l) {
    absl::StrAppend(&src, "        x = torch.relu(torch.addmm(self.b", l, ", x, self.w", l, "))\n");
  }
  absl::StrAppend(&src, "        x = torch.addmm(self.b", num_hidden, ", x, self.w", num_hidden, ")\n");
  if (l2_normalize) {
    // torch.nn.functional is not reachable from define(): normalize with torch ops.
    src += "        x = x * torch.rsqrt(torch.clamp((x * x).sum(1, keepdim=True), min=1e-12))\n";
  }
  return src;
}

torch::Tensor EmbeddingTable(int64_t rows, int dim, float std, bool zero_row0) {
  torch::Tensor t = torch::randn({std::max<int64_t>(rows, 1), dim}) * std;
  if (zero_row0) t[0].zero_();
  return t;
}

void AddMlp(torch::jit::Module& m, int64_t in, const std::vector<int>& hidden, int out) {
  std::vector<int64_t> widths = {in};
  for (int h : hidden) widths.push_back(h);
  widths.push_back(out);
  for (size_t l = 0; l + 1 < widths.size(); ++l) {
    // Kaiming-uniform like torch.nn.Linear; weights stored [in, out] for addmm(b, x, w).
    const double bound = 1.0 / std::sqrt(static_cast<double>(widths[l]));
    torch::Tensor w = torch::empty({widths[l], widths[l + 1]}).uniform_(-bound, bound);
    torch::Tensor b = torch::zeros({widths[l + 1]});
    m.register_parameter(absl::StrCat("w", l), w.requires_grad_(), false);
    m.register_parameter(absl::StrCat("b", l), b.requires_grad_(), false);
  }
}

int64_t UserInputWidth(const FeatureEncoder& e, const TowerConfig& c) {
  return 2 * c.id_dim() + e.spec().user_categorical_size() * c.cat_dim() +
         e.spec().user_numeric_size();
}
int64_t ItemInputWidth(const FeatureEncoder& e, const TowerConfig& c) {
  return (1 + (e.spec().item_audience_length() > 0) + (e.spec().item_neighbor_length() > 0)) *
             c.id_dim() +
         e.spec().item_categorical_size() * c.cat_dim() + e.spec().item_numeric_size();
}

// The forward's arguments, in the order the trainer and the server pass them.
std::vector<std::string> UserArgs() {
  return {"user_id", "history", "history_mask", "categorical", "numeric"};
}
std::vector<std::string> ItemArgs(const FeatureEncoder& e) {
  std::vector<std::string> args{"item_id"};
  if (e.spec().item_audience_length() > 0) {
    args.insert(args.end(), {"audience", "audience_mask"});
  }
  if (e.spec().item_neighbor_length() > 0) {
    args.insert(args.end(), {"neighbors", "neighbors_mask"});
  }
  args.insert(args.end(), {"categorical", "numeric"});
  return args;
}
std::string ForwardHeader(const std::vector<std::string>& args) {
  return absl::StrCat("    def forward(self, ",
                      absl::StrJoin(args, ", ", [](std::string* out, const std::string& a) {
                        absl::StrAppend(out, a, ": Tensor");
                      }),
                      ") -> Tensor:\n");
}

// The pooled sum's divisor for a clamped count `n` (TowerConfig::sqrt_pooling).
std::string Divisor(const TowerConfig& c) { return c.pooling() == TowerConfig::SQRT ? "torch.sqrt(n)" : "n"; }

}  // namespace

std::string UserTowerSource(const FeatureEncoder& e, const TowerConfig& c) {
  const int nc = e.spec().user_categorical_size(), nn = e.spec().user_numeric_size();
  std::string src =
      ForwardHeader(UserArgs()) +
      "        u = torch.embedding(self.user_emb, user_id)\n"
      "        h = torch.embedding(self.hist_emb, history)\n"
      "        n = torch.clamp(history_mask.sum(1, keepdim=True), min=1.0)\n"
      "        pooled = (h * history_mask.unsqueeze(2)).sum(1) / " + Divisor(c) + "\n"
      "        parts = [u, pooled]\n";
  if (nc > 0) {
    absl::StrAppend(&src, "        parts.append(torch.embedding(self.cat_emb, categorical)",
                    ".reshape(user_id.size(0), ", nc * c.cat_dim(), "))\n");
  }
  if (nn > 0) src += "        parts.append(numeric)\n";
  src += "        x = torch.cat(parts, 1)\n" + MlpSource(c.user_hidden_size(), c.l2_normalize());
  if (c.item_bias()) src += "        x = torch.cat([x, torch.ones_like(x.narrow(1, 0, 1))], 1)\n";
  return src + "        return x\n";
}

std::string ItemTowerSource(const FeatureEncoder& e, const TowerConfig& c, float bias_scale) {
  const int nc = e.spec().item_categorical_size(), nn = e.spec().item_numeric_size();
  std::string src = ForwardHeader(ItemArgs(e)) +
                    "        parts = [torch.embedding(self.item_emb, item_id)]\n";
  if (e.spec().item_audience_length() > 0) {
    src += "        a = torch.embedding(self.aud_emb, audience)\n"
           "        n = torch.clamp(audience_mask.sum(1, keepdim=True), min=1.0)\n"
           "        parts.append((a * audience_mask.unsqueeze(2)).sum(1) / " + Divisor(c) + ")\n";
  }
  if (e.spec().item_neighbor_length() > 0) {
    // Neighbours are rows of the item's own id table: an item's vector is smoothed over the
    // items its users also had, and every neighbour's row learns from the items it neighbours.
    src += "        g = torch.embedding(self.item_emb, neighbors)\n"
           "        n = torch.clamp(neighbors_mask.sum(1, keepdim=True), min=1.0)\n"
           "        parts.append((g * neighbors_mask.unsqueeze(2)).sum(1) / " + Divisor(c) + ")\n";
  }
  if (nc > 0) {
    absl::StrAppend(&src, "        parts.append(torch.embedding(self.cat_emb, categorical)",
                    ".reshape(item_id.size(0), ", nc * c.cat_dim(), "))\n");
  }
  if (nn > 0) src += "        parts.append(numeric)\n";
  src += "        x = torch.cat(parts, 1)\n" + MlpSource(c.item_hidden_size(), c.l2_normalize());
  if (c.item_bias()) {
    absl::StrAppend(&src, "        x = torch.cat([x, torch.embedding(self.item_bias, item_id) * ",
                    absl::StrFormat("%.9g", bias_scale), "], 1)\n");
  }
  return src + "        return x\n";
}

Towers BuildTowers(const FeatureEncoder& e, const TowerConfig& c, float bias_scale) {
  Towers t{torch::jit::Module("UserTower"), torch::jit::Module("ItemTower")};
  torch::Tensor item_table =
      EmbeddingTable(e.num_item_rows(), c.id_dim(), c.init_std(), true).requires_grad_();
  t.user.register_parameter("user_emb",
                            EmbeddingTable(e.num_user_rows(), c.id_dim(), c.init_std(), true)
                                .requires_grad_(),
                            false);
  t.user.register_parameter(
      "hist_emb",
      c.share_item_embeddings()
          ? item_table
          : EmbeddingTable(e.num_item_rows(), c.id_dim(), c.init_std(), true).requires_grad_(),
      false);
  t.user.register_parameter(
      "cat_emb",
      EmbeddingTable(e.num_user_categorical_rows(), c.cat_dim(), c.init_std(), false).requires_grad_(),
      false);
  AddMlp(t.user, UserInputWidth(e, c), {c.user_hidden().begin(), c.user_hidden().end()}, c.dim());
  t.user.define(UserTowerSource(e, c));

  t.item.register_parameter("item_emb", item_table, false);
  if (e.spec().item_audience_length() > 0) {
    t.item.register_parameter(
        "aud_emb", EmbeddingTable(e.num_user_rows(), c.id_dim(), c.init_std(), true).requires_grad_(),
        false);
  }
  t.item.register_parameter(
      "cat_emb",
      EmbeddingTable(e.num_item_categorical_rows(), c.cat_dim(), c.init_std(), false).requires_grad_(),
      false);
  AddMlp(t.item, ItemInputWidth(e, c), {c.item_hidden().begin(), c.item_hidden().end()}, c.dim());
  if (c.item_bias()) {
    t.item.register_parameter(
        "item_bias", torch::zeros({std::max<int64_t>(e.num_item_rows(), 1), 1}).requires_grad_(),
        false);
  }
  t.item.define(ItemTowerSource(e, c, bias_scale));
  return t;
}

Towers EnsembleTowers(const FeatureEncoder& e, const std::vector<const Towers*>& members) {
  Towers t{torch::jit::Module("EnsembleUserTower"), torch::jit::Module("EnsembleItemTower")};
  // 1/sqrt(N) keeps the concatenation of N unit vectors a unit vector.
  const std::string scale =
      absl::StrFormat("%.17g", 1.0 / std::sqrt(static_cast<double>(members.size())));
  auto define = [&](torch::jit::Module& m, const std::vector<std::string>& args,
                    torch::jit::Module Towers::*side) {
    std::vector<std::string> calls;
    for (size_t k = 0; k < members.size(); ++k) {
      const std::string name = absl::StrCat("m", k);
      m.register_module(name, members[k]->*side);
      calls.push_back(absl::StrCat("self.", name, ".forward(", absl::StrJoin(args, ", "), ")"));
    }
    m.define(absl::StrCat(ForwardHeader(args), "        return torch.cat([",
                          absl::StrJoin(calls, ", "), "], 1) * ", scale, "\n"));
  };
  define(t.user, UserArgs(), &Towers::user);
  define(t.item, ItemArgs(e), &Towers::item);
  return t;
}

std::vector<torch::Tensor> Towers::parameters() const {
  std::vector<torch::Tensor> out;
  auto add = [&](const torch::Tensor& p) {
    for (const auto& q : out) {
      if (q.unsafeGetTensorImpl() == p.unsafeGetTensorImpl()) return;
    }
    out.push_back(p);
  };
  for (const auto& p : user.parameters()) add(p);
  for (const auto& p : item.parameters()) add(p);
  return out;
}

}  // namespace recall::trainer
