// The training configuration's one definition (proto/recall/v1/train_config.proto) and its
// resolution (model/train_config.h, trainer/command_line.h): presets, option keys, overlays,
// the retrain override marks, the generated --help, and the old flag spellings.
#include "model/train_config.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <set>

#include "trainer/command_line.h"

namespace recall {
namespace {
using google::protobuf::util::MessageDifferencer;
using v1::TrainConfig;

// What trainer/presets/gowalla.flags said before presets became textprotos.
constexpr char kOldGowallaFlags[] = R"(# recall-train preset
--dataset=lightgcn:../shared/data/gowalla
--batch_size=2048
--temperature=0.1
--lr=2e-3
--logq
--item_bias
--logq_weight=1.25
--item_audience_length=50
--item_neighbor_length=10
--history_dropout=0.5
--item_ssl_weight=0.3
--history_length=100
--dim=128
--id_dim=128
--validation_users=5000
--patience=2
--epochs=40
--index_factory=HNSW32
--ensemble=3
--eval_audience_length=1000
)";

TEST(TrainConfigTest, EveryPresetParsesAndPassesTheChecks) {
  EXPECT_EQ(PresetNames(), (std::vector<std::string>{"default", "gowalla", "smoke"}));
  for (const std::string& name : PresetNames()) {
    auto c = LoadPreset(name);
    ASSERT_TRUE(c.ok()) << name << ": " << c.status();
    EXPECT_TRUE(CheckTrainConfig(*c).ok()) << name << ": " << CheckTrainConfig(*c);
  }
  auto missing = LoadPreset("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("default, gowalla, smoke"), std::string::npos);
  // `default` is the message's own defaults; logQ is on there.
  EXPECT_TRUE(MessageDifferencer::Equals(*LoadPreset("default"), TrainConfig()));
  EXPECT_TRUE(TrainConfig().logq_correction());
}

TEST(TrainConfigTest, EveryOptionHasAUniqueFlagNameADocCommentAndADefault) {
  const std::string help = TrainConfigHelp();
  std::set<std::string> names;
  const google::protobuf::Descriptor* messages[] = {TrainConfig::descriptor(),
                                                    v1::TowerConfig::descriptor()};
  for (const auto* d : messages) {
    for (int i = 0; i < d->field_count(); ++i) {
      const auto* f = d->field(i);
      if (f->message_type() != nullptr) continue;
      EXPECT_TRUE(names.insert(f->name()).second) << f->name() << " is ambiguous as a flag";
      EXPECT_TRUE(IsTrainOption(f->name())) << f->name();
      // The doc comment follows the option's line in --help.
      const size_t at = help.find("  --" + f->name() + " (");
      ASSERT_NE(at, std::string::npos) << f->name();
      const size_t eol = help.find('\n', at);
      EXPECT_EQ(help.compare(eol + 1, 6, "      "), 0) << f->name() << " has no doc comment";
    }
  }
  EXPECT_NE(help.find("--learning_rate (double, default 0.001, also --lr, retrain override)"),
            std::string::npos)
      << help;
  EXPECT_NE(help.find("--l2_normalize (tower.l2_normalize, bool, default true)"),
            std::string::npos);
}

TEST(TrainConfigTest, OptionsSetTypedFieldsByNamePathOrLegacyFlag) {
  TrainConfig c;
  ASSERT_TRUE(SetTrainOption("lr", "0.002", &c).ok());
  ASSERT_TRUE(SetTrainOption("dim", "32", &c).ok());
  ASSERT_TRUE(SetTrainOption("tower.id_dim", "16", &c).ok());
  ASSERT_TRUE(SetTrainOption("pooling", "sqrt", &c).ok());
  ASSERT_TRUE(SetTrainOption("loss", "FULL_SOFTMAX", &c).ok());
  ASSERT_TRUE(SetTrainOption("user_hidden", "64, 32", &c).ok());
  ASSERT_TRUE(SetTrainOption("logq", "false", &c).ok());
  ASSERT_TRUE(SetTrainOption("index_factory", "IVF64,Flat", &c).ok());
  EXPECT_DOUBLE_EQ(c.learning_rate(), 0.002);
  EXPECT_EQ(c.tower().dim(), 32);
  EXPECT_EQ(c.tower().id_dim(), 16);
  EXPECT_EQ(c.tower().pooling(), v1::TowerConfig::SQRT);
  EXPECT_EQ(c.loss(), TrainConfig::FULL_SOFTMAX);
  EXPECT_EQ(std::vector<int>(c.tower().user_hidden().begin(), c.tower().user_hidden().end()),
            (std::vector<int>{64, 32}));
  EXPECT_FALSE(c.logq_correction());
  EXPECT_EQ(c.index_factory(), "IVF64,Flat");
  ASSERT_TRUE(SetTrainOption("user_hidden", "", &c).ok());
  EXPECT_EQ(c.tower().user_hidden_size(), 0);

  auto bad = SetTrainOption("batch_size", "lots", &c);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("batch_size: 'lots' is not an integer"), std::string::npos) << bad;
  EXPECT_NE(SetTrainOption("pooling", "max", &c).message().find("one of mean|sqrt"),
            std::string::npos);
  EXPECT_NE(SetTrainOption("temperature", "nan", &c).message().find("finite"), std::string::npos);
  EXPECT_NE(SetTrainOption("model_base", "/x", &c).message().find("no such training option"),
            std::string::npos);
}

TEST(TrainConfigTest, OverlayReplacesListsAndKeepsUnsetFields) {
  TrainConfig base = *LoadPreset("gowalla");
  base.mutable_tower()->add_user_hidden(256);
  base.mutable_tower()->add_user_hidden(128);
  TrainConfig o;
  o.set_epochs(3);
  o.mutable_tower()->add_user_hidden(64);
  o.mutable_tower()->set_dim(32);
  OverlayTrainConfig(o, &base);
  EXPECT_EQ(base.epochs(), 3);
  EXPECT_EQ(base.tower().dim(), 32);
  EXPECT_EQ(base.tower().id_dim(), 128) << "not in the overlay: the preset's";
  EXPECT_TRUE(base.tower().item_bias());
  ASSERT_EQ(base.tower().user_hidden_size(), 1);
  EXPECT_EQ(base.tower().user_hidden(0), 64);
  EXPECT_DOUBLE_EQ(base.logq_weight(), 1.25);
}

TEST(TrainConfigTest, RetrainOverridesAreLimitedToMarkedFieldsAndNamed) {
  TrainConfig ok;
  ok.set_epochs(5);
  ok.set_logq_weight(1.25);
  ok.set_item_audience_length(50);
  ok.set_history_dropout(0.5);
  ok.set_ensemble(3);
  ok.mutable_tower()->set_item_bias(true);
  EXPECT_TRUE(CheckRetrainOverrides(ok).ok()) << CheckRetrainOverrides(ok);
  TrainConfig refused = ok;
  refused.mutable_tower()->set_l2_normalize(false);
  auto s = CheckRetrainOverrides(refused);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message().rfind("config.tower.l2_normalize: not overridable", 0), 0u) << s;
  EXPECT_NE(s.message().find("tower.item_bias"), std::string::npos) << "lists what is allowed";
}

