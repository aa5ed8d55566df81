#include "data/token_file.h"

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/atomic_file.h"
#include "core/error.h"
#include "data/tokenizer.h"

namespace tstl {

namespace {

constexpr hsize_t kTokenChunk = 1 << 16;
constexpr hsize_t kOffsetChunk = 4096;
constexpr hsize_t kNameChunk = 1024;
constexpr size_t kFlushTokens = 1 << 20;  // tokens buffered per split before a write

h5::Handle vlen_string_type() {
  h5::Handle t(H5_CHECK(H5Tcopy(H5T_C_S1), "string type"));
  H5_CHECK(H5Tset_size(t, H5T_VARIABLE), "string type");
  H5_CHECK(H5Tset_cset(t, H5T_CSET_UTF8), "string type");
  return t;
}

void write_attr_i64(hid_t obj, const char* name, int64_t value) {
  h5::Handle space(H5_CHECK(H5Screate(H5S_SCALAR), "attribute ", name));
  h5::Handle attr(H5_CHECK(H5Acreate2(obj, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT), "attribute ", name));
  H5_CHECK(H5Awrite(attr, H5T_NATIVE_INT64, &value), "attribute ", name);
}

h5::Handle create_extendible(hid_t group, const char* name, hid_t file_type, hsize_t chunk) {
  const hsize_t zero = 0, unlimited = H5S_UNLIMITED;
  h5::Handle space(H5_CHECK(H5Screate_simple(1, &zero, &unlimited), "dataset ", name));
  h5::Handle props(H5_CHECK(H5Pcreate(H5P_DATASET_CREATE), "dataset ", name));
  H5_CHECK(H5Pset_chunk(props, 1, &chunk), "dataset ", name);
  return h5::Handle(H5_CHECK(H5Dcreate2(group, name, file_type, space, H5P_DEFAULT, props, H5P_DEFAULT), "dataset ", name));
}

// Appends n elements of `mem_type` to the 1-d extendible dataset.
void append(hid_t dataset, hid_t mem_type, const void* data, hsize_t n, const char* what) {
  if (n == 0) return;
  h5::Handle old_space(H5_CHECK(H5Dget_space(dataset), "append to ", what));
  hsize_t size = 0;
  H5_CHECK(H5Sget_simple_extent_dims(old_space, &size, nullptr), "append to ", what);
  const hsize_t new_size = size + n;
  H5_CHECK(H5Dset_extent(dataset, &new_size), "append to ", what);
  h5::Handle file_space(H5_CHECK(H5Dget_space(dataset), "append to ", what));
  H5_CHECK(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, &size, nullptr, &n, nullptr), "append to ", what);
  h5::Handle mem_space(H5_CHECK(H5Screate_simple(1, &n, nullptr), "append to ", what));
  H5_CHECK(H5Dwrite(dataset, mem_type, mem_space, file_space, H5P_DEFAULT, data), "append to ", what);
}

bool has_attr(hid_t obj, const char* name) { return H5Aexists(obj, name) > 0; }

int64_t read_attr_i64(hid_t obj, const char* name, const std::string& where) {
  TSTL_CHECK(has_attr(obj, name), where, ": attribute '", name, "' is missing");
  h5::Handle attr(H5_CHECK(H5Aopen(obj, name, H5P_DEFAULT), where, " attribute ", name));
  int64_t value = 0;
  H5_CHECK(H5Aread(attr, H5T_NATIVE_INT64, &value), where, " attribute ", name, " (expected an integer)");
  return value;
}

}  // namespace

// ---- Writer ------------------------------------------------------------------------------------

struct TokenFileWriter::Split {
  std::string name;
  h5::Handle group, tokens, offsets, names;
  hid_t token_mem_type;
  std::vector<uint32_t> token_buffer;
  std::vector<uint64_t> offset_buffer;
  std::vector<std::string> name_buffer;
  Counts counts;

