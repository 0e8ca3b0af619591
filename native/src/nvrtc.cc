// Lazily dlopened NVRTC (run-time CUDA C++ compiler) and cuBLASLt (availability probe only for now).
// Neither has a header on CPU-only machines, so the few signatures used are declared here from the documented
// C API (nvrtc.h / cublasLt.h); both APIs are plain C with int enums and opaque handles.
#include "zv_nvrtc.h"

#include <dlfcn.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "driver.h"

namespace {

typedef int nvrtcResult;  // NVRTC_SUCCESS = 0, NVRTC_ERROR_COMPILATION = 6
constexpr nvrtcResult NVRTC_SUCCESS = 0;
typedef struct _nvrtcProgram* nvrtcProgram;

struct NvrtcApi {
  nvrtcResult (*version)(int*, int*);
  const char* (*getErrorString)(nvrtcResult);
  nvrtcResult (*createProgram)(nvrtcProgram*, const char*, const char*, int, const char* const*, const char* const*);
  nvrtcResult (*compileProgram)(nvrtcProgram, int, const char* const*);
  nvrtcResult (*getProgramLogSize)(nvrtcProgram, size_t*);
  nvrtcResult (*getProgramLog)(nvrtcProgram, char*);
  nvrtcResult (*getPTXSize)(nvrtcProgram, size_t*);
  nvrtcResult (*getPTX)(nvrtcProgram, char*);
  nvrtcResult (*getCUBINSize)(nvrtcProgram, size_t*);
  nvrtcResult (*getCUBIN)(nvrtcProgram, char*);
  nvrtcResult (*destroyProgram)(nvrtcProgram*);
};

NvrtcApi g_nvrtc;
void* g_nvrtcHandle = nullptr;

// Candidate paths: an explicit override is taken alone (so tests can force "not found"); otherwise the CUDA 13
// soname, the unversioned dev link, then the toolkit's lib64 in case it is not in the loader cache.
std::vector<std::string> candidates(const std::string& arg, const char* envName, const char* so13, const char* so) {
  if (!arg.empty()) return {arg};
  const char* e = std::getenv(envName);
  if (e && *e) return {e};
  const char* home = std::getenv("CUDA_HOME");
  std::string lib = std::string(home && *home ? home : "/usr/local/cuda") + "/lib64/";
  return {so13, so, lib + so13};
}

void* openFirst(const std::vector<std::string>& paths, std::string& errors) {
  for (auto& p : paths) {
    dlerror();
    void* h = dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h) return h;
    const char* why = dlerror();
    errors += (errors.empty() ? "" : "; ") + std::string(why ? why : p);
  }
  return nullptr;
}

void loadNvrtc(Napi::Env env, const std::string& pathArg) {
  if (g_nvrtcHandle) return;
  std::string errors;
  void* h = openFirst(candidates(pathArg, "ZIPVL_LIBNVRTC", "libnvrtc.so.13", "libnvrtc.so"), errors);
  if (!h) throwCoded(env, "LIBNVRTC_NOT_FOUND", "cannot load NVRTC: " + errors);
  NvrtcApi a;
  std::string missing;
#define B(field, name)                                                    \
  a.field = reinterpret_cast<decltype(a.field)>(dlsym(h, name));          \
  if (!a.field) missing += std::string(missing.empty() ? "" : ", ") + name;
  B(version, "nvrtcVersion") B(getErrorString, "nvrtcGetErrorString") B(createProgram, "nvrtcCreateProgram")
  B(compileProgram, "nvrtcCompileProgram") B(getProgramLogSize, "nvrtcGetProgramLogSize")
  B(getProgramLog, "nvrtcGetProgramLog") B(getPTXSize, "nvrtcGetPTXSize") B(getPTX, "nvrtcGetPTX")
  B(getCUBINSize, "nvrtcGetCUBINSize") B(getCUBIN, "nvrtcGetCUBIN") B(destroyProgram, "nvrtcDestroyProgram")
#undef B
  if (!missing.empty()) {
    dlclose(h);
    throwCoded(env, "LIBNVRTC_NOT_FOUND", "NVRTC library lacks entry points: " + missing);
  }
  g_nvrtc = a;
  g_nvrtcHandle = h;
}

[[noreturn]] void throwNvrtc(Napi::Env env, nvrtcResult r, const char* call, const std::string& log) {
  const char* name = g_nvrtc.getErrorString ? g_nvrtc.getErrorString(r) : nullptr;
  std::string n = name ? name : "NVRTC_ERROR_" + std::to_string(r);
  Napi::Error err = Napi::Error::New(env, n + " (" + std::to_string(r) + ") in " + call + (log.empty() ? "" : ":\n" + log));
  err.Set("cuName", Napi::String::New(env, n));
  err.Set("cuResult", Napi::Number::New(env, r));
  err.Set("cuCall", Napi::String::New(env, call));
  err.Set("nvrtcLog", Napi::String::New(env, log));
  throw err;
}

