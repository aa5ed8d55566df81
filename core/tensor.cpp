#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <numeric>
#include <unordered_map>
#include <vector>

#include "core/autograd.h"
#include "core/cuda_backend.h"

namespace tstl {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::I64: return 8;
    case DType::U16: return 2;
    case DType::U32: return 4;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
    case DType::U16: return "u16";
    case DType::U32: return "u32";
  }
  return "?";
}

const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

bool dtype_is_float(DType t) { return t == DType::F32 || t == DType::F64 || t == DType::BF16; }

std::string shape_str(const Shape& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + ")";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

// ---- Storage --------------------------------------------------------------------------------

namespace {
// The host caching allocator. A training step allocates and frees the same set of activation and
// gradient tensors every step; served by malloc, their pages are not always reused: with OpenMP
// worker threads running, a run took ~16k minor page faults per step of the small config (fresh
// zeroed pages first touched inside the kernels, ~60 MB a step). Blocks of kMinCached bytes and
// more are therefore kept when freed, in exact-size lists (sizes rounded up to whole pages, so
// the same shape finds its block again), and handed out again; at most kMaxCached bytes are
// kept, beyond that a freed block goes back to the system. Small blocks stay with malloc.
class HostBlockCache {
 public:
  static constexpr size_t kMinCached = size_t{64} << 10;  // 64 KiB
  static constexpr size_t kMaxCached = size_t{4} << 30;   // 4 GiB
  static constexpr size_t kPage = 4096;

#if defined(__SANITIZE_ADDRESS__)
  static constexpr bool kEnabled = false;  // AddressSanitizer must see every free to catch use-after-free
#else
  static constexpr bool kEnabled = true;
#endif

  static size_t rounded(size_t bytes) {
    return bytes >= kMinCached ? (bytes + kPage - 1) / kPage * kPage : (bytes + 63) / 64 * 64;
  }

  void* allocate(size_t bytes) {
    const size_t size = rounded(bytes);
    if (size == 0) return nullptr;
    if (kEnabled && size >= kMinCached) {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        void* block = it->second.back();
        it->second.pop_back();
        cached_bytes_ -= size;
        return block;
      }
    }
    void* block = std::aligned_alloc(size >= kMinCached ? kPage : 64, size);
    TSTL_CHECK(block != nullptr, "out of host memory allocating ", bytes, " bytes");
    return block;
  }

  void release(void* block, size_t bytes) {
    const size_t size = rounded(bytes);
    if (kEnabled && block && size >= kMinCached) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_bytes_ + size <= kMaxCached) {
        free_[size].push_back(block);
        cached_bytes_ += size;
        return;
      }
    }
    std::free(block);
  }

 private:
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // size -> blocks
  size_t cached_bytes_ = 0;
};

HostBlockCache& host_cache() {
  static HostBlockCache* cache = new HostBlockCache;  // never destroyed: tensors may outlive statics
  return *cache;
}
}  // namespace

Storage::Storage(size_t nbytes, Device dev) : bytes(nbytes), device(dev) {
  if (device == Device::CPU) {
    data = host_cache().allocate(nbytes);
  } else {
    data = cuda::allocate(nbytes);
  }
}

Storage::~Storage() {
  if (device == Device::CPU) {
    host_cache().release(data, bytes);
  } else {
    cuda::release(data, bytes);
  }
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device == Device::CPU && src_device == Device::CPU) {
    std::memcpy(dst, src, bytes);
  } else {
    cuda::copy(dst, dst_device == Device::CUDA, src, src_device == Device::CUDA, bytes);
  }
}

bool cuda_compiled() { return cuda::compiled(); }
bool cuda_available() { return cuda::device_count() > 0; }

// ---- Tensor ---------------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) TSTL_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), device);
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  if (t.nbytes() == 0) return t;  // an empty tensor's pointer may be null
  if (device == Device::CPU) {
    std::memset(t.raw(), 0, t.nbytes());
  } else {
    cuda::memset_zero(t.raw(), t.nbytes());
  }
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

