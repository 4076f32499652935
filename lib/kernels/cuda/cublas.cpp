// cublas.h with CUDA (PTQ_WITH_CUDA=ON). The toolkit's cublas_v2.h gives the types, enums and the declarations the
// function pointers are typed by; nothing here links against libcublas.
#include "kernels/cuda/cublas.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <climits>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/device.h"

namespace ptq::kernels::cuda {

namespace {

// cublasGemmEx by its exported overload (cublasComputeType_t); the static_cast fails to compile if the header's
// declaration differs. cublas_api.h's inline overload taking a cudaDataType compute type is not a library symbol.
using GemmExFn = decltype(static_cast<cublasStatus_t (*)(
                              cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                              const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*,
                              cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t)>(&cublasGemmEx));

struct Api {
  std::string library, error;  // the candidate loaded; why none was (empty when one was)
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasDestroy_v2) destroy = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  decltype(&cublasGetStatusString) status_string = nullptr;
  GemmExFn gemm_ex = nullptr;
};

template <class F>
void bind(void* lib, const char* name, F& fn, std::string& missing) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  if (fn == nullptr && missing.empty()) missing = name;
}

// Every function of Api from `lib`; the name of the first one it lacks, or empty.
std::string resolve(void* lib, Api& api) {
  std::string missing;
  bind(lib, "cublasCreate_v2", api.create, missing);
  bind(lib, "cublasDestroy_v2", api.destroy, missing);
  bind(lib, "cublasSetStream_v2", api.set_stream, missing);
  bind(lib, "cublasGetStatusString", api.status_string, missing);
  bind(lib, "cublasGemmEx", api.gemm_ex, missing);
  return missing;
}

Api load() {
  Api api;
  std::string tried;
  for (const char* name : kCublasCandidates) {
    void* lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* e = dlerror();
      tried += (tried.empty() ? "" : "; ") + std::string(e != nullptr ? e : name);
      continue;
    }
    const std::string missing = resolve(lib, api);
    if (missing.empty()) {
      api.library = name;  // kept open for the process's lifetime
      return api;
    }
    tried += (tried.empty() ? "" : "; ") + std::string(name) + " has no " + missing;
    dlclose(lib);
  }
  api = Api{};
  api.error = "no usable cuBLAS library (" + tried + ")";
  return api;
}

const Api& api() {
  static const Api a = load();
  return a;
}

// This thread's handles, indexed by device; a null handle with an error: cublasCreate failed there.
struct ThreadHandles {
  std::vector<cublasHandle_t> handle;
  std::vector<std::string> error;
  ThreadHandles() = default;
  ThreadHandles(const ThreadHandles&) = delete;
  ThreadHandles& operator=(const ThreadHandles&) = delete;
  ~ThreadHandles() {
    for (cublasHandle_t h : handle)
      if (h != nullptr) api().destroy(h);  // status ignored: nothing to do about it at thread exit
  }
};

// This thread's handle for its current device (made on first use), or null with the reason in `why`. Called by every
// F16/BF16 linear call (cuda::linear's choice): once the handle exists, a cudaGetDevice and a lookup.
cublasHandle_t current_handle(std::string& why) {
  const Api& a = api();
  if (!a.error.empty()) {
    why = a.error;
    return nullptr;
  }
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    why = unavailable_reason();
    return nullptr;
  }
  thread_local ThreadHandles t;
  if (size_t(dev) >= t.handle.size()) {
    t.handle.resize(size_t(dev) + 1, nullptr);
    t.error.resize(size_t(dev) + 1);
  }
  if (t.handle[dev] == nullptr && t.error[dev].empty()) {  // first use on this thread and device
    if (device_count() == 0) {  // cudaGetDevice may answer 0 without a driver; not remembered
      why = unavailable_reason();
      return nullptr;
    }
    cublasHandle_t h = nullptr;
    const cublasStatus_t s = a.create(&h);
    if (s == CUBLAS_STATUS_SUCCESS)
      t.handle[dev] = h;
    else
      t.error[dev] = "cublasCreate on device " + std::to_string(dev) + ": " + a.status_string(s);
  }
  why = t.error[dev];
  return t.handle[dev];
}

}  // namespace

std::string cublas_load_error() { return api().error; }
std::string cublas_library() { return api().library; }

std::string cublas_unavailable() {
  std::string why;
  current_handle(why);
  return why;
}

void cublas_gemm_xwt(WeightKind kind, const void* w, int64_t ldw, const void* x, int64_t ldx, int64_t m, int64_t n,
                     int64_t k, bool accumulate, float* y, void* stream) {
  if (kind != WeightKind::F16 && kind != WeightKind::BF16)
    throw std::invalid_argument(std::string("cublas_gemm_xwt: weights of kind ") + weight_kind_name(kind) +
                                ", expected F16 or BF16");
  const std::string shape = std::string(weight_kind_name(kind)) + " W [" + std::to_string(n) + ", " +
                            std::to_string(k) + "], " + std::to_string(m) + " tokens";
  for (int64_t v : {m, n, k, ldw, ldx})
    if (v <= 0 || v > INT_MAX)
      throw std::invalid_argument("cublas_gemm_xwt (" + shape + "): size or row stride " + std::to_string(v) +
                                  " outside cuBLAS's int range (1 .. 2^31 - 1)");
  std::string why;
  cublasHandle_t h = current_handle(why);
  if (h == nullptr) throw Error("cublas_gemm_xwt (" + shape + "): cuBLAS is unavailable: " + why);
  const Api& a = api();
  cublasStatus_t s = a.set_stream(h, static_cast<cudaStream_t>(stream));
  if (s != CUBLAS_STATUS_SUCCESS) throw Error(std::string("cublasSetStream: ") + a.status_string(s));
  const cudaDataType type = kind == WeightKind::F16 ? CUDA_R_16F : CUDA_R_16BF;
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  const GemmExShape g = cublas_xwt_shape(m, n, k, ldw, ldx);
  auto op = [](bool trans) { return trans ? CUBLAS_OP_T : CUBLAS_OP_N; };
  s = a.gemm_ex(h, op(g.trans_a), op(g.trans_b), int(g.rows), int(g.cols), int(g.depth), &alpha, w, type, int(g.lda),
                x, type, int(g.ldb), &beta, y, CUDA_R_32F, int(g.ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (s != CUBLAS_STATUS_SUCCESS) throw Error("cublasGemmEx (" + shape + "): " + a.status_string(s));
}

}  // namespace ptq::kernels::cuda
