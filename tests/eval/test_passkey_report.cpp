// Passkey accuracy with constructed models (an oracle that reads the key from the prompt: 1.0; a
// decoder whose LM head always prefers 'x': 0.0), the answer parser, JSON, and `tstl report`.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "data/tokenizer.h"
#include "eval/eval_test_util.h"
#include "eval/passkey.h"
#include "eval/report.h"

namespace fs = std::filesystem;

namespace tstl {
namespace {

TEST(PasskeyAnswer, FirstCompleteFiveDigitNumber) {
  EXPECT_EQ(first_five_digit_number(" 12345.", false), "12345");
  EXPECT_EQ(first_five_digit_number(" 12345", false), "");  // might still grow
  EXPECT_EQ(first_five_digit_number(" 12345", true), "12345");
  EXPECT_EQ(first_five_digit_number(" 123456.", true), "");
  EXPECT_EQ(first_five_digit_number("7 is 54321 or", true), "54321");
  EXPECT_EQ(first_five_digit_number("no digits", true), "");
}

// Reads the key out of the prompt and answers " KEY." one token at a time, honouring `stop`.
std::vector<int32_t> oracle(const Tokenizer& tok, const std::vector<int32_t>& prompt, int64_t max_new,
                            const StopPredicate& stop) {
  const std::string text = tok.decode(prompt);
  const std::string marker = "The passkey is ";
  const size_t at = text.find(marker);
  EXPECT_NE(at, std::string::npos);
  const std::vector<int32_t> answer = tok.encode(" " + text.substr(at + marker.size(), 5) + ". Remember");
  std::vector<int32_t> out;
  for (int32_t id : answer) {
    if (static_cast<int64_t>(out.size()) == max_new) break;
    out.push_back(id);
    if (stop(out)) break;
  }
  return out;
}

TEST(Passkey, OracleScoresOneAndANonDigitModelZero) {
  const auto tok = make_tokenizer("byte");
  PasskeyOptions options;
  options.lengths = {260, 300};
  options.cases = 7;
  options.seed = 3;
  int64_t calls = 0;
  const auto results = evaluate_passkey(
      *tok,
      [&](const std::vector<int32_t>& p, int64_t max_new, const StopPredicate& stop) {
        ++calls;
        EXPECT_EQ(static_cast<int64_t>(p.size()), options.lengths[static_cast<size_t>((calls - 1) / 7)]);
        return oracle(*tok, p, max_new, stop);
      },
      options);
  ASSERT_EQ(results.size(), 2u);
  for (const auto& r : results) {
    EXPECT_EQ(r.cases, 7);
    EXPECT_EQ(r.correct, 7);
    EXPECT_EQ(r.accuracy, 1.0);
    for (const std::string& a : r.answers) EXPECT_EQ(a.size(), 7u);  // " 12345." then stopped: decided
  }

  // A model that knows the wrong key scores 0 too.
  const auto wrong = evaluate_passkey(*tok, [&](const std::vector<int32_t>&, int64_t, const StopPredicate&) {
    return tok->encode(" 00000.");
  }, options);
  EXPECT_EQ(wrong[0].accuracy, 0.0);

  // A real Decoder whose LM head always favours 'x': zero weights, final norm bias 1, row 'x' of
  // the head all ones, so logit('x') = hidden and every other logit is 0.
  ModelConfig c = testing::tiny_config(Variant::Rope, 259);
  Decoder model(c);
  model.parameter("gpt_neox.final_layer_norm.bias").fill_(1.0);
  std::vector<float> head(static_cast<size_t>(c.vocab_size * c.hidden), 0.0f);  // (V, C)
  std::fill(head.begin() + 'x' * c.hidden, head.begin() + ('x' + 1) * c.hidden, 1.0f);
  model.parameter("embed_out.weight").copy_(Tensor::from_vector(head, {c.vocab_size, c.hidden}));
  options.cases = 3;
  const auto none = evaluate_passkey(*tok, decoder_continuation(model), options);
  for (const auto& r : none) {
    EXPECT_EQ(r.accuracy, 0.0);
    for (const std::string& a : r.answers) EXPECT_EQ(a, "xxxxxxxx");  // ran the full 8 tokens
  }
}

TEST(Json, WriterAndParserRoundTrip) {
  JsonWriter w;
  w.begin_object();
  w.field("s", "a \"quoted\"\n\\ line");
  w.field("n", 0.1);
  w.field("b", true);
  w.field("inf", INFINITY);
  w.key("list");
  w.number_array({1, 2.5, -3e-7});
  w.key("empty");
  w.begin_object();
  w.end_object();
  w.end_object();
  const JsonValue v = parse_json(w.str(), "test");
  EXPECT_EQ(v.get_string("s"), "a \"quoted\"\n\\ line");
  EXPECT_EQ(v.get_number("n"), 0.1);
  EXPECT_TRUE(v.find("b")->boolean);
  EXPECT_EQ(v.find("inf")->type, JsonValue::Type::Null);
  ASSERT_EQ(v.get_array("list").array.size(), 3u);
  EXPECT_EQ(v.get_array("list").array[2].number, -3e-7);
  EXPECT_EQ(parse_json("{\"u\": \"\\u00e9\\ud83d\\ude00\"}", "t").get_string("u"), "\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_THROW(parse_json("{\"a\": 1,}", "bad.json"), Error);
  EXPECT_THROW(parse_json("[1 2]", "bad.json"), Error);
  EXPECT_THROW(v.get_number("s"), Error);
}

struct TempDir {
  fs::path path;
  TempDir() {
    char buf[] = "/tmp/tstl_eval_test_XXXXXX";
    path = mkdtemp(buf);
  }
  ~TempDir() { fs::remove_all(path); }
};

void write_file(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

bool have_matplotlib() {
  return access("/usr/bin/python3", X_OK) == 0 && std::system("/usr/bin/python3 -c 'import matplotlib' 2>/dev/null") == 0;
}

TEST(Report, TwoJsonFilesGiveTheTablesAndPlots) {
  TempDir dir;
  write_file(dir.path / "rope_run" / "eval" / "ppl_none.json",
             R"({"kind":"ppl","variant":"rope","train_len":128,"method":"none","results":[)"
             R"({"length":128,"tokens":100,"nll":2.0,"ppl":7.389},{"length":512,"tokens":100,"nll":3.5,"ppl":33.12}]})");
  write_file(dir.path / "alibi_passkey.json",
             R"({"kind":"passkey","variant":"alibi","train_len":128,"method":"none","results":[)"
             R"({"length":256,"cases":10,"correct":9,"accuracy":0.9},{"length":1024,"cases":10,"correct":2,"accuracy":0.2}]})");
  write_file(dir.path / "rope_run" / "eval" / "notes.json", R"({"kind":"attention"})");  // skipped
  const ReportOutcome out = write_report({(dir.path / "rope_run").string(), (dir.path / "alibi_passkey.json").string()},
                                         (dir.path / "report").string(), "/usr/bin/python3",
                                         std::string(TSTL_SOURCE_DIR) + "/scripts/plot_report.py");
  std::ifstream in(out.markdown);
  const std::string md((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(md.find("| run | variant | method | train len | 128 | 512 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| rope_run | rope | none | 128 | 7.39 | *33.12* |"), std::string::npos) << md;
  EXPECT_NE(md.find("| alibi_passkey | alibi | none | 128 | *0.90* | *0.20* |"), std::string::npos) << md;
  if (have_matplotlib()) {
    EXPECT_TRUE(out.warning.empty()) << out.warning;
    EXPECT_TRUE(fs::exists(dir.path / "report" / "ppl.png"));
    EXPECT_TRUE(fs::exists(dir.path / "report" / "passkey.png"));
    EXPECT_GT(fs::file_size(dir.path / "report" / "ppl.png"), 1000u);
  }
  // Without Python: the markdown, a warning, no error.
  const ReportOutcome bare = write_report({(dir.path / "rope_run").string()}, (dir.path / "bare").string(),
                                          "/nonexistent/python3");
  EXPECT_TRUE(fs::exists(bare.markdown));
  EXPECT_TRUE(bare.plots.empty());
  EXPECT_NE(bare.warning.find("plots skipped"), std::string::npos);
  EXPECT_THROW(write_report({(dir.path / "missing").string()}, (dir.path / "x").string()), Error);
}

// Runs named NAME-seedN pool into one row: mean and sample standard deviation by hand
// (10 and 14: mean 12, sd sqrt(8) = 2.83); a run without the suffix, or "seedless-seedX", stays
// a row of its own; the plot data carries the spread.
TEST(Report, SeedsArePooledIntoMeanAndSpread) {
  TempDir dir;
  const auto ppl = [](const std::string& ppl_at_512) {
    return R"({"kind":"ppl","variant":"rope","train_len":128,"method":"none","results":[)"
           R"({"length":128,"tokens":100,"nll":2.0,"ppl":7.0},{"length":512,"tokens":100,"nll":2.5,"ppl":)" +
           ppl_at_512 + "}]}";
  };
  write_file(dir.path / "rope-seed1" / "eval" / "ppl-none.json", ppl("10"));
  write_file(dir.path / "rope-seed2" / "eval" / "ppl-none.json", ppl("14"));
  write_file(dir.path / "rope-seedX" / "eval" / "ppl-none.json", ppl("20"));
  const std::vector<EvalRecord> records = collect_eval_records(
      {(dir.path / "rope-seed1").string(), (dir.path / "rope-seed2").string(), (dir.path / "rope-seedX").string()});
  const std::string md = report_markdown(records);
  EXPECT_NE(md.find("| run | variant | method | train len | seeds | 128 | 512 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| rope | rope | none | 128 | 2 | 7.00 ± 0.00 | *12.00 ± 2.83* |"), std::string::npos) << md;
  EXPECT_NE(md.find("| rope-seedX | rope | none | 128 | 1 | 7.00 ± 0.00 | *20.00 ± 0.00* |"), std::string::npos) << md;
  const JsonValue data = parse_json(report_plot_data(records), "report_data.json");
  const JsonValue& pooled = data.get_array("ppl").array.at(0);
  EXPECT_EQ(pooled.get_string("label"), "rope");
  EXPECT_EQ(pooled.get_number("seeds"), 2);
  EXPECT_EQ(pooled.get_array("values").array.at(1).number, 12.0);
  EXPECT_NEAR(pooled.get_array("spread").array.at(1).number, std::sqrt(8.0), 1e-12);
  // The same run twice is an error, not a silently doubled seed; a run's lengths split over two
  // files are one row.
  const std::string seed1 = (dir.path / "rope-seed1").string();
  EXPECT_THROW(report_markdown(collect_eval_records({seed1, seed1})), Error);
  write_file(dir.path / "rope-seed3" / "eval" / "ppl-short.json",
             R"({"kind":"ppl","variant":"rope","train_len":128,"method":"none","results":[{"length":128,"ppl":9.0}]})");
  write_file(dir.path / "rope-seed3" / "eval" / "ppl-long.json",
             R"({"kind":"ppl","variant":"rope","train_len":128,"method":"none","results":[{"length":512,"ppl":30.0}]})");
  const std::string split = report_markdown(collect_eval_records({(dir.path / "rope-seed3").string()}));
  EXPECT_NE(split.find("| rope | rope | none | 128 | 9.00 | *30.00* |"), std::string::npos) << split;
}

}  // namespace
}  // namespace tstl
