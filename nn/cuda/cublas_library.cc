#include "nn/cuda/cublas_library.h"

#include <dlfcn.h>

#include <string>
#include <type_traits>

#include "absl/strings/str_cat.h"

namespace tpserve::nn {
namespace {

absl::StatusOr<CublasLibrary> Open() {
  const std::string name = absl::StrCat("libcublas.so.", CUBLAS_VER_MAJOR);
  void* handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    return absl::UnavailableError(absl::StrCat("cuBLAS: cannot load ", name, ": ", why ? why : "unknown error"));
  }
  CublasLibrary library;
  absl::Status missing;
  auto find = [&](auto& function, const char* symbol) {
    function = reinterpret_cast<std::remove_reference_t<decltype(function)>>(dlsym(handle, symbol));
    if (function == nullptr && missing.ok()) {
      missing = absl::UnavailableError(absl::StrCat("cuBLAS: ", name, " has no ", symbol));
    }
  };
  find(library.create, "cublasCreate_v2");
  find(library.destroy, "cublasDestroy_v2");
  find(library.set_stream, "cublasSetStream_v2");
  find(library.set_math_mode, "cublasSetMathMode");
  find(library.sgemm, "cublasSgemm_v2");
  find(library.sgemm_strided_batched, "cublasSgemmStridedBatched");
  if (!missing.ok()) return missing;
  return library;  // the handle stays open for the process's life
}

}  // namespace

absl::StatusOr<const CublasLibrary*> LoadCublas() {
  static const absl::StatusOr<CublasLibrary>* const library = new absl::StatusOr<CublasLibrary>(Open());
  if (!library->ok()) return library->status();
  return &**library;
}

}  // namespace tpserve::nn