TEST(TrainConfigTest, ResolvedConfigSetsEveryFieldAndRoundTripsAsText) {
  const TrainConfig r = ResolveTrainConfig(*LoadPreset("smoke"));
  EXPECT_TRUE(r.has_momentum());
  EXPECT_TRUE(r.tower().has_pooling());
  EXPECT_EQ(r.epochs(), 3);
  auto again = ParseTrainConfigText(TrainConfigText(r), "round trip");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(MessageDifferencer::Equals(*again, r));
  auto broken = ParseTrainConfigText("epochs: 3\nbatch_size: many\n", "my.textproto");
  EXPECT_EQ(broken.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(broken.status().message().rfind("my.textproto:2:", 0), 0u) << broken.status();
}

TEST(TrainConfigTest, CheckNamesTheField) {
  TrainConfig c;
  c.set_batch_size(1);
  EXPECT_EQ(CheckTrainConfig(c).message(), "batch_size must be >= 2");
  c = TrainConfig();
  c.set_eval_audience_length(10);
  EXPECT_NE(CheckTrainConfig(c).message().find("eval_audience_length"), std::string::npos);
  c = TrainConfig();
  c.set_lr_decay(0.5);
  c.set_validation_users(0);
  EXPECT_NE(CheckTrainConfig(c).message().find("lr_decay"), std::string::npos);
}

std::vector<std::string> Argv(std::initializer_list<std::string> args) {
  return std::vector<std::string>(args);
}

TEST(TrainConfigTest, CommandLineAppliesOptionsInOrderAndLeavesRunFlags) {
  auto split = trainer::SplitTrainArgs(Argv({"recall-train", "--preset=smoke", "--epochs=7",
                                             "--nologq", "--item_bias", "--set", "dim=48",
                                             "--set=tower.id_dim=24", "--model_base=/tmp/m",
                                             "--batch_size", "64", "--epochs=9"}));
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_EQ(split->rest, Argv({"recall-train", "--preset=smoke", "--model_base=/tmp/m"}));
  trainer::ConfigSources sources;
  sources.preset = "smoke";
  sources.overrides_text = "epochs: 5 temperature: 0.2";
  sources.options = split->options;
  auto c = trainer::ConfigFromSources(sources);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->epochs(), 9) << "the last one wins";
  EXPECT_DOUBLE_EQ(c->temperature(), 0.2) << "from --overrides";
  EXPECT_FALSE(c->logq_correction());
  EXPECT_TRUE(c->tower().item_bias());
  EXPECT_EQ(c->tower().dim(), 48);
  EXPECT_EQ(c->tower().id_dim(), 24);
  EXPECT_EQ(c->batch_size(), 64);
  EXPECT_EQ(c->index_factory(), "Flat") << "the smoke preset's";

  sources.options = {{"batch_size", "1"}};
  EXPECT_EQ(trainer::ConfigFromSources(sources).status().message(), "batch_size must be >= 2");
  sources.options = {};
  sources.preset = "nope";
  EXPECT_NE(trainer::ConfigFromSources(sources).status().message().find("--preset: unknown"),
            std::string::npos);
  EXPECT_FALSE(trainer::SplitTrainArgs(Argv({"recall-train", "--set", "novalue"})).ok());
  EXPECT_TRUE(trainer::SplitTrainArgs(Argv({"recall-train", "--helpfull"}))->help);
}

