// `tstl export hf`: the safetensors file read back by the `safetensors` package (numpy API) holds
// every checkpoint parameter bit for bit; a float64 numpy GPT-NeoX forward written from the
// published architecture (rotate_half RoPE, fused per-head [q k v], parallel or sequential
// residual, exact GELU), driven only by config.json and model.safetensors, reproduces tstl's
// logits; variants that GPT-NeoX does not compute are refused with the reason.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/cli_test_util.h"
#include "common/python_readers.h"
#include "core/error.h"
#include "core/json.h"
#include "layers/decoder.h"
#include "train/hf_export.h"
#include "train/model_io.h"

namespace tstl {
namespace {

using test::ScratchDir;
using test::write_file;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Compares every tensor of the checkpoint (h5py) with the safetensors file (safetensors.numpy).
constexpr const char* kCompareTensors = R"(import sys
import h5py, numpy as np
from safetensors.numpy import load_file
exported = load_file(sys.argv[1])
with h5py.File(sys.argv[2], "r") as f:
    params = {k: f["parameters"][k][...] for k in f["parameters"].keys()}
assert sorted(exported) == sorted(params), (sorted(exported), sorted(params))
for k, v in params.items():
    e = exported[k]
    assert e.dtype == v.dtype and e.shape == v.shape, (k, e.dtype, v.dtype, e.shape, v.shape)
    assert e.tobytes() == v.tobytes(), k
print("TENSORS EQUAL", len(params))
)";

// GPT-NeoX in float64 numpy from config.json and model.safetensors; prints the largest logit
// difference to tstl's logits (argv[3]), and the one with use_parallel_residual flipped.
constexpr const char* kGptNeoxForward = R"(import json, math, sys
import numpy as np
from safetensors.numpy import load_file
d, ids_path, logits_path = sys.argv[1:4]
cfg = json.load(open(d + "/config.json"))
W = {k: v.astype(np.float64) for k, v in load_file(d + "/model.safetensors").items()}
ids = [int(t) for t in open(ids_path).read().split()]
tstl_logits = np.array([float(t) for t in open(logits_path).read().split()]).reshape(len(ids), cfg["vocab_size"])
H, nh, L = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
hd = H // nh
rot = int(hd * cfg["rotary_pct"])
eps = cfg["layer_norm_eps"]
erf = np.vectorize(math.erf)

def layer_norm(x, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * W[p + ".weight"] + W[p + ".bias"]

def linear(x, p):
    return x @ W[p + ".weight"].T + W[p + ".bias"]

N = len(ids)
inv_freq = 1.0 / (cfg["rotary_emb_base"] ** (np.arange(0, rot, 2) / rot))
angles = np.outer(np.arange(N), inv_freq)
cos, sin = np.cos(np.concatenate([angles, angles], -1)), np.sin(np.concatenate([angles, angles], -1))

def rotary(t):
    r, rest = t[..., :rot], t[..., rot:]
    rotated_half = np.concatenate([-r[..., rot // 2:], r[..., :rot // 2]], -1)
    return np.concatenate([r * cos + rotated_half * sin, rest], -1)

def forward(parallel):
    x = W["gpt_neox.embed_in.weight"][ids]
    causal = np.triu(np.ones((N, N), dtype=bool), 1)
    for i in range(L):
        p = "gpt_neox.layers.%d." % i
        qkv = linear(layer_norm(x, p + "input_layernorm"), p + "attention.query_key_value")
        qkv = qkv.reshape(N, nh, 3 * hd).transpose(1, 0, 2)
        q, k, v = rotary(qkv[..., :hd]), rotary(qkv[..., hd:2 * hd]), qkv[..., 2 * hd:]
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        s[:, causal] = -np.inf
        prob = np.exp(s - s.max(-1, keepdims=True))
        prob /= prob.sum(-1, keepdims=True)
        attn = linear((prob @ v).transpose(1, 0, 2).reshape(N, H), p + "attention.dense")
        mlp = lambda h: linear(0.5 * h * (1 + erf(h / math.sqrt(2))), p + "mlp.dense_4h_to_h")
        if parallel:
            x = x + attn + mlp(linear(layer_norm(x, p + "post_attention_layernorm"), p + "mlp.dense_h_to_4h"))
        else:
            x = x + attn
            x = x + mlp(linear(layer_norm(x, p + "post_attention_layernorm"), p + "mlp.dense_h_to_4h"))
    return layer_norm(x, "gpt_neox.final_layer_norm") @ W["embed_out.weight"].T

as_trained = np.abs(forward(cfg["use_parallel_residual"]) - tstl_logits).max()
flipped = np.abs(forward(not cfg["use_parallel_residual"]) - tstl_logits).max()
print("max_abs_diff %.3e flipped %.3e scale %.3e" % (as_trained, flipped, np.abs(tstl_logits).max()))
)";

// A rope checkpoint of the tiny config after a few steps (so weights are not at their init).
std::string train_tiny(const ScratchDir& dir, const std::string& residual) {
  const std::string source = TSTL_SOURCE_DIR;
  if (!std::filesystem::exists(dir / "d.h5")) {
    const auto r = test::run_tstl("prepare --input " + source + "/data/corpus/sotu --max-documents 4 --tokenizer byte"
                                  " --val-fraction 0.25 --output " + (dir / "d.h5"));
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
  const std::string out = dir / ("run-" + residual);
  const auto r = test::run_tstl("train --config " + source + "/configs/tiny.cfg --data.path " + (dir / "d.h5") +
                                " --train.out_dir " + out + " --train.max_steps 3 --train.eval_every 0 --train.eval_batches 1"
                                " --train.threads 2 --train.peak_flops 1e11 --model.residual " + residual);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return out + "/checkpoints/step_00000003.h5";
}

TEST(HfExport, SafetensorsHoldEveryParameterBitForBitAndGptNeoxReproducesTheLogits) {
  TSTL_REQUIRE_PYTHON_READERS(python);
  ScratchDir dir;
  write_file(dir / "compare.py", kCompareTensors);
  write_file(dir / "forward.py", kGptNeoxForward);
  for (const std::string residual : {"parallel", "sequential"}) {
    SCOPED_TRACE(residual);
    const std::string checkpoint = train_tiny(dir, residual);
    const std::string out = dir / ("hf-" + residual);
    const auto files = export_hf({checkpoint, out, ""});
    EXPECT_EQ(files, (std::vector<std::string>{out + "/config.json", out + "/model.safetensors"}));

    const JsonValue config = parse_json(read_text(out + "/config.json"), "config.json");
    EXPECT_EQ(config.get_array("architectures").array.at(0).string, "GPTNeoXForCausalLM");
    EXPECT_EQ(config.get_number("rotary_pct"), 1.0);
    EXPECT_EQ(config.get_number("layer_norm_eps"), 1e-5);
    EXPECT_EQ(config.get_number("rotary_emb_base"), 10000.0);
    EXPECT_EQ(config.get_number("vocab_size"), 259);
    EXPECT_EQ(config.get_number("eos_token_id"), 257);
    ASSERT_NE(config.find("use_parallel_residual"), nullptr);
    EXPECT_EQ(config.find("use_parallel_residual")->boolean, residual == "parallel");
    EXPECT_EQ(config.find("tie_word_embeddings")->boolean, false);

    const auto cmp = test::run_shell(python + " " + (dir / "compare.py") + " " + out + "/model.safetensors " + checkpoint);
    EXPECT_EQ(cmp.exit_code, 0) << cmp.output;
    EXPECT_NE(cmp.output.find("TENSORS EQUAL 28"), std::string::npos) << cmp.output;  // 1 + 2 x 12 + 2 + 1 parameters

    // tstl's logits for a short byte sequence.
    const LoadedModel loaded = load_model(checkpoint);
    const std::vector<int32_t> ids = {84, 104, 101, 32, 110, 97, 116, 105, 111, 110, 257, 72, 101, 114, 101, 32, 119, 101};
    const std::vector<double> logits =
        loaded.model->forward(Tensor::from_vector(ids, {1, static_cast<int64_t>(ids.size())})).to_vector<double>();
    std::string ids_text, logits_text;
    for (int32_t t : ids) ids_text += std::to_string(t) + " ";
    char buf[32];
    for (double v : logits) logits_text += (std::snprintf(buf, sizeof(buf), "%.9g ", v), buf);
    write_file(dir / "ids.txt", ids_text);
    write_file(dir / "logits.txt", logits_text);
    const auto fwd = test::run_shell(python + " " + (dir / "forward.py") + " " + out + " " + (dir / "ids.txt") + " " + (dir / "logits.txt"));
    ASSERT_EQ(fwd.exit_code, 0) << fwd.output;
    double diff = -1, flipped = -1, scale = -1;
    ASSERT_EQ(std::sscanf(fwd.output.c_str(), "max_abs_diff %lf flipped %lf scale %lf", &diff, &flipped, &scale), 3) << fwd.output;
    EXPECT_LT(diff, 1e-5) << fwd.output;     // f32 against f64
    EXPECT_GT(flipped, 1e-2) << fwd.output;  // the comparison tells the two block layouts apart
    EXPECT_GT(scale, 0.1) << fwd.output;
    std::printf("%s: %s", residual.c_str(), fwd.output.c_str());
  }
}

TEST(HfExport, SafetensorsHeaderLayout) {
  ScratchDir dir;
  const Tensor a = Tensor::from_vector(std::vector<float>{1.5f, -2.0f, 0.25f}, {3});
  const Tensor b = Tensor::from_vector(std::vector<double>{3.0, 4.0}, {1, 2});
  write_safetensors(dir / "t.safetensors", {{"a", a}, {"b.x", b}}, {{"format", "pt"}});
  const std::string bytes = read_text(dir / "t.safetensors");
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  ASSERT_EQ(bytes.size(), 8 + n + 12 + 16);
  const JsonValue header = parse_json(bytes.substr(8, n), "header");
  EXPECT_EQ(header.find("__metadata__")->get_string("format"), "pt");
  const JsonValue& ta = *header.find("a");
  EXPECT_EQ(ta.get_string("dtype"), "F32");
  EXPECT_EQ(ta.get_array("data_offsets").array.at(1).number, 12);
  const JsonValue& tb = *header.find("b.x");
  EXPECT_EQ(tb.get_string("dtype"), "F64");
  EXPECT_EQ(tb.get_array("shape").array.at(1).number, 2);
  EXPECT_EQ(tb.get_array("data_offsets").array.at(0).number, 12);
  EXPECT_EQ(tb.get_array("data_offsets").array.at(1).number, 28);
  float a0;
  std::memcpy(&a0, bytes.data() + 8 + n, 4);
  EXPECT_EQ(a0, 1.5f);
  double b1;
  std::memcpy(&b1, bytes.data() + 8 + n + 12 + 8, 8);
  EXPECT_EQ(b1, 4.0);
}

TEST(HfExport, WhatGptNeoxCannotComputeIsRefusedWithTheReason) {
  auto refused = [](ModelConfig m, const std::string& needle) {
    try {
      check_gpt_neox_exportable(m);
      ADD_FAILURE() << "exported; expected a refusal containing '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  ModelConfig m;
  EXPECT_NO_THROW(check_gpt_neox_exportable(m));
  for (Variant v : {Variant::Alibi, Variant::KeyNorm, Variant::Coca, Variant::CocaStrict}) {
    ModelConfig x = m;
    x.variant = v;
    refused(x, std::string("model.variant = ") + variant_name(v) + " cannot be exported: no Hugging Face architecture");
  }
  ModelConfig x = m;
  x.logn = true;
  refused(x, "model.logn = true cannot be exported");
  x = m;
  x.rmsnorm = true;
  refused(x, "GPTNeoXForCausalLM uses LayerNorm");
  x = m;
  x.bias = false;
  refused(x, "model.bias = false cannot be exported");
}

}  // namespace
}  // namespace tstl