namespace {

template <class T>
void store(void* dst, size_t i, double v) {
  static_cast<T*>(dst)[i] = static_cast<T>(v);
}

// Converts n elements between any two dtypes on the host.
void convert_host(void* dst, DType dt, const void* src, DType st, size_t n) {
  auto load = [&](size_t i) -> double {
    switch (st) {
      case DType::F32: return static_cast<const float*>(src)[i];
      case DType::F64: return static_cast<const double*>(src)[i];
      case DType::BF16: return bf16_to_float(static_cast<const bf16*>(src)[i]);
      case DType::I32: return static_cast<const int32_t*>(src)[i];
      case DType::I64: return static_cast<double>(static_cast<const int64_t*>(src)[i]);
      case DType::U16: return static_cast<const uint16_t*>(src)[i];
      case DType::U32: return static_cast<const uint32_t*>(src)[i];
    }
    return 0;
  };
  if (dt == st) {
    if (n > 0) std::memcpy(dst, src, n * dtype_size(dt));  // an empty tensor's pointers may be null
    return;
  }
  // i64 -> i64 precision is kept by the memcpy above; other integer paths go through double,
  // exact for every value below 2^53.
  for (size_t i = 0; i < n; ++i) {
    const double v = load(i);
    switch (dt) {
      case DType::F32: store<float>(dst, i, v); break;
      case DType::F64: store<double>(dst, i, v); break;
      case DType::BF16: static_cast<bf16*>(dst)[i] = float_to_bf16(static_cast<float>(v)); break;
      case DType::I32: store<int32_t>(dst, i, v); break;
      case DType::I64: store<int64_t>(dst, i, v); break;
      case DType::U16: store<uint16_t>(dst, i, v); break;
      case DType::U32: store<uint32_t>(dst, i, v); break;
    }
  }
}

}  // namespace

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  TSTL_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
             " values for shape ", shape_str(shape));
  Tensor t = empty(shape, dtype_of<T>::value, Device::CPU);
  if (!values.empty()) std::memcpy(t.raw(), values.data(), t.nbytes());
  return device == Device::CPU ? t : t.to(device);
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  Tensor host = device() == Device::CPU ? *this : to(Device::CPU);
  std::vector<T> out(static_cast<size_t>(numel()));
  convert_host(out.data(), dtype_of<T>::value, host.raw(), dtype(), out.size());
  return out;
}

#define TSTL_INSTANTIATE(T)                                                                      \
  template Tensor Tensor::from_vector<T>(const std::vector<T>&, const Shape&, Device);           \
  template std::vector<T> Tensor::to_vector<T>() const;
TSTL_INSTANTIATE(float)
TSTL_INSTANTIATE(double)
TSTL_INSTANTIATE(int32_t)
TSTL_INSTANTIATE(int64_t)
TSTL_INSTANTIATE(uint16_t)
TSTL_INSTANTIATE(uint32_t)
#undef TSTL_INSTANTIATE

int64_t Tensor::size(int64_t i) const {
  const int64_t n = dim();
  const int64_t j = i < 0 ? i + n : i;
  TSTL_CHECK(j >= 0 && j < n, "dimension ", i, " out of range for shape ", shape_str(shape()));
  return shape()[static_cast<size_t>(j)];
}

