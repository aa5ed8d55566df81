// Tensor: a shape, a dtype, a device and a shared, reference-counted storage. Tensors are always
// contiguous row-major; reshape() returns a view sharing the storage, every other op copies.
// A tensor that requires grad either is a leaf (a parameter: its gradient accumulates in .grad())
// or was produced by an op and carries that op's autograd node (core/autograd.h).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace tstl {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

// One allocation on one device. CPU memory is 64-byte aligned; CUDA memory comes from the
// caching allocator (core/cuda_backend.cu) and returns to it when the last owner lets go.
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device = Device::CPU;
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

struct Node;
struct TensorImpl {
  std::shared_ptr<Storage> storage;
  size_t offset = 0;  // bytes into storage (views produced by reshape share it)
  Shape shape;
  DType dtype = DType::F32;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;  // leaves only: accumulated by backward()
  std::shared_ptr<Node> grad_fn;     // non-leaves: the op that produced this tensor
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32,
                     Device device = Device::CPU);
  // Copies host values into a new tensor of dtype_of<T> (then moved to `device`).
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape,
                            Device device = Device::CPU);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  int64_t size(int64_t i) const;  // negative i counts from the end
  int64_t numel() const { return shape_numel(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device; }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }

  void* raw() const { return static_cast<char*>(impl().storage->data) + impl().offset; }
  template <class T>
  T* data() const {
    TSTL_CHECK(dtype_of<T>::value == dtype(), "tensor holds ", dtype_name(dtype()),
               ", accessed as ", dtype_name(dtype_of<T>::value));
    return static_cast<T*>(raw());
  }

  // A view with the same storage; one dimension may be -1. Differentiable.
  Tensor reshape(const Shape& shape) const;
  // Copies (not differentiable): to another device, to another dtype.
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  Tensor clone() const;
  Tensor detach() const;  // same storage, no autograd history
  // Host copy of all elements, converted to T.
  template <class T>
  std::vector<T> to_vector() const;
  double item() const;  // the value of a one-element tensor

  void fill_(double value);           // in place, no autograd
  void copy_(const Tensor& source);   // in place, same shape, any device/dtype, no autograd

  bool requires_grad() const { return impl().requires_grad; }
  Tensor& set_requires_grad(bool on);
  Tensor grad() const;  // undefined until backward() reached this leaf
  void zero_grad();     // drops the accumulated gradient
  void set_grad(const Tensor& g);
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }

  // Backpropagates from this tensor: a scalar is seeded with 1, otherwise pass the seed.
  void backward() const;
  void backward(const Tensor& seed) const;

  TensorImpl& impl() const {
    TSTL_CHECK(impl_ != nullptr, "use of an undefined tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& other) const { return impl_ == other.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// Copies bytes between host and device memory (either direction), used by to() and copy_().
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);

// True when the CUDA backend was compiled in and a device is present.
bool cuda_available();
bool cuda_compiled();

// Asserts used at op entry.
void check_same_device(const Tensor& a, const Tensor& b, const char* op);
void check_same_dtype(const Tensor& a, const Tensor& b, const char* op);
void check_shape(const Tensor& t, const Shape& expected, const char* op, const char* what);

}  // namespace tstl
