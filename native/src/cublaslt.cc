// cuBLASLt GEMM bindings: Y[M,N] = X[M,K] W[N,K]^T (+ bias[N]) for row-major tensors, dlopened at run time
// (libcublasLt.so.13, then .so.12, or $ZIPVL_LIBCUBLASLT; never linked). The few declarations used are written here from the
// documented C API; the enum values are those of cublasLt.h / cublas_api.h / library_types.h (CUDA 12 and 13).
//
// Row-major trick: a row-major [R, C] matrix is the column-major [C, R] one with ld = C. So Y^T[N,M] = W X^T in
// column-major terms: A = W (stored col-major K x N, ld K, op T), B = X (col-major K x M, ld K, op N),
// D = Y (col-major N x M, ld N). The BIAS epilogue adds bias[i] to row i of D, i.e. to column i of row-major Y.
// One matmul descriptor + layouts + heuristic algorithm is cached per (M, N, K, dtype, bias) and reused.
#include "zv_cublaslt.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "driver.h"

namespace {

typedef int cublasStatus_t;                  // CUBLAS_STATUS_SUCCESS = 0
typedef struct cublasLtContext* cublasLtHandle_t;
typedef struct { uint64_t data[32]; } cublasLtMatmulDescOpaque_t;
typedef cublasLtMatmulDescOpaque_t* cublasLtMatmulDesc_t;
typedef struct { uint64_t data[8]; } cublasLtMatrixLayoutOpaque_t;
typedef cublasLtMatrixLayoutOpaque_t* cublasLtMatrixLayout_t;
typedef struct { uint64_t data[8]; } cublasLtMatmulPreferenceOpaque_t;
typedef cublasLtMatmulPreferenceOpaque_t* cublasLtMatmulPreference_t;
typedef struct { uint64_t data[8]; } cublasLtMatmulAlgo_t;
typedef struct {
  cublasLtMatmulAlgo_t algo;
  size_t workspaceSize;
  cublasStatus_t state;
  float wavesCount;
  int reserved[4];
} cublasLtMatmulHeuristicResult_t;

// library_types.h cudaDataType_t
constexpr int CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14;
// cublas_api.h
constexpr int CUBLAS_COMPUTE_32F = 68;
constexpr int CUBLAS_OP_N = 0, CUBLAS_OP_T = 1;
// cublasLt.h cublasLtMatmulDescAttributes_t
constexpr int CUBLASLT_MATMUL_DESC_TRANSA = 3, CUBLASLT_MATMUL_DESC_TRANSB = 4, CUBLASLT_MATMUL_DESC_EPILOGUE = 7,
              CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE = 26;
// cublasLtEpilogue_t
constexpr int CUBLASLT_EPILOGUE_DEFAULT = 1, CUBLASLT_EPILOGUE_BIAS = 4;
// cublasLtMatmulPreferenceAttributes_t
constexpr int CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1;

constexpr size_t kWorkspaceBytes = 32ull << 20;  // cuBLAS's recommendation for Hopper is 32 MiB

struct LtApi {
  cublasStatus_t (*create)(cublasLtHandle_t*);
  cublasStatus_t (*destroy)(cublasLtHandle_t);
  size_t (*getVersion)(void);
  const char* (*getStatusName)(cublasStatus_t);
  cublasStatus_t (*descCreate)(cublasLtMatmulDesc_t*, int computeType, int scaleType);
  cublasStatus_t (*descDestroy)(cublasLtMatmulDesc_t);
  cublasStatus_t (*descSet)(cublasLtMatmulDesc_t, int attr, const void* buf, size_t size);
  cublasStatus_t (*layoutCreate)(cublasLtMatrixLayout_t*, int type, uint64_t rows, uint64_t cols, int64_t ld);
  cublasStatus_t (*layoutDestroy)(cublasLtMatrixLayout_t);
  cublasStatus_t (*prefCreate)(cublasLtMatmulPreference_t*);
  cublasStatus_t (*prefDestroy)(cublasLtMatmulPreference_t);
  cublasStatus_t (*prefSet)(cublasLtMatmulPreference_t, int attr, const void* buf, size_t size);
  cublasStatus_t (*heuristic)(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                              cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatmulPreference_t, int,
                              cublasLtMatmulHeuristicResult_t*, int*);
  cublasStatus_t (*matmul)(cublasLtHandle_t, cublasLtMatmulDesc_t, const void* alpha, const void* A, cublasLtMatrixLayout_t,
                           const void* B, cublasLtMatrixLayout_t, const void* beta, const void* C, cublasLtMatrixLayout_t,
                           void* D, cublasLtMatrixLayout_t, const cublasLtMatmulAlgo_t*, void* workspace,
                           size_t workspaceSize, CUstream stream);
};

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

struct Lt {
  void* lib = nullptr;
  std::string path;
  LtApi api{};
  cublasLtHandle_t handle = nullptr;
  CUdeviceptr workspace = 0;
  std::map<std::tuple<uint64_t, uint64_t, uint64_t, int, bool>, Plan> plans;
};
Lt g_lt;

// Fallback names (cublasLtGetStatusName gives the same strings); used before the library is loaded, too.
const char* statusName(cublasStatus_t s) {
  if (g_lt.api.getStatusName) {
    const char* n = g_lt.api.getStatusName(s);
    if (n && *n) return n;
  }
  switch (s) {
    case 0: return "CUBLAS_STATUS_SUCCESS";
    case 1: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case 3: return "CUBLAS_STATUS_ALLOC_FAILED";
    case 7: return "CUBLAS_STATUS_INVALID_VALUE";
    case 8: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case 11: return "CUBLAS_STATUS_MAPPING_ERROR";
    case 13: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case 14: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case 15: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case 16: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}

void checkLt(Napi::Env env, cublasStatus_t s, const char* call) {
  if (s == 0) return;
  std::string name = statusName(s);
  Napi::Error err = Napi::Error::New(env, name + " (" + std::to_string(s) + ") in " + call);
  err.Set("cuName", Napi::String::New(env, name));
  err.Set("cuResult", Napi::Number::New(env, s));
  err.Set("cuCall", Napi::String::New(env, call));
  throw err;
}

std::vector<std::string> candidates(const std::string& arg) {
  if (!arg.empty()) return {arg};
  const char* e = std::getenv("ZIPVL_LIBCUBLASLT");
  if (e && *e) return {e};
  const char* home = std::getenv("CUDA_HOME");
  std::string lib = std::string(home && *home ? home : "/usr/local/cuda") + "/lib64/";
  // CUDA 12's library has the same C API and enum values for everything used here.
  return {"libcublasLt.so.13", "libcublasLt.so", lib + "libcublasLt.so.13", "libcublasLt.so.12", lib + "libcublasLt.so.12"};
}

void load(Napi::Env env, const std::string& arg) {
  if (g_lt.lib) return;
  std::string errors;
  void* h = nullptr;
  std::string used;
  for (auto& p : candidates(arg)) {
    dlerror();
    h = dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h) { used = p; break; }
    const char* why = dlerror();
    errors += (errors.empty() ? "" : "; ") + std::string(why ? why : p);
  }
  if (!h) throwCoded(env, "LIBCUBLASLT_NOT_FOUND", "cannot load cuBLASLt: " + errors);
  LtApi a{};
  std::string missing;
#define B(field, name)                                           \
  a.field = reinterpret_cast<decltype(a.field)>(dlsym(h, name)); \
  if (!a.field) missing += std::string(missing.empty() ? "" : ", ") + name;
  B(create, "cublasLtCreate") B(destroy, "cublasLtDestroy") B(getVersion, "cublasLtGetVersion")
  B(getStatusName, "cublasLtGetStatusName") B(descCreate, "cublasLtMatmulDescCreate")
  B(descDestroy, "cublasLtMatmulDescDestroy") B(descSet, "cublasLtMatmulDescSetAttribute")
  B(layoutCreate, "cublasLtMatrixLayoutCreate") B(layoutDestroy, "cublasLtMatrixLayoutDestroy")
  B(prefCreate, "cublasLtMatmulPreferenceCreate") B(prefDestroy, "cublasLtMatmulPreferenceDestroy")
  B(prefSet, "cublasLtMatmulPreferenceSetAttribute") B(heuristic, "cublasLtMatmulAlgoGetHeuristic")
  B(matmul, "cublasLtMatmul")
#undef B
  if (!missing.empty()) {
    dlclose(h);
    throwCoded(env, "LIBCUBLASLT_NOT_FOUND", "cuBLASLt library '" + used + "' lacks entry points: " + missing);
  }
  g_lt.api = a;
  g_lt.lib = h;
  g_lt.path = used;
}

int cudaType(Napi::Env env, const std::string& dtype) {
  if (dtype == "f32") return CUDA_R_32F;
  if (dtype == "f16") return CUDA_R_16F;
  if (dtype == "bf16") return CUDA_R_16BF;
  throwCoded(env, "ZIPVL_BAD_ARGUMENT", "gemm: dtype must be f32, f16 or bf16, got '" + dtype + "'");
}

uint64_t num(Napi::Env env, const Napi::Value& v, const char* what) {
  if (v.IsBigInt()) {
    bool lossless = true;
    uint64_t x = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (lossless) return x;
  } else if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (d >= 0 && d == static_cast<double>(static_cast<uint64_t>(d))) return static_cast<uint64_t>(d);
  } else if (v.IsUndefined() || v.IsNull()) {
    return 0;
  }
  throwCoded(env, "ZIPVL_BAD_ARGUMENT", std::string("gemm: ") + what + " must be a non-negative integer or BigInt");
}