// A cubin is requested by a real-architecture target (-arch=sm_90a / --gpu-architecture=sm_80); compute_XX or no
// arch at all yields PTX, which the driver JIT-compiles at module load.
bool wantsCubin(const std::vector<std::string>& opts) {
  for (size_t i = 0; i < opts.size(); i++) {
    const std::string& o = opts[i];
    for (const char* pre : {"-arch=", "--gpu-architecture=", "-arch", "--gpu-architecture"}) {
      std::string p = pre;
      if (o.rfind(p, 0) != 0) continue;
      std::string v = o.size() > p.size() ? o.substr(p.size()) : (i + 1 < opts.size() ? opts[i + 1] : "");
      if (v.rfind("sm_", 0) == 0) return true;
    }
  }
  return false;
}

}  // namespace

// nvrtcCompile(source, name, options: string[], headers: {name: text}, libPath?) -> {kind, image, log}
Napi::Value NvrtcCompile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string src = info[0].As<Napi::String>();
  std::string name = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "kernel.cu";
  std::vector<std::string> opts, hdrNames, hdrTexts;
  if (info[2].IsArray()) {
    Napi::Array a = info[2].As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) opts.push_back(a.Get(i).ToString());
  }
  if (info[3].IsObject()) {
    Napi::Object h = info[3].As<Napi::Object>();
    Napi::Array keys = h.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); i++) {
      hdrNames.push_back(keys.Get(i).ToString());
      hdrTexts.push_back(h.Get(keys.Get(i)).ToString());
    }
  }
  loadNvrtc(env, info[4].IsString() ? info[4].As<Napi::String>().Utf8Value() : "");
  std::vector<const char*> optp, hn, ht;
  for (auto& o : opts) optp.push_back(o.c_str());
  for (size_t i = 0; i < hdrNames.size(); i++) { hn.push_back(hdrNames[i].c_str()); ht.push_back(hdrTexts[i].c_str()); }

  nvrtcProgram prog = nullptr;
  nvrtcResult r = g_nvrtc.createProgram(&prog, src.c_str(), name.c_str(), static_cast<int>(hn.size()),
                                        ht.empty() ? nullptr : ht.data(), hn.empty() ? nullptr : hn.data());
  if (r != NVRTC_SUCCESS) throwNvrtc(env, r, "nvrtcCreateProgram", "");
  nvrtcResult cr = g_nvrtc.compileProgram(prog, static_cast<int>(optp.size()), optp.empty() ? nullptr : optp.data());
  std::string log;
  size_t logSize = 0;
  if (g_nvrtc.getProgramLogSize(prog, &logSize) == NVRTC_SUCCESS && logSize > 1) {
    log.resize(logSize);
    g_nvrtc.getProgramLog(prog, log.data());
    log.resize(logSize - 1);  // drop the terminating NUL
  }
  if (cr != NVRTC_SUCCESS) {
    g_nvrtc.destroyProgram(&prog);
    throwNvrtc(env, cr, "nvrtcCompileProgram", log);
  }
  bool cubin = wantsCubin(opts);
  size_t size = 0;
  r = cubin ? g_nvrtc.getCUBINSize(prog, &size) : g_nvrtc.getPTXSize(prog, &size);
  Napi::Uint8Array image = Napi::Uint8Array::New(env, size);
  // PTX size includes its NUL terminator, which cuModuleLoadData needs; keep it in the image.
  if (r == NVRTC_SUCCESS) r = cubin ? g_nvrtc.getCUBIN(prog, reinterpret_cast<char*>(image.Data()))
                                    : g_nvrtc.getPTX(prog, reinterpret_cast<char*>(image.Data()));
  g_nvrtc.destroyProgram(&prog);
  if (r != NVRTC_SUCCESS) throwNvrtc(env, r, cubin ? "nvrtcGetCUBIN" : "nvrtcGetPTX", log);
  Napi::Object out = Napi::Object::New(env);
  out.Set("kind", Napi::String::New(env, cubin ? "cubin" : "ptx"));
  out.Set("image", image);
  out.Set("log", Napi::String::New(env, log));
  return out;
}

// nvrtcVersion(libPath?) -> [major, minor]
Napi::Value NvrtcVersion(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  loadNvrtc(env, info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "");
  int maj = 0, min = 0;
  nvrtcResult r = g_nvrtc.version(&maj, &min);
  if (r != NVRTC_SUCCESS) throwNvrtc(env, r, "nvrtcVersion", "");
  Napi::Array a = Napi::Array::New(env, 2);
  a.Set(0u, Napi::Number::New(env, maj));
  a.Set(1u, Napi::Number::New(env, min));
  return a;
}

// cublasLtInfo(libPath?) -> {available, version, error}. Only a probe: the GEMM bindings come later.
Napi::Value CublasLtInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  static void* handle = nullptr;
  static size_t (*getVersion)(void) = nullptr;
  Napi::Object out = Napi::Object::New(env);
  std::string errors;
  if (!handle) {
    std::string arg = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
    void* h = openFirst(candidates(arg, "ZIPVL_LIBCUBLASLT", "libcublasLt.so.13", "libcublasLt.so"), errors);
    if (h) {
      getVersion = reinterpret_cast<size_t (*)(void)>(dlsym(h, "cublasLtGetVersion"));
      if (getVersion) handle = h; else { errors = "cublasLtGetVersion not exported"; dlclose(h); }
    }
  }
  out.Set("available", Napi::Boolean::New(env, handle != nullptr));
  out.Set("version", handle ? Napi::Number::New(env, static_cast<double>(getVersion())) : env.Null());
  out.Set("error", handle ? env.Null() : Napi::String::New(env, errors));
  return out;
}
