#include "trainer/checkpoint.h"

#include <filesystem>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace recall::trainer {
namespace {

torch::Tensor StringTensor(const std::string& s) {
  return torch::from_blob(const_cast<char*>(s.data()), {static_cast<int64_t>(s.size())},
                          torch::kUInt8)
      .clone();
}
std::string TensorString(const torch::Tensor& t) {
  torch::Tensor c = t.contiguous();
  return std::string(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), c.numel());
}
void WriteModule(torch::serialize::OutputArchive& ar, const std::string& prefix,
                 const torch::jit::Module& m) {
  for (const auto& p : m.named_parameters()) ar.write(prefix + p.name, p.value.detach());
}
void ReadModule(torch::serialize::InputArchive& ar, const std::string& prefix,
                torch::jit::Module& m) {
  torch::NoGradGuard no_grad;
  for (const auto& p : m.named_parameters()) {
    torch::Tensor t;
    ar.read(prefix + p.name, t);
    p.value.copy_(t);
  }
}
}  // namespace

absl::Status WriteCheckpoint(const std::string& path, const RunState& s) {
  const Schedule::State& sched = s.schedule->state();
  const bool queue = s.objective->queue().capacity() > 0;
  try {
    torch::serialize::OutputArchive ar;
    WriteModule(ar, "user.", s.towers->user);
    WriteModule(ar, "item.", s.towers->item);
    if (queue) {
      const KeyQueue& q = s.objective->queue();
      WriteModule(ar, "key.", s.objective->key_encoder());
      ar.write("queue.keys", q.state_keys());
      ar.write("queue.ids", q.state_ids());
      ar.write("queue.cursor", q.state_cursor());
    }
    // Adam's moments per parameter, in parameter order. (Optimizer::save/load did not give a
    // bit-identical continuation here; the explicit form is also independent of pointer keys.)
    const auto params = s.towers->parameters();
    for (size_t j = 0; j < params.size(); ++j) {
      auto it = s.optimizer->state().find(c10::guts::to_string(params[j].unsafeGetTensorImpl()));
      if (it == s.optimizer->state().end()) continue;
      const auto& st = static_cast<const torch::optim::AdamParamState&>(*it->second);
      ar.write(absl::StrCat("adam.", j, ".step"), torch::tensor({st.step()}, torch::kInt64));
      ar.write(absl::StrCat("adam.", j, ".exp_avg"), st.exp_avg());
      ar.write(absl::StrCat("adam.", j, ".exp_avg_sq"), st.exp_avg_sq());
    }
    torch::Tensor ex = torch::empty({static_cast<int64_t>(s.examples->size()), 2}, torch::kInt64);
    auto e = ex.accessor<int64_t, 2>();
    for (size_t i = 0; i < s.examples->size(); ++i) {
      e[i][0] = (*s.examples)[i].first;
      e[i][1] = (*s.examples)[i].second;
    }
    ar.write("examples", ex);
    std::ostringstream rng;
    rng << *s.rng;
    ar.write("rng", StringTensor(rng.str()));
    ar.write("cursor", torch::tensor({static_cast<int64_t>(*s.next_epoch), *s.resume_step,
                                      static_cast<int64_t>(sched.best_epoch)}, torch::kInt64));
    ar.write("best_val_recall", torch::tensor({sched.best_val_recall}, torch::kFloat64));
    ar.write("plateau", torch::tensor({static_cast<int64_t>(sched.stale_epochs),
                                       static_cast<int64_t>(sched.lr_decays_done)}, torch::kInt64));
    ar.write("learning_rate", torch::tensor({sched.learning_rate}, torch::kFloat64));
    for (size_t i = 0; i < sched.best_params.size(); ++i) {
      ar.write(absl::StrCat("best.", i), sched.best_params[i]);
    }
    for (size_t i = 0; i < sched.average_params.size(); ++i) {
      ar.write(absl::StrCat("average.", i), sched.average_params[i]);
    }
    if (!sched.average_params.empty()) {
      ar.write("average_updates", torch::tensor({sched.average_updates}, torch::kInt64));
    }
    const std::string tmp = path + ".tmp";
    ar.save_to(tmp);
    std::filesystem::rename(tmp, path);
  } catch (const std::exception& ex) {
    return absl::InternalError(absl::StrCat("writing checkpoint ", path, ": ", ex.what()));
  }
  return absl::OkStatus();
}

