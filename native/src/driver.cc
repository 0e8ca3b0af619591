// dlopen/dlsym of libcuda plus the error helpers shared by every binding.
#include "driver.h"

#include <dlfcn.h>

#include <cstdlib>
#include <vector>

static Driver g_driver;
// Per-thread flag: the primary context must be current on whichever JS thread (main or worker) calls in.
static thread_local bool t_ctx_current = false;

Driver& driver() { return g_driver; }

[[noreturn]] void throwCoded(Napi::Env env, const char* cuName, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("cuName", Napi::String::New(env, cuName));
  throw err;
}

[[noreturn]] void throwCu(Napi::Env env, CUresult r, const char* call) {
  const char* name = nullptr;
  // cuGetErrorName is only usable once libcuda is loaded; fall back to a numeric name otherwise.
  if (g_driver.api.getErrorName == nullptr || g_driver.api.getErrorName(r, &name) != CUDA_SUCCESS || !name) {
    name = nullptr;
  }
  std::string cuName = name ? name : "CUDA_ERROR_UNKNOWN_" + std::to_string(static_cast<int>(r));
  std::string msg = cuName + " (" + std::to_string(static_cast<int>(r)) + ") in " + call;
  Napi::Error err = Napi::Error::New(env, msg);
  err.Set("cuResult", Napi::Number::New(env, static_cast<int>(r)));
  err.Set("cuName", Napi::String::New(env, cuName));
  err.Set("cuCall", Napi::String::New(env, call));
  throw err;
}

static void* sym(void* h, const char* name, std::vector<std::string>& missing) {
  void* p = dlsym(h, name);
  if (!p) missing.emplace_back(name);
  return p;
}

void loadDriver(Napi::Env env, const std::string& pathArg, int ordinal) {
  Driver& d = g_driver;
  if (d.ready) return;
  std::string path = pathArg;
  if (path.empty()) {
    const char* e = std::getenv("ZIPVL_LIBCUDA");
    path = (e && *e) ? e : "libcuda.so.1";
  }
  if (!d.handle) {
    dlerror();
    // RTLD_LOCAL: keep cu* symbols out of the global namespace so a later real/mock load cannot be shadowed.
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* why = dlerror();
      throwCoded(env, "LIBCUDA_NOT_FOUND",
                 "cannot load the CUDA driver library '" + path + "': " + (why ? why : "unknown dlopen error"));
    }
    std::vector<std::string> missing;
    CuApi api;
#define ZV_BIND(field, name, params) api.field = reinterpret_cast<decltype(api.field)>(sym(h, name, missing));
    ZV_CU_REQUIRED(ZV_BIND)
#undef ZV_BIND
    std::vector<std::string> ignored;
    api.eventElapsed = reinterpret_cast<decltype(api.eventElapsed)>(sym(h, "cuEventElapsedTime_v2", ignored));
    if (!api.eventElapsed) api.eventElapsed = reinterpret_cast<decltype(api.eventElapsed)>(sym(h, "cuEventElapsedTime", missing));
    api.funcGetParamInfo = reinterpret_cast<decltype(api.funcGetParamInfo)>(sym(h, "cuFuncGetParamInfo", ignored));
    api.launchKernelEx = reinterpret_cast<decltype(api.launchKernelEx)>(sym(h, "cuLaunchKernelEx", ignored));
    if (!missing.empty()) {
      std::string list;
      for (auto& m : missing) list += (list.empty() ? "" : ", ") + m;
      dlclose(h);
      throwCoded(env, "LIBCUDA_SYMBOL_MISSING",
                 "the CUDA driver '" + path + "' lacks required entry points (driver too old?): " + list);
    }
    d.handle = h;
    d.path = path;
    d.api = api;
  }
  CuApi& a = d.api;
  check(env, a.init(0), "cuInit");
  int count = 0;
  check(env, a.deviceGetCount(&count), "cuDeviceGetCount");
  if (ordinal < 0 || ordinal >= count) {
    throwCoded(env, "CUDA_ERROR_INVALID_DEVICE",
               "device ordinal " + std::to_string(ordinal) + " out of range (" + std::to_string(count) + " devices)");
  }
  check(env, a.deviceGet(&d.device, ordinal), "cuDeviceGet");
  check(env, a.primaryCtxRetain(&d.ctx, d.device), "cuDevicePrimaryCtxRetain");
  check(env, a.ctxSetCurrent(d.ctx), "cuCtxSetCurrent");
  t_ctx_current = true;
  d.ready = true;
}

CuApi& cu(Napi::Env env) {
  Driver& d = g_driver;
  if (!d.ready) throwCoded(env, "ZIPVL_NOT_INITIALIZED", "the CUDA runtime is not initialized: call init() first");
  if (!t_ctx_current) {
    check(env, d.api.ctxSetCurrent(d.ctx), "cuCtxSetCurrent");
    t_ctx_current = true;
  }
  return d.api;
}