  void flush() {
    append(tokens, H5T_NATIVE_UINT32, token_buffer.data(), token_buffer.size(), "tokens");
    append(offsets, H5T_NATIVE_UINT64, offset_buffer.data(), offset_buffer.size(), "doc_offsets");
    std::vector<const char*> ptrs;
    for (const std::string& s : name_buffer) ptrs.push_back(s.c_str());
    h5::Handle type = vlen_string_type();
    append(names, type, ptrs.data(), ptrs.size(), "doc_names");
    token_buffer.clear();
    offset_buffer.clear();
    name_buffer.clear();
  }
};

TokenFileWriter::TokenFileWriter(const std::string& path, const Tokenizer& tokenizer, const std::string& token_dtype)
    : path_(path), tmp_path_(path + ".tmp"), vocab_size_(tokenizer.vocab_size()), eos_id_(tokenizer.eos_id()) {
  h5::quiet();
  TSTL_CHECK(token_dtype == "auto" || token_dtype == "uint16" || token_dtype == "uint32", "token dtype '", token_dtype,
             "' is not auto, uint16 or uint32");
  TSTL_CHECK(vocab_size_ <= INT32_MAX, "vocabulary of ", vocab_size_, " ids is too large (token ids are int32)");
  TSTL_CHECK(token_dtype != "uint16" || vocab_size_ <= 65536, "the vocabulary of tokenizer '", tokenizer.identity(),
             "' has ", vocab_size_, " ids, too large for uint16 tokens (at most 65536): use uint32 (or auto)");
  token_bytes_ = token_dtype == "uint32" || vocab_size_ > 65536 ? 4 : 2;
  file_ = h5::Handle(H5_CHECK(H5Fcreate(tmp_path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "creating '", tmp_path_, "'"));
  h5::write_string_attribute(file_, "format", kTokenFileFormat);
  write_attr_i64(file_, "format_version", kTokenFileVersion);
  write_attr_i64(file_, "vocab_size", vocab_size_);
  h5::write_string_attribute(file_, "tokenizer", tokenizer.identity());
  write_attr_i64(file_, "eos_id", tokenizer.eos_id());
  write_attr_i64(file_, "bos_id", tokenizer.bos_id());
  write_attr_i64(file_, "pad_id", tokenizer.pad_id());
  const hid_t token_type = token_bytes_ == 2 ? H5T_STD_U16LE : H5T_STD_U32LE;
  for (const char* name : {"train", "val"}) {
    auto s = std::make_unique<Split>();
    s->name = name;
    s->group = h5::Handle(H5_CHECK(H5Gcreate2(file_, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "group ", name));
    write_attr_i64(s->group, "vocab_size", vocab_size_);
    h5::write_string_attribute(s->group, "tokenizer", tokenizer.identity());
    write_attr_i64(s->group, "eos_id", tokenizer.eos_id());
    s->tokens = create_extendible(s->group, "tokens", token_type, kTokenChunk);
    s->offsets = create_extendible(s->group, "doc_offsets", H5T_STD_U64LE, kOffsetChunk);
    h5::Handle str_type = vlen_string_type();
    s->names = create_extendible(s->group, "doc_names", str_type, kNameChunk);
    s->offset_buffer.push_back(0);
    splits_.push_back(std::move(s));
  }
}

TokenFileWriter::~TokenFileWriter() {
  if (finished_) return;
  splits_.clear();
  file_.reset();
  std::remove(tmp_path_.c_str());
}

TokenFileWriter::Split& TokenFileWriter::split(const std::string& name) {
  for (auto& s : splits_)
    if (s->name == name) return *s;
  TSTL_FAIL("unknown split '", name, "' (expected train or val)");
}

TokenFileWriter::Counts TokenFileWriter::counts(const std::string& name) const {
  for (const auto& s : splits_)
    if (s->name == name) return s->counts;
  TSTL_FAIL("unknown split '", name, "' (expected train or val)");
}

void TokenFileWriter::add_document(const std::string& split_name, const std::string& name,
                                   const std::vector<int32_t>& tokens, int64_t text_bytes) {
  TSTL_CHECK(!finished_, "token file '", path_, "' is already finished");
  Split& s = split(split_name);
  for (int32_t t : tokens) {
    TSTL_CHECK(t >= 0 && t < vocab_size_, "document '", name, "': token id ", t, " is outside the vocabulary of ", vocab_size_);
    s.token_buffer.push_back(static_cast<uint32_t>(t));
  }
  s.token_buffer.push_back(static_cast<uint32_t>(eos_id_));
  s.counts.documents += 1;
  s.counts.tokens += static_cast<int64_t>(tokens.size()) + 1;
  s.counts.text_bytes += text_bytes;
  s.offset_buffer.push_back(static_cast<uint64_t>(s.counts.tokens));
  s.name_buffer.push_back(name);
  if (s.token_buffer.size() >= kFlushTokens || s.name_buffer.size() >= kNameChunk) s.flush();
}

void TokenFileWriter::finish() {
  TSTL_CHECK(!finished_, "token file '", path_, "' is already finished");
  for (auto& s : splits_) {
    s->flush();
    write_attr_i64(s->group, "n_documents", s->counts.documents);
    write_attr_i64(s->group, "n_tokens", s->counts.tokens);
    write_attr_i64(s->group, "text_bytes", s->counts.text_bytes);
  }
  splits_.clear();
  H5_CHECK(H5Fflush(file_, H5F_SCOPE_GLOBAL), "flushing '", tmp_path_, "'");
  file_.reset();
  commit_file(tmp_path_, path_);
  finished_ = true;
}

// ---- Reader ------------------------------------------------------------------------------------

void TokenFile::open(const std::string& path) {
  h5::quiet();
  path_ = path;
  TSTL_CHECK(std::filesystem::exists(path), "token file '", path, "' does not exist (write one with `tstl prepare`)");
  TSTL_CHECK(H5Fis_hdf5(path.c_str()) > 0, "'", path, "' is not an HDF5 file (a token file is written by `tstl prepare`)");
  h5::Handle file(H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "opening '", path, "'"));
  const std::string where = str("token file '", path, "'");
  TSTL_CHECK(has_attr(file, "format"), where, " has no 'format' attribute: it is not a tstl token file");
  const std::string format = h5::read_string_attribute(file, "format", where);
  TSTL_CHECK(format == kTokenFileFormat, where, " has format '", format, "', expected '", kTokenFileFormat, "'");
  const int64_t version = read_attr_i64(file, "format_version", where);
  TSTL_CHECK(version == kTokenFileVersion, where, " has format_version ", version, "; this tstl reads version ",
             kTokenFileVersion, " (re-run `tstl prepare`)");
  vocab_size_ = read_attr_i64(file, "vocab_size", where);
  tokenizer_ = h5::read_string_attribute(file, "tokenizer", where);
  eos_id_ = static_cast<int32_t>(read_attr_i64(file, "eos_id", where));
  bos_id_ = has_attr(file, "bos_id") ? static_cast<int32_t>(read_attr_i64(file, "bos_id", where)) : -1;
  pad_id_ = has_attr(file, "pad_id") ? static_cast<int32_t>(read_attr_i64(file, "pad_id", where)) : -1;
  TSTL_CHECK(vocab_size_ > 0 && eos_id_ >= 0 && eos_id_ < vocab_size_, where, ": eos_id ", eos_id_,
             " is outside the vocabulary of ", vocab_size_);
}

bool TokenFile::has_split(const std::string& name) const {
  h5::Handle file(H5_CHECK(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "opening '", path_, "'"));
  return H5Lexists(file, name.c_str(), H5P_DEFAULT) > 0;
}

TokenSplit TokenFile::split(const std::string& name) const {
  TSTL_CHECK(!path_.empty(), "TokenFile::split called before open()");
  h5::Handle file(H5_CHECK(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "opening '", path_, "'"));
  const std::string where = str("token file '", path_, "' split '/", name, "'");
  TSTL_CHECK(H5Lexists(file, name.c_str(), H5P_DEFAULT) > 0, "token file '", path_, "' has no group '/", name, "'");
  h5::Handle group(H5_CHECK(H5Gopen2(file, name.c_str(), H5P_DEFAULT), where));
  for (const char* ds : {"tokens", "doc_offsets", "doc_names"})
    TSTL_CHECK(H5Lexists(group, ds, H5P_DEFAULT) > 0, where, " has no dataset '", ds, "'");
  if (has_attr(group, "tokenizer"))
    TSTL_CHECK(h5::read_string_attribute(group, "tokenizer", where) == tokenizer_, where, ": tokenizer attribute differs from the file's");

  auto read_1d = [&](const char* ds, hid_t mem_type, auto& out) {
    h5::Handle dset(H5_CHECK(H5Dopen2(group, ds, H5P_DEFAULT), where, "/", ds));
    h5::Handle space(H5_CHECK(H5Dget_space(dset), where, "/", ds));
    TSTL_CHECK(H5Sget_simple_extent_ndims(space) == 1, where, "/", ds, " is not 1-dimensional");
    hsize_t n = 0;
    H5_CHECK(H5Sget_simple_extent_dims(space, &n, nullptr), where, "/", ds);
    out.resize(n);
    if (n > 0) H5_CHECK(H5Dread(dset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()), where, "/", ds);
    return dset;
  };
  TokenSplit split;
  split.name = name;
  {
    h5::Handle dset = read_1d("tokens", H5T_NATIVE_INT32, split.tokens);
    h5::Handle type(H5_CHECK(H5Dget_type(dset), where, "/tokens"));
    TSTL_CHECK(H5Tget_class(type) == H5T_INTEGER && H5Tget_sign(type) == H5T_SGN_NONE &&
                   (H5Tget_size(type) == 2 || H5Tget_size(type) == 4),
               where, "/tokens is not uint16 or uint32");
  }
  read_1d("doc_offsets", H5T_NATIVE_UINT64, split.doc_offsets);
  {
    h5::Handle str_type = vlen_string_type();
    std::vector<char*> ptrs;
    h5::Handle dset = read_1d("doc_names", str_type, ptrs);
    for (char* p : ptrs) split.doc_names.emplace_back(p ? p : "");
    if (!ptrs.empty()) {
      h5::Handle space(H5_CHECK(H5Dget_space(dset), where, "/doc_names"));
      H5Dvlen_reclaim(str_type, space, H5P_DEFAULT, ptrs.data());
    }
  }
  split.text_bytes = has_attr(group, "text_bytes") ? read_attr_i64(group, "text_bytes", where) : 0;
  // Structural checks: offsets start at 0, grow, end at the token count; one name per document.
  const auto& off = split.doc_offsets;
  TSTL_CHECK(!off.empty() && off.front() == 0 && off.back() == split.tokens.size(), where,
             ": doc_offsets must start at 0 and end at the token count ", split.tokens.size());
  for (size_t i = 1; i < off.size(); ++i) TSTL_CHECK(off[i] > off[i - 1], where, ": doc_offsets not increasing at ", i);
  TSTL_CHECK(split.doc_names.size() + 1 == off.size(), where, ": ", split.doc_names.size(), " doc_names for ",
             off.size() - 1, " documents");
  for (int32_t t : split.tokens)
    TSTL_CHECK(t >= 0 && t < vocab_size_, where, ": token ", t, " is outside the vocabulary of ", vocab_size_);
  return split;
}

void check_tokenizer_matches(const TokenFile& file, const Tokenizer& tokenizer) {
  TSTL_CHECK(file.tokenizer_identity() == tokenizer.identity(), "token file '", file.path(), "' was written with tokenizer '",
             file.tokenizer_identity(), "' but the tokenizer in use is '", tokenizer.identity(),
             "': re-run `tstl prepare` with this tokenizer or use the matching one");
  TSTL_CHECK(file.vocab_size() == tokenizer.vocab_size(), "token file '", file.path(), "' has vocab_size ",
             file.vocab_size(), " but tokenizer '", tokenizer.identity(), "' has ", tokenizer.vocab_size());
}

}  // namespace tstl
