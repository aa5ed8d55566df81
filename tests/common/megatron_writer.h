// A Megatron-LM / GPT-NeoX indexed dataset (PREFIX.idx + PREFIX.bin) written by numpy, an
// independent writer following the published layout, for the tests of `tstl prepare --format megatron`.
#pragma once

#include <string>
#include <vector>

#include "common/cli_test_util.h"

namespace tstl::test {

using Doc = std::vector<std::vector<int64_t>>;  // a Megatron document: its sequences

inline bool have_numpy() { return run_shell("/usr/bin/python3 -c 'import numpy'").exit_code == 0; }

inline std::string ints_json(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

// The MMIDIDX layout as Megatron-LM's and GPT-NeoX's indexed_dataset.py write it: header, then
// int32 sequence lengths, int64 byte pointers, int64 document indices.
inline constexpr const char* kMegatronWriter = R"(import json, struct, sys
import numpy as np
spec = json.load(open(sys.argv[1]))
prefix, code, docs = spec["prefix"], spec["code"], spec["documents"]
dtype = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16}.get(code, np.float32)
seqs = [s for d in docs for s in d]
with open(prefix + ".bin", "wb") as f:
    for s in seqs:
        f.write(np.array(s, dtype=dtype).tobytes(order="C"))
lengths = np.array([len(s) for s in seqs], dtype=np.int32)
pointers = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) * np.dtype(dtype).itemsize
doc_idx = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
with open(prefix + ".idx", "wb") as f:
    f.write(b"MMIDIDX\x00\x00")
    f.write(struct.pack("<Q", 1))
    f.write(struct.pack("<B", code))
    f.write(struct.pack("<Q", len(lengths)))
    f.write(struct.pack("<Q", len(doc_idx)))
    f.write(lengths.tobytes(order="C"))
    f.write(pointers.tobytes(order="C"))
    f.write(doc_idx.tobytes(order="C"))
    if spec.get("modes"):
        f.write(np.zeros(len(lengths), dtype=np.int8).tobytes())
)";

inline RunResult write_megatron_dataset(const std::string& prefix, int code, const std::vector<Doc>& docs,
                                        bool modes = false) {
  std::string json = "{\"prefix\": \"" + prefix + "\", \"code\": " + std::to_string(code) +
                     ", \"modes\": " + (modes ? "true" : "false") + ", \"documents\": [";
  for (size_t d = 0; d < docs.size(); ++d) {
    json += d ? ",[" : "[";
    for (size_t s = 0; s < docs[d].size(); ++s) json += (s ? "," : "") + ints_json(docs[d][s]);
    json += "]";
  }
  write_file(prefix + ".spec.json", json + "]}");
  write_file(prefix + ".writer.py", kMegatronWriter);
  return run_shell("/usr/bin/python3 " + prefix + ".writer.py " + prefix + ".spec.json");
}

}  // namespace tstl::test
