// HDF5 checkpoints: everything a run needs to continue exactly where it stopped. One file per
// save, named step_00000040.h5 in the run's checkpoints/ directory. A save writes
// `path.tmp-<pid>`, flushes it (H5Fflush, fsync of the file), renames it to `path` and fsyncs the
// directory, so a final name never holds a half-written file; on any error (unwritable directory,
// disk full) the temporary file is removed, earlier checkpoints are untouched and the error says
// what failed. docs/checkpoints.md describes the layout and the resume rules.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "optim/adamw.h"

namespace tstl {

inline constexpr const char* kCheckpointFormat = "tstl-checkpoint";
// Version 2 keeps an interrupted accumulation in its own /accumulation group; version 1 files
// (which kept it under /optimizer as partial_grad.<name> and in /counters) still load.
inline constexpr int64_t kCheckpointVersion = 2;

// The gradients of an optimizer step interrupted between micro-batches (a stop request during
// gradient accumulation); the resumed run adds the step's remaining micro-batches to them.
struct Accumulation {
  int64_t micro_batches = 0;  // micro-batches of the step already run; 0: nothing pending
  double loss_sum = 0;        // their weighted losses, summed
  NamedTensors grads;         // by parameter name
};

struct CheckpointState {
  NamedTensors parameters;  // model parameters by name (GPT-NeoX names), any device and dtype
  NamedTensors optimizer;   // AdamW moments: "exp_avg.<name>", "exp_avg_sq.<name>"
  int64_t step = 0;            // optimizer steps completed
  int64_t optimizer_step = 0;  // AdamW's step count (behind `step` when steps were skipped)
  int64_t tokens_seen = 0;     // training tokens consumed, all ranks together
  uint64_t data_cursor = 0;    // the sampler's global position
  uint64_t rng_seed = 0, rng_offset = 0;  // core/rng.h Generator state
  std::string config;          // the resolved config (Config::dump())
  std::string tokenizer;       // the tokenizer identity
  std::map<std::string, int64_t> counters;  // further integers of the loop (e.g. skipped_steps)
  Accumulation accumulation;   // written only when micro_batches > 0
};

// Writes atomically (see above). Tensors are copied to the host; names must be non-empty and
// must not contain '/'. Throws tstl::Error naming the path and the cause.
void save_checkpoint(const std::string& path, const CheckpointState& state);
// Reads a checkpoint into CPU tensors (their saved dtype), validating format and version.
// with_optimizer = false skips the moments and the accumulation (--train.init_from, inference).
CheckpointState load_checkpoint(const std::string& path, bool with_optimizer = true);
// A cheap structural check without reading tensor data: the file opens, format and version
// match, and every dataset's storage lies within the file. Throws with the reason.
void verify_checkpoint(const std::string& path);

struct CheckpointEntry {
  int64_t step = 0;
  std::string path;
};

// The checkpoints/ directory of a run.
class CheckpointDir {
 public:
  explicit CheckpointDir(std::string dir);  // creates the directory (and its parents)

  const std::string& dir() const { return dir_; }
  std::string path_for(int64_t step) const;  // dir/step_00000040.h5
  // "step_00000040.h5" -> 40; nullopt for any other name (temporaries included).
  static std::optional<int64_t> parse_name(const std::string& file_name);

  // Steps of the files with final names, ascending. Temporaries (`*.tmp-<pid>`) are ignored;
  // those whose writing process no longer exists are deleted.
  std::vector<int64_t> list() const;
  // The newest checkpoint that passes verify_checkpoint(); broken newer ones are skipped with a
  // warning on stderr (also appended to `warnings` when given). nullopt when there is none.
  std::optional<CheckpointEntry> latest(std::vector<std::string>* warnings = nullptr) const;
  // Saves `state` as path_for(state.step) and returns that path.
  std::string save(const CheckpointState& state) const;
  // Retention: deletes every checkpoint that is neither among the newest keep_last (<= 0 keeps
  // all) nor a multiple of keep_every (> 0). Returns the deleted steps.
  std::vector<int64_t> prune(int64_t keep_last, int64_t keep_every) const;

 private:
  std::string dir_;
};

// The steps that retention keeps, ascending (pure: the rule prune() applies).
std::vector<int64_t> checkpoint_steps_to_keep(const std::vector<int64_t>& steps, int64_t keep_last, int64_t keep_every);

}  // namespace tstl