absl::Status ReadCheckpoint(const std::string& path, const RunState& s,
                            const std::string* contents) {
  Schedule::State sched = s.schedule->state();
  const bool queue = s.objective->queue().capacity() > 0;
  try {
    torch::serialize::InputArchive ar;
    if (contents != nullptr) {
      ar.load_from(contents->data(), contents->size());
    } else {
      ar.load_from(path);
    }
    torch::Tensor ex;
    ar.read("examples", ex);
    if (ex.size(0) != static_cast<int64_t>(s.examples->size())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "checkpoint ", path, " has ", ex.size(0), " train examples, this dataset ",
          s.examples->size(), ": it belongs to another dataset or validation split"));
    }
    ReadModule(ar, "user.", s.towers->user);
    ReadModule(ar, "item.", s.towers->item);
    if (queue) {
      ReadModule(ar, "key.", s.objective->key_encoder());
      torch::Tensor k, i, c;
      ar.read("queue.keys", k);
      ar.read("queue.ids", i);
      ar.read("queue.cursor", c);
      if (k.size(0) != s.objective->queue().capacity()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "checkpoint ", path, " has a queue of ", k.size(0), " keys, queue_size is ",
            s.objective->queue().capacity()));
      }
      s.objective->queue().Restore(k, i, c);
    }
    const auto params = s.towers->parameters();
    s.optimizer->state().clear();
    for (size_t j = 0; j < params.size(); ++j) {
      torch::Tensor step, m, v;
      if (!ar.try_read(absl::StrCat("adam.", j, ".step"), step)) continue;  // never stepped
      ar.read(absl::StrCat("adam.", j, ".exp_avg"), m);
      ar.read(absl::StrCat("adam.", j, ".exp_avg_sq"), v);
      auto st = std::make_unique<torch::optim::AdamParamState>();
      st->step(step.item<int64_t>());
      st->exp_avg(m.clone());
      st->exp_avg_sq(v.clone());
      s.optimizer->state()[c10::guts::to_string(params[j].unsafeGetTensorImpl())] = std::move(st);
    }
    auto e = ex.accessor<int64_t, 2>();
    for (size_t j = 0; j < s.examples->size(); ++j) (*s.examples)[j] = {e[j][0], e[j][1]};
    torch::Tensor rng, cursor, best;
    ar.read("rng", rng);
    std::istringstream in(TensorString(rng));
    in >> *s.rng;
    ar.read("cursor", cursor);
    *s.next_epoch = static_cast<int>(cursor[0].item<int64_t>());
    *s.resume_step = cursor[1].item<int64_t>();
    sched.best_epoch = static_cast<int>(cursor[2].item<int64_t>());
    ar.read("best_val_recall", best);
    sched.best_val_recall = best.item<double>();
    torch::Tensor plateau, lr;
    if (ar.try_read("plateau", plateau) && ar.try_read("learning_rate", lr)) {
      sched.stale_epochs = static_cast<int>(plateau[0].item<int64_t>());
      sched.lr_decays_done = static_cast<int>(plateau[1].item<int64_t>());
      sched.learning_rate = lr.item<double>();
    }
    sched.best_params.clear();
    if (sched.best_epoch > 0) {
      for (size_t j = 0; j < params.size(); ++j) {
        torch::Tensor t;
        ar.read(absl::StrCat("best.", j), t);
        sched.best_params.push_back(t);
      }
    }
    if (!sched.average_params.empty()) {
      torch::Tensor updates;
      if (!ar.try_read("average_updates", updates)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "checkpoint ", path, " has no weight average: it was written without "
            "--weight_average_decay"));
      }
      sched.average_updates = updates.item<int64_t>();
      for (size_t j = 0; j < sched.average_params.size(); ++j) {
        torch::Tensor t;
        ar.read(absl::StrCat("average.", j), t);
        sched.average_params[j].copy_(t);
      }
    }
    s.schedule->Restore(std::move(sched));
  } catch (const std::exception& ex) {
    return absl::DataLossError(absl::StrCat("reading checkpoint ", path, ": ", ex.what()));
  }
  return absl::OkStatus();
}

}  // namespace recall::trainer
