// The CUDA sources keep all device work on cuda::stream() (core/cuda_backend.h, docs/gpu.md): a
// check of the source text, so that it runs without a GPU. Every kernel launch names a stream in
// its fourth launch argument (a launch without one goes to the legacy default stream, which a
// non-blocking stream does not wait for); copies and memsets are the *Async forms; the host waits
// for the device only through the counted helpers of core/cuda_sync_cuda.h; nothing names the
// legacy or per-thread stream.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

struct Source {
  std::string path;  // relative to the source tree
  std::string text;
};

std::vector<Source> device_sources() {
  std::vector<Source> out;
  for (const char* dir : {"core", "layers", "optim", "train", "eval", "cli"}) {
    const fs::path root = fs::path(TSTL_SOURCE_DIR) / dir;
    if (!fs::exists(root)) continue;
    for (const auto& entry : fs::directory_iterator(root)) {
      const std::string ext = entry.path().extension().string();
      if (ext != ".cu" && ext != ".cuh" && ext != ".cpp" && ext != ".h") continue;
      std::ifstream in(entry.path());
      std::stringstream text;
      text << in.rdbuf();
      out.push_back({std::string(dir) + "/" + entry.path().filename().string(), text.str()});
    }
  }
  return out;
}

int line_of(const std::string& text, size_t pos) {
  int line = 1;
  for (size_t i = 0; i < pos && i < text.size(); ++i) line += text[i] == '\n';
  return line;
}

// The arguments between <<< and >>>, split at the commas outside brackets (not angle brackets:
// a launch size may hold a comparison).
std::vector<std::string> launch_arguments(const std::string& config) {
  std::vector<std::string> args(1);
  int depth = 0;
  for (char c : config) {
    if (c == '(' || c == '[' || c == '{') ++depth;
    if (c == ')' || c == ']' || c == '}') --depth;
    if (c == ',' && depth == 0) {
      args.emplace_back();
    } else {
      args.back() += c;
    }
  }
  return args;
}

TEST(CudaStreamUsage, TheScanSeesTheKernelSources) {
  int launches = 0;
  for (const Source& s : device_sources())
    for (size_t pos = s.text.find("<<<"); pos != std::string::npos; pos = s.text.find("<<<", pos + 3)) ++launches;
  EXPECT_GT(launches, 20) << "the scan found too few kernel launches: wrong source directory?";
}

TEST(CudaStreamUsage, EveryKernelLaunchNamesAStream) {
  for (const Source& s : device_sources()) {
    for (size_t pos = s.text.find("<<<"); pos != std::string::npos; pos = s.text.find("<<<", pos + 3)) {
      const size_t end = s.text.find(">>>", pos);
      ASSERT_NE(end, std::string::npos) << s.path << ":" << line_of(s.text, pos) << ": <<< without >>>";
      const std::vector<std::string> args = launch_arguments(s.text.substr(pos + 3, end - pos - 3));
      EXPECT_TRUE(args.size() == 4 && args[3].find("stream") != std::string::npos)
          << s.path << ":" << line_of(s.text, pos) << ": a kernel launch without a stream argument";
    }
  }
}

TEST(CudaStreamUsage, CopiesAndMemsetsAreAsyncAndWaitsAreCounted) {
  const std::vector<std::string> forbidden_everywhere = {"cudaMemcpy(",
                                                         "cudaMemset(",
                                                         "cudaMemcpy2D(",
                                                         "cudaMemcpyToSymbol(",
                                                         "cudaStreamLegacy",
                                                         "cudaStreamPerThread",
                                                         "static_cast<cudaStream_t>(0)"};
  for (const Source& s : device_sources()) {
    for (const std::string& call : forbidden_everywhere) {
      const size_t pos = s.text.find(call);
      EXPECT_EQ(pos, std::string::npos) << s.path << ":" << line_of(s.text, pos) << ": " << call
                                        << " (device work goes on cuda::stream(), copies and memsets as *Async)";
    }
    // Waits go through the counted helpers (core/cuda_sync_cuda.h), so that tests/gpu/test_gpu_syncs.cpp
    // sees them; the backend's exit handler (core/cuda_backend.cu) is the one other device wait.
    if (s.path != "core/cuda_sync_cuda.h") {
      for (const char* wait : {"cudaStreamSynchronize", "cudaDeviceSynchronize"}) {
        if (s.path == "core/cuda_backend.cu" && std::string(wait) == "cudaDeviceSynchronize") continue;
        const size_t pos = s.text.find(wait);
        EXPECT_EQ(pos, std::string::npos) << s.path << ":" << line_of(s.text, pos) << ": " << wait
                                          << " outside the counted helpers of core/cuda_sync_cuda.h";
      }
    }
  }
}

}  // namespace