Tensor Tensor::reshape(const Shape& new_shape) const {
  Shape s = new_shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      TSTL_CHECK(infer < 0, "reshape: more than one -1 in ", shape_str(new_shape));
      infer = static_cast<int64_t>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    TSTL_CHECK(known > 0 && numel() % known == 0, "reshape: cannot view ", shape_str(shape()), " as ",
               shape_str(new_shape));
    s[static_cast<size_t>(infer)] = numel() / known;
  }
  TSTL_CHECK(shape_numel(s) == numel(), "reshape: cannot view ", shape_str(shape()), " (", numel(),
             " elements) as ", shape_str(new_shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = this->impl().storage;
  impl->offset = this->impl().offset;
  impl->shape = s;
  impl->dtype = dtype();
  Tensor out(std::move(impl));
  if (needs_grad({this})) {
    const Shape in_shape = shape();
    record(out, "reshape", {*this}, [in_shape](const Tensor& g) { return std::vector<Tensor>{g.reshape(in_shape)}; });
  }
  return out;
}

Tensor Tensor::to(Device target) const {
  Tensor out = empty(shape(), dtype(), target);
  copy_bytes(out.raw(), target, raw(), device(), nbytes());
  return out;
}

Tensor Tensor::to(DType target) const {
  if (device() == Device::CUDA) return to(Device::CPU).to(target).to(Device::CUDA);
  Tensor out = empty(shape(), target, Device::CPU);
  convert_host(out.raw(), target, raw(), dtype(), static_cast<size_t>(numel()));
  return out;
}

Tensor Tensor::clone() const { return to(device()); }

Tensor Tensor::flat_slice(int64_t begin, int64_t length) const {
  TSTL_CHECK(begin >= 0 && length >= 0 && begin + length <= numel(), "flat_slice [", begin, ", ", begin + length,
             ") outside a tensor of ", numel(), " elements");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = this->impl().storage;
  impl->offset = this->impl().offset + static_cast<size_t>(begin) * dtype_size(dtype());
  impl->shape = {length};
  impl->dtype = dtype();
  return Tensor(std::move(impl));
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = this->impl().storage;
  impl->offset = this->impl().offset;
  impl->shape = shape();
  impl->dtype = dtype();
  return Tensor(std::move(impl));
}

double Tensor::item() const {
  TSTL_CHECK(numel() == 1, "item() needs a one-element tensor, got shape ", shape_str(shape()));
  return to_vector<double>()[0];
}

void Tensor::fill_(double value) {
  if (device() == Device::CUDA) {
    Tensor host = full(shape(), value, dtype(), Device::CPU);
    copy_(host);
    return;
  }
  const size_t n = static_cast<size_t>(numel());
  switch (dtype()) {
    case DType::F32: std::fill_n(data<float>(), n, static_cast<float>(value)); break;
    case DType::F64: std::fill_n(data<double>(), n, value); break;
    case DType::BF16: std::fill_n(static_cast<bf16*>(raw()), n, float_to_bf16(static_cast<float>(value))); break;
    case DType::I32: std::fill_n(data<int32_t>(), n, static_cast<int32_t>(value)); break;
    case DType::I64: std::fill_n(data<int64_t>(), n, static_cast<int64_t>(value)); break;
    case DType::U16: std::fill_n(data<uint16_t>(), n, static_cast<uint16_t>(value)); break;
    case DType::U32: std::fill_n(data<uint32_t>(), n, static_cast<uint32_t>(value)); break;
  }
}

void Tensor::copy_(const Tensor& source) {
  TSTL_CHECK(source.shape() == shape(), "copy_: source shape ", shape_str(source.shape()),
             " differs from destination ", shape_str(shape()));
  if (source.dtype() == dtype()) {
    copy_bytes(raw(), device(), source.raw(), source.device(), nbytes());
    return;
  }
  Tensor converted = source.to(Device::CPU).to(dtype());
  copy_bytes(raw(), device(), converted.raw(), Device::CPU, nbytes());
}

Tensor& Tensor::set_requires_grad(bool on) {
  TSTL_CHECK(!on || dtype_is_float(dtype()), "only floating tensors can require grad, got ",
             dtype_name(dtype()));
  impl().requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return Tensor(impl().grad); }
void Tensor::zero_grad() { impl().grad.reset(); }
void Tensor::set_grad(const Tensor& g) { impl().grad = g.impl_ptr(); }

// ---- Checks ---------------------------------------------------------------------------------

void check_same_device(const Tensor& a, const Tensor& b, const char* op) {
  TSTL_CHECK(a.device() == b.device(), op, ": inputs on different devices (", device_name(a.device()),
             " and ", device_name(b.device()), ")");
}

void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  TSTL_CHECK(a.dtype() == b.dtype(), op, ": inputs of different dtypes (", dtype_name(a.dtype()), " and ",
             dtype_name(b.dtype()), ")");
}

void check_shape(const Tensor& t, const Shape& expected, const char* op, const char* what) {
  TSTL_CHECK(t.shape() == expected, op, ": ", what, " has shape ", shape_str(t.shape()), ", expected ",
             shape_str(expected));
}

}  // namespace tstl
