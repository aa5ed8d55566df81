#include "core/hdf5.h"

namespace tstl::h5 {

namespace {
herr_t innermost(unsigned n, const H5E_error2_t* err, void* out) {
  if (n == 0 && err->desc) *static_cast<std::string*>(out) = err->desc;
  return 0;
}
}  // namespace

std::string last_error_message() {
  std::string message;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, innermost, &message);
  return message.empty() ? "no HDF5 error message" : message;
}

namespace {
// HDF5's exit handler closes every file still open; a file whose write failed (disk full) is
// left half-closed by the library and its exit handler then crashes. tstl closes what it writes
// explicitly, so the handler is not needed: it is switched off before the library starts.
const bool g_no_atexit = [] {
  H5dont_atexit();
  return true;
}();
}  // namespace

void quiet() {
  (void)g_no_atexit;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

void Handle::reset() {
  if (id_ < 0) return;
  switch (H5Iget_type(id_)) {
    case H5I_FILE: H5Fclose(id_); break;
    case H5I_GROUP: H5Gclose(id_); break;
    case H5I_DATASET: H5Dclose(id_); break;
    case H5I_DATASPACE: H5Sclose(id_); break;
    case H5I_DATATYPE: H5Tclose(id_); break;
    case H5I_ATTR: H5Aclose(id_); break;
    case H5I_GENPROP_LST: H5Pclose(id_); break;
    default: break;
  }
  id_ = H5I_INVALID_HID;
}

}  // namespace tstl::h5
