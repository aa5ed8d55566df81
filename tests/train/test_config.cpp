// The INI config system: load, overrides, every error path (each message names the problem),
// dump/reload round trip, diff, and docs/config.md in step with the schema.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "train/config.h"

namespace tstl {
namespace {

std::string write_file(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "tstl_config_" + std::to_string(getpid()) + "_" + name;
  std::ofstream(path) << text;
  return path;
}

// Runs fn, expects a tstl::Error whose message contains every one of `parts`.
template <class Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected an error mentioning " << parts[0];
  } catch (const Error& e) {
    for (const std::string& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

const char* kExample =
    "# a small run\n"
    "[model]\n"
    "variant = alibi\n"
    "layers = 2\n"
    "bias = no\n"
    "[train]\n"
    "max_steps = 40   # comment after a value\n"
    "out_dir = runs/x\n"
    "init_from =\n"
    "[optim]\n"
    "lr = 6e-4\n"
    "no_decay = *.bias , *norm*\n"
    "[eval]\n"
    "lengths = 64, 128\n";

TEST(Config, LoadsFileWithDefaultsForTheRest) {
  const Config cfg = load_config(write_file("a.cfg", kExample));
  EXPECT_EQ(cfg.get<std::string>("model.variant"), "alibi");
  EXPECT_EQ(cfg.get<int64_t>("model.layers"), 2);
  EXPECT_EQ(cfg.get<int>("model.layers"), 2);
  EXPECT_FALSE(cfg.get<bool>("model.bias"));
  EXPECT_EQ(cfg.get<int64_t>("train.max_steps"), 40);
  EXPECT_EQ(cfg.get<std::string>("train.out_dir"), "runs/x");
  EXPECT_EQ(cfg.get<std::string>("train.init_from"), "");
  EXPECT_DOUBLE_EQ(cfg.get<double>("optim.lr"), 6e-4);
  EXPECT_EQ(cfg.get<std::vector<std::string>>("optim.no_decay"), (std::vector<std::string>{"*.bias", "*norm*"}));
  EXPECT_EQ(cfg.get<std::vector<int64_t>>("eval.lengths"), (std::vector<int64_t>{64, 128}));
  EXPECT_DOUBLE_EQ(cfg.get<double>("optim.beta2"), 0.95);  // default
  EXPECT_EQ(cfg.get<int64_t>("train.seed"), 1234);
  EXPECT_DOUBLE_EQ(cfg.get<double>("train.seed"), 1234.0);  // integers read as numbers too
  EXPECT_TRUE(cfg.is_default("train.seed"));
  EXPECT_FALSE(cfg.is_default("model.layers"));
  expect_error([&] { cfg.get<bool>("train.seed"); }, {"train.seed", "integer"});
  expect_error([&] { cfg.get<int64_t>("train.sed"); }, {"train.sed", "train.seed"});
}

TEST(Config, CommandLineOverridesBothForms) {
  const std::string path = write_file("b.cfg", kExample);
  const Config cfg = load_config(path, {"--train.max_steps", "20", "--optim.lr=1e-3", "--model.bias", "true",
                                        "--train.max_steps=30", "--train.max_tokens", "2e9"});
  EXPECT_EQ(cfg.get<int64_t>("train.max_steps"), 30);  // the later one wins
  EXPECT_DOUBLE_EQ(cfg.get<double>("optim.lr"), 1e-3);
  EXPECT_TRUE(cfg.get<bool>("model.bias"));
  EXPECT_EQ(cfg.get<int64_t>("train.max_tokens"), 2000000000);
  EXPECT_EQ(load_config("", {"--train.seed", "7"}).get<int64_t>("train.seed"), 7);  // defaults + overrides
}

TEST(Config, UnknownKeyInFileNamesKeyFileLineAndSuggestion) {
  const std::string path = write_file("c.cfg", "[train]\nseed = 1\nmax_step = 40\n");
  expect_error([&] { load_config(path); }, {"unknown config key 'train.max_step'", path, "line 3", "train.max_steps"});
  const std::string wrong_section = write_file("d.cfg", "[optim]\nseed = 1\n");
  expect_error([&] { load_config(wrong_section); }, {"optim.seed", "train.seed"});
  const std::string unknown_section = write_file("e.cfg", "[trian]\nseed = 1\n");
  expect_error([&] { load_config(unknown_section); }, {"trian.seed", "train.seed"});
  const std::string twice = write_file("f.cfg", "[train]\nseed = 1\nseed = 2\n");
  expect_error([&] { load_config(twice); }, {"train.seed", "twice"});
}

// Checkpoints written before a key was renamed store the old name in their saved config.
TEST(Config, RenamedKeyInAFileIsReadAsItsReplacement) {
  const std::string old = write_file("old.cfg", "[train]\ncpu_peak_gflops = 100\n");
  EXPECT_EQ(load_config(old).get<double>("train.peak_flops"), 1e11);
  const std::string both = write_file("both.cfg", "[train]\npeak_flops = 5e10\ncpu_peak_gflops = 100\n");
  expect_error([&] { load_config(both); }, {"train.peak_flops", "twice", "train.cpu_peak_gflops"});
  const std::string bad = write_file("bad.cfg", "[train]\ncpu_peak_gflops = fast\n");
  expect_error([&] { load_config(bad); }, {"train.cpu_peak_gflops", "train.peak_flops", "number", "fast"});
  expect_error([] { load_config("", {"--train.cpu_peak_gflops", "100"}); }, {"unknown config key", "train.peak_flops"});
}

TEST(Config, UnknownKeyOnCommandLine) {
  expect_error([] { load_config("", {"--train.max_step", "40"}); },
               {"command line", "unknown config key 'train.max_step'", "train.max_steps"});
  expect_error([] { load_config("", {"--train.max=40"}); }, {"train.max'"});  // no prefix guessing
  expect_error([] { load_config("", {"--train.seed"}); }, {"command line", "train.seed"});
  expect_error([] { load_config("", {"40"}); }, {"command line", "40"});
}

TEST(Config, WrongTypeNamesKeyValueAndExpectedType) {
  const std::string path = write_file("g.cfg", "[train]\nbatch_size = eight\n");
  expect_error([&] { load_config(path); }, {path, "line 2", "train.batch_size", "'eight'", "an integer"});
  expect_error([] { load_config("", {"--optim.lr", "fast"}); }, {"command line", "optim.lr", "'fast'", "a number"});
  expect_error([] { load_config("", {"--train.seed", "1.5"}); }, {"train.seed", "'1.5'", "an integer"});
  expect_error([] { load_config("", {"--model.bias", "maybe"}); }, {"model.bias", "'maybe'", "boolean"});
  expect_error([] { load_config("", {"--eval.lengths", "64,x"}); }, {"eval.lengths", "integers"});
}

TEST(Config, BadEnumListsTheChoices) {
  const std::string path = write_file("h.cfg", "[model]\nvariant = yarn\n");
  expect_error([&] { load_config(path); }, {"model.variant", "'yarn'", "rope|alibi|keynorm|coca|coca-strict"});
  expect_error([] { load_config("", {"--train.resume", "maybe"}); }, {"train.resume", "auto|must|never"});
  expect_error([] { load_config("", {"--optim.decay", "exp"}); }, {"optim.decay", "cosine|linear"});
}

TEST(Config, MissingFileIsAClearError) {
  expect_error([] { load_config("/nonexistent/dir/run.cfg"); }, {"config file '/nonexistent/dir/run.cfg' does not exist"});
  const std::string syntax = write_file("i.cfg", "[train]\nthis line has no equals sign\n");
  expect_error([&] { load_config(syntax); }, {syntax});
}

TEST(Config, DumpReloadsIdentically) {
  const Config cfg = load_config(write_file("j.cfg", kExample), {"--optim.lr", "0.00030000000000000003",
                                                                  "--data.path", "data/corpus.h5"});
  const std::string text = cfg.dump();
  const Config again = load_config(write_file("k.cfg", text));
  EXPECT_EQ(again.values(), cfg.values());
  EXPECT_EQ(again.dump().substr(again.dump().find('\n')), text.substr(text.find('\n')));
  EXPECT_EQ(again.get<double>("optim.lr"), 0.00030000000000000003);  // bit-exact
  EXPECT_TRUE(cfg.diff(again, {""}).empty());
  // Every key appears, sections in order.
  for (const ConfigKey& k : config_schema()) EXPECT_EQ(cfg.values().count(k.name), 1u);
  EXPECT_LT(text.find("[model]"), text.find("[data]"));
  EXPECT_LT(text.find("[optim]"), text.find("[eval]"));
  EXPECT_NE(text.find("variant = alibi\n"), std::string::npos);
  EXPECT_NE(text.find("init_from = \n"), std::string::npos);
}

TEST(Config, DiffListsDifferingKeysUnderPrefixes) {
  const Config a = load_config("", {"--model.layers", "2", "--optim.lr", "1e-3"});
  const Config b = load_config("", {"--model.layers", "3", "--data.tokenizer", "spm.model", "--optim.lr", "1e-4",
                                    "--model.norm_eps", "0.00001"});  // the default, spelled differently
  const auto d = a.diff(b, {"model.", "data.tokenizer"});
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].key, "model.layers");
  EXPECT_EQ(d[0].value, "2");
  EXPECT_EQ(d[0].other_value, "3");
  EXPECT_EQ(d[1].key, "data.tokenizer");
  EXPECT_EQ(a.diff(b, {"optim."}).size(), 1u);
}

TEST(Config, DocsListEveryKey) {
  std::ifstream in(std::string(TSTL_SOURCE_DIR) + "/docs/config.md");
  ASSERT_TRUE(in) << "docs/config.md is missing";
  std::stringstream doc;
  doc << in.rdbuf();
  EXPECT_NE(doc.str().find(config_reference_markdown()), std::string::npos)
      << "docs/config.md is out of date with config_schema(); regenerate its table from config_reference_markdown()";
  EXPECT_NE(config_help().find("train.max_steps"), std::string::npos);
}

}  // namespace
}  // namespace tstl
