#include "core/hdf5.h"

#include <cstring>

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

namespace {
Handle utf8_string_type() {
  Handle type(H5_CHECK(H5Tcopy(H5T_C_S1), "string type"));
  H5_CHECK(H5Tset_size(type, H5T_VARIABLE), "string type");
  H5_CHECK(H5Tset_cset(type, H5T_CSET_UTF8), "string type");
  return type;
}
}  // namespace

void write_string_attribute(hid_t object, const char* name, const std::string& value) {
  Handle type = utf8_string_type();
  Handle space(H5_CHECK(H5Screate(H5S_SCALAR), "attribute ", name));
  Handle attr(H5_CHECK(H5Acreate2(object, name, type, space, H5P_DEFAULT, H5P_DEFAULT), "attribute ", name));
  const char* p = value.c_str();
  H5_CHECK(H5Awrite(attr, type, &p), "attribute ", name);
}

std::string read_string_attribute(hid_t object, const char* name, const std::string& where) {
  TSTL_CHECK(H5Aexists(object, name) > 0, where, ": attribute '", name, "' is missing");
  Handle attr(H5_CHECK(H5Aopen(object, name, H5P_DEFAULT), where, " attribute ", name));
  Handle type(H5_CHECK(H5Aget_type(attr), where, " attribute ", name));
  TSTL_CHECK(H5Tget_class(type) == H5T_STRING, where, ": attribute '", name, "' is not a string");
  if (H5Tis_variable_str(type) > 0) {
    Handle memory = utf8_string_type();
    char* p = nullptr;
    H5_CHECK(H5Aread(attr, memory, &p), where, " attribute ", name);
    std::string value = p ? p : "";
    H5free_memory(p);
    return value;
  }
  std::string value(H5Tget_size(type), '\0');
  H5_CHECK(H5Aread(attr, type, value.data()), where, " attribute ", name);
  value.resize(std::strlen(value.c_str()));
  return value;
}

}  // namespace tstl::h5