TEST(TrainConfigTest, TheOldGowallaFlagfileResolvesToTheGowallaPreset) {
  const std::string path = ::testing::TempDir() + "/gowalla_old.flags";
  {
    FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(kOldGowallaFlags, f);
    std::fclose(f);
  }
  auto split = trainer::SplitTrainArgs(Argv({"recall-train", "--flagfile=" + path}));
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_EQ(split->rest, Argv({"recall-train", "--dataset=lightgcn:../shared/data/gowalla"}));
  trainer::ConfigSources old_flags;
  old_flags.options = split->options;
  auto from_flags = trainer::ConfigFromSources(old_flags);
  ASSERT_TRUE(from_flags.ok()) << from_flags.status();
  trainer::ConfigSources preset;
  preset.preset = "gowalla";
  auto from_preset = trainer::ConfigFromSources(preset);
  ASSERT_TRUE(from_preset.ok());
  std::string diff;
  MessageDifferencer d;
  d.ReportDifferencesToString(&diff);
  // The preset has since moved from a fixed HNSW32 to an index tuned for Recall@20.
  TrainConfig want = ResolveTrainConfig(*from_preset), got = ResolveTrainConfig(*from_flags);
  EXPECT_EQ(got.index_factory(), "HNSW32");
  EXPECT_EQ(want.index_factory(), "auto");
  for (TrainConfig* c : {&want, &got}) {
    c->clear_index_factory();
    c->clear_index_recall_k();
    c->clear_index_recall_target();
  }
  EXPECT_TRUE(d.Compare(want, got)) << diff;

  // The removed file itself names what replaced it.
  auto gone = trainer::SplitTrainArgs(
      Argv({"recall-train", "--flagfile=/nonexistent/trainer/presets/gowalla.flags"}));
  EXPECT_NE(gone.status().message().find("--preset=gowalla"), std::string::npos) << gone.status();
}

}  // namespace
}  // namespace recall
