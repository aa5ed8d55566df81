// Reading documents from text inputs, one at a time, so memory holds one document and not the
// corpus. An input is:
//   - a .txt file (any name not ending in .jsonl): one document, its whole content;
//   - a .jsonl file: one document per non-blank line, the line's JSON object's "text" string;
//   - a directory: its .txt and .jsonl files (also .gz-compressed), recursively, sorted by path.
// Any file may be gzip-compressed (.gz, read through zlib); the name then drops the ".gz".
// Document names: a file given directly is named by its file name, a file found in a directory
// by its path relative to that directory, a .jsonl line by "<file name>:<line number>".
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tstl {

struct Document {
  std::string name;
  std::string text;
};

struct InputFile {
  std::string path;  // on disk
  std::string name;  // document name (".gz" removed)
  bool jsonl = false;
  bool explicit_input = false;  // given on the command line rather than found in a directory
};

// Expands the inputs into files, in order. Throws for a missing input, an explicitly named
// empty file, or a directory that holds no .txt/.jsonl file.
std::vector<InputFile> expand_inputs(const std::vector<std::string>& inputs);

// The whole (decompressed) content of a file.
std::string read_file_text(const std::string& path);

// The "text" member of the JSON object on `line`, JSON escapes decoded (\uXXXX and surrogate
// pairs to UTF-8). `where` names the line in error messages ("file.jsonl:12").
std::string jsonl_text_field(const std::string& line, const std::string& where);

// Streams the documents of the expanded inputs. Empty documents (empty files found in a
// directory, "" texts in .jsonl) are skipped and counted.
class DocumentReader {
 public:
  explicit DocumentReader(const std::vector<std::string>& inputs);
  ~DocumentReader();
  DocumentReader(const DocumentReader&) = delete;
  DocumentReader& operator=(const DocumentReader&) = delete;
  bool next(Document& doc);  // false when all inputs are read
  const std::vector<InputFile>& files() const { return files_; }
  uint64_t skipped_empty() const { return skipped_empty_; }
  uint64_t input_bytes_total() const { return input_bytes_total_; }  // on-disk sizes
  uint64_t input_bytes_done() const;                                 // on-disk bytes consumed

 private:
  struct Open;
  std::vector<InputFile> files_;
  size_t next_file_ = 0;
  std::unique_ptr<Open> open_;  // the .jsonl file being read, if any
  uint64_t skipped_empty_ = 0;
  uint64_t input_bytes_total_ = 0;
  uint64_t input_bytes_finished_ = 0;
};

}  // namespace tstl