Plan& plan(Napi::Env env, uint64_t M, uint64_t N, uint64_t K, int type, bool bias) {
  auto key = std::make_tuple(M, N, K, type, bias);
  auto it = g_lt.plans.find(key);
  if (it != g_lt.plans.end()) return it->second;
  LtApi& a = g_lt.api;
  Plan p;
  checkLt(env, a.descCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  int ta = CUBLAS_OP_T, tb = CUBLAS_OP_N, epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  checkLt(env, a.descSet(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), "cublasLtMatmulDescSetAttribute(TRANSA)");
  checkLt(env, a.descSet(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), "cublasLtMatmulDescSetAttribute(TRANSB)");
  checkLt(env, a.descSet(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi), "cublasLtMatmulDescSetAttribute(EPILOGUE)");
  if (bias) checkLt(env, a.descSet(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &type, sizeof type), "cublasLtMatmulDescSetAttribute(BIAS_DATA_TYPE)");
  checkLt(env, a.layoutCreate(&p.a, type, K, N, static_cast<int64_t>(K)), "cublasLtMatrixLayoutCreate(W)");
  checkLt(env, a.layoutCreate(&p.b, type, K, M, static_cast<int64_t>(K)), "cublasLtMatrixLayoutCreate(X)");
  checkLt(env, a.layoutCreate(&p.d, type, N, M, static_cast<int64_t>(N)), "cublasLtMatrixLayoutCreate(Y)");
  cublasLtMatmulPreference_t pref = nullptr;
  checkLt(env, a.prefCreate(&pref), "cublasLtMatmulPreferenceCreate");
  uint64_t ws = kWorkspaceBytes;
  cublasStatus_t s = a.prefSet(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  cublasLtMatmulHeuristicResult_t res{};
  int found = 0;
  if (s == 0) s = a.heuristic(g_lt.handle, p.desc, p.a, p.b, p.d, p.d, pref, 1, &res, &found);
  a.prefDestroy(pref);
  checkLt(env, s, "cublasLtMatmulAlgoGetHeuristic");
  if (found < 1) {
    throwCoded(env, "CUBLASLT_NO_ALGO", "cuBLASLt has no algorithm for M=" + std::to_string(M) + " N=" + std::to_string(N) +
                                            " K=" + std::to_string(K) + (bias ? " with bias" : ""));
  }
  p.algo = res.algo;
  return g_lt.plans.emplace(key, p).first->second;
}

}  // namespace

// blasInit(libPath?) -> {version, path, workspaceBytes}: loads cuBLASLt, creates the handle and the workspace.
// Needs init() first (the workspace is device memory of the primary context). Idempotent.
Napi::Value BlasInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CuApi& cuda = cu(env);
  load(env, info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "");
  if (!g_lt.handle) {
    checkLt(env, g_lt.api.create(&g_lt.handle), "cublasLtCreate");
    check(env, cuda.memAlloc(&g_lt.workspace, kWorkspaceBytes), "cuMemAlloc_v2");
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("version", Napi::Number::New(env, static_cast<double>(g_lt.api.getVersion())));
  o.Set("path", Napi::String::New(env, g_lt.path));
  o.Set("workspaceBytes", Napi::Number::New(env, static_cast<double>(kWorkspaceBytes)));
  return o;
}

// blasGemm(dtype, M, N, K, x, w, bias (0n: none), y, stream): Y[M,N] = X[M,K] W[N,K]^T + bias, all row-major,
// f32 accumulation and scale; queued on `stream` (0n: legacy stream).
void BlasGemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!g_lt.handle) throwCoded(env, "ZIPVL_NOT_INITIALIZED", "gemm: cuBLASLt is not initialized: call blasInit() first");
  cu(env);
  int type = cudaType(env, info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "");
  uint64_t M = num(env, info[1], "M"), N = num(env, info[2], "N"), K = num(env, info[3], "K");
  if (!M || !N || !K) throwCoded(env, "ZIPVL_BAD_ARGUMENT", "gemm: M, N and K must be at least 1");
  uint64_t x = num(env, info[4], "x"), w = num(env, info[5], "w"), bias = num(env, info[6], "bias"), y = num(env, info[7], "y");
  CUstream stream = reinterpret_cast<CUstream>(static_cast<uintptr_t>(num(env, info[8], "stream")));
  Plan& p = plan(env, M, N, K, type, bias != 0);
  if (bias) {
    void* bp = reinterpret_cast<void*>(static_cast<uintptr_t>(bias));
    checkLt(env, g_lt.api.descSet(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp), "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
  }
  const float alpha = 1.0f, beta = 0.0f;
  auto ptr = [](uint64_t v) { return reinterpret_cast<void*>(static_cast<uintptr_t>(v)); };
  checkLt(env, g_lt.api.matmul(g_lt.handle, p.desc, &alpha, ptr(w), p.a, ptr(x), p.b, &beta, ptr(y), p.d, ptr(y), p.d, &p.algo,
                               ptr(g_lt.workspace), kWorkspaceBytes, stream),
          "cublasLtMatmul");
}

// blasPlans() -> number of cached (M, N, K, dtype, bias) plans (tests check reuse).
Napi::Value BlasPlans(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(g_lt.plans.size()));
}
