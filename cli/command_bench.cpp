// tstl bench peak: measures this machine's sgemm peak (the denominator of MFU on the CPU) and
// caches it for later training runs (train/peak_flops.h). Run it once on an idle machine.
#include <boost/program_options.hpp>
#include <cstdio>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/error.h"
#include "train/peak_flops.h"

namespace tstl {

namespace po = boost::program_options;

int command_bench(const Args& args) {
  TSTL_CHECK(!args.empty() && (args[0] == "peak" || args[0] == "--help" || args[0] == "-h"),
             "expected `tstl bench peak`, got `tstl bench", args.empty() ? "" : " " + args[0], "`");
  int64_t size = 2048;
  int repeats = 5;
  po::options_description desc("tstl bench peak options");
  desc.add_options()("help,h", "show this help")  //
      ("size", po::value(&size)->default_value(2048), "n of the (n, n) x (n, n) sgemm")
      ("repeats", po::value(&repeats)->default_value(5), "timed sgemms; the best counts");
  po::variables_map vm;
  const Args rest(args.begin() + (args[0] == "peak" ? 1 : 0), args.end());
  if (!parse_command_line(rest, desc, vm, "usage: tstl bench peak [--size N --repeats R]")) return 0;
  TSTL_CHECK(size >= 64, "--size must be >= 64, got ", size);
  TSTL_CHECK(repeats >= 1, "--repeats must be >= 1, got ", repeats);
  const double flops = measure_sgemm_flops(size, repeats);
  const std::string path = cpu_peak_cache_path(), key = cpu_peak_key();
  std::printf("sgemm %lld: %.1f GFLOP/s on %s\n", static_cast<long long>(size), flops * 1e-9, key.c_str());
  TSTL_CHECK(write_cached_peak(path, key, flops), "cannot write ", path,
             " (set TSTL_CACHE_DIR to a writable folder, or train.peak_flops in the config)");
  std::printf("cached in %s: training runs on this machine report MFU against it\n", path.c_str());
  return 0;
}

}  // namespace tstl
