// HDF5 helpers shared by token files (data/), checkpoints (train/) and attention dumps (eval/): a
// checked-call macro that reports the file, line and HDF5's own error message, an owning handle
// that closes itself, and string attributes.
#pragma once

#include <hdf5.h>

#include <string>
#include <utility>

#include "core/error.h"

namespace tstl::h5 {

// The innermost message of HDF5's current error stack ("" when there is none).
std::string last_error_message();
// Silences HDF5's automatic printing of error stacks; tstl reports errors itself.
void quiet();

// An HDF5 identifier (file, group, dataset, dataspace, type, attribute, property list) closed
// with the matching H5*close when the handle goes out of scope.
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  ~Handle() { reset(); }
  Handle(Handle&& other) noexcept : id_(std::exchange(other.id_, H5I_INVALID_HID)) {}
  Handle& operator=(Handle&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = std::exchange(other.id_, H5I_INVALID_HID);
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset();

 private:
  hid_t id_ = H5I_INVALID_HID;
};

// A scalar string attribute, written as a variable-length UTF-8 string (h5py reads it as str).
void write_string_attribute(hid_t object, const char* name, const std::string& value);
// Reads a string attribute written either way (variable or fixed length; a fixed one ends at
// its first NUL). A missing attribute or another type is an error naming `where` and `name`.
std::string read_string_attribute(hid_t object, const char* name, const std::string& where);

}  // namespace tstl::h5

// Evaluates an HDF5 call; a negative result throws tstl::Error with `what` (streamed parts),
// the call, and HDF5's message. Returns the call's value for identifiers.
#define H5_CHECK(call, ...)                                                                        \
  [&]() {                                                                                          \
    auto r_ = (call);                                                                              \
    if (r_ < 0)                                                                                    \
      TSTL_FAIL(::tstl::str(__VA_ARGS__), ": HDF5 call ", #call, " failed: ", ::tstl::h5::last_error_message()); \
    return r_;                                                                                     \
  }()
