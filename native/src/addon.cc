// zipvl_native: thin, synchronous N-API bindings over the run-time loaded CUDA driver (see driver.h).
// Handles (device pointers, modules, functions, streams, events, graphs) cross into JS as BigInt so 64-bit values
// never lose bits; the TS layer (src/runtime/native.ts) wraps them in typed classes and maps errors to ZV30xx codes.
#include <dlfcn.h>

#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "driver.h"
#include "zv_cublaslt.h"
#include "zv_nvrtc.h"

namespace {

uint64_t u64(Napi::Env env, const Napi::Value& v, const char* what) {
  if (v.IsUndefined() || v.IsNull()) return 0;
  if (v.IsBigInt()) {
    bool lossless = true;
    uint64_t x = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throwCoded(env, "ZIPVL_BAD_ARGUMENT", std::string(what) + ": BigInt out of uint64 range");
    return x;
  }
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (d < 0 || d != static_cast<double>(static_cast<uint64_t>(d)))
      throwCoded(env, "ZIPVL_BAD_ARGUMENT", std::string(what) + ": expected a non-negative integer");
    return static_cast<uint64_t>(d);
  }
  throwCoded(env, "ZIPVL_BAD_ARGUMENT", std::string(what) + ": expected a BigInt handle or integer");
}

template <typename T>
T handle(Napi::Env env, const Napi::Value& v, const char* what) {
  return reinterpret_cast<T>(static_cast<uintptr_t>(u64(env, v, what)));
}

Napi::BigInt big(Napi::Env env, const void* p) { return Napi::BigInt::New(env, static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p))); }

struct Bytes {
  uint8_t* data = nullptr;
  size_t size = 0;
};

// Accepts ArrayBuffer, any TypedArray, DataView or Buffer; undefined/null -> empty.
Bytes bytes(Napi::Env env, const Napi::Value& v, const char* what) {
  Bytes b;
  if (v.IsUndefined() || v.IsNull()) return b;
  if (v.IsArrayBuffer()) {
    auto ab = v.As<Napi::ArrayBuffer>();
    b.data = static_cast<uint8_t*>(ab.Data());
    b.size = ab.ByteLength();
  } else if (v.IsTypedArray()) {
    auto ta = v.As<Napi::TypedArray>();
    b.data = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    b.size = ta.ByteLength();
  } else if (v.IsDataView()) {
    auto dv = v.As<Napi::DataView>();
    b.data = static_cast<uint8_t*>(dv.ArrayBuffer().Data()) + dv.ByteOffset();
    b.size = dv.ByteLength();
  } else {
    throwCoded(env, "ZIPVL_BAD_ARGUMENT", std::string(what) + ": expected an ArrayBuffer or ArrayBufferView");
  }
  return b;
}

int attr(Napi::Env env, CuApi& a, CUdevice_attribute at) {
  int v = 0;
  check(env, a.deviceGetAttribute(&v, at, driver().device), "cuDeviceGetAttribute");
  return v;
}

Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int ordinal = info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 0;
  loadDriver(env, info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "", ordinal);
  CuApi& a = cu(env);
  Driver& d = driver();
  char name[256] = {0};
  check(env, a.deviceGetName(name, sizeof(name) - 1, d.device), "cuDeviceGetName");
  size_t total = 0;
  check(env, a.deviceTotalMem(&total, d.device), "cuDeviceTotalMem_v2");
  int version = 0;
  check(env, a.driverGetVersion(&version), "cuDriverGetVersion");
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", Napi::String::New(env, name));
  Napi::Array cc = Napi::Array::New(env, 2);
  cc.Set(0u, Napi::Number::New(env, attr(env, a, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)));
  cc.Set(1u, Napi::Number::New(env, attr(env, a, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)));
  o.Set("computeCapability", cc);
  o.Set("smCount", Napi::Number::New(env, attr(env, a, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)));
  o.Set("totalMem", Napi::Number::New(env, static_cast<double>(total)));
  o.Set("maxSharedPerBlock", Napi::Number::New(env, attr(env, a, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK)));
  o.Set("maxSharedPerBlockOptin", Napi::Number::New(env, attr(env, a, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)));
  o.Set("maxSharedPerSM", Napi::Number::New(env, attr(env, a, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR)));
  o.Set("maxThreadsPerBlock", Napi::Number::New(env, attr(env, a, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)));
  o.Set("warpSize", Napi::Number::New(env, attr(env, a, CU_DEVICE_ATTRIBUTE_WARP_SIZE)));
  o.Set("l2CacheBytes", Napi::Number::New(env, attr(env, a, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)));
  o.Set("driverVersion", Napi::Number::New(env, version));
  o.Set("ordinal", Napi::Number::New(env, ordinal));
  o.Set("libcudaPath", Napi::String::New(env, d.path));
  return o;
}

Napi::Value MemGetInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t freeB = 0, total = 0;
  check(env, cu(env).memGetInfo(&freeB, &total), "cuMemGetInfo_v2");
  Napi::Object o = Napi::Object::New(env);
  o.Set("free", Napi::Number::New(env, static_cast<double>(freeB)));
  o.Set("total", Napi::Number::New(env, static_cast<double>(total)));
  return o;
}

Napi::Value MemAlloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CUdeviceptr p = 0;
  check(env, cu(env).memAlloc(&p, u64(env, info[0], "memAlloc bytes")), "cuMemAlloc_v2");
  return Napi::BigInt::New(env, static_cast<uint64_t>(p));
}

void MemFree(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check(env, cu(env).memFree(u64(env, info[0], "memFree ptr")), "cuMemFree_v2");
}

// htod(dst, view, stream?): with a stream argument the copy is queued (cuMemcpyHtoDAsync_v2; from pageable memory
// the driver stages the source before returning, so the JS buffer may be reused at once); without, it is blocking.
void Htod(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CuApi& a = cu(env);
  CUdeviceptr dst = u64(env, info[0], "htod dst");
  Bytes b = bytes(env, info[1], "htod src");
  if (b.size == 0) return;
  if (info.Length() > 2 && !info[2].IsUndefined())
    check(env, a.memcpyHtoDAsync(dst, b.data, b.size, handle<CUstream>(env, info[2], "stream")), "cuMemcpyHtoDAsync_v2");
  else
    check(env, a.memcpyHtoD(dst, b.data, b.size), "cuMemcpyHtoD_v2");
}

// dtoh(view, src, stream?): to pageable memory even the async form returns only once the copy is done.
void Dtoh(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CuApi& a = cu(env);
  Bytes b = bytes(env, info[0], "dtoh dst");
  CUdeviceptr src = u64(env, info[1], "dtoh src");
  if (b.size == 0) return;
  if (info.Length() > 2 && !info[2].IsUndefined())
    check(env, a.memcpyDtoHAsync(b.data, src, b.size, handle<CUstream>(env, info[2], "stream")), "cuMemcpyDtoHAsync_v2");
  else
    check(env, a.memcpyDtoH(b.data, src, b.size), "cuMemcpyDtoH_v2");
}

void MemsetD32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check(env, cu(env).memsetD32Async(u64(env, info[0], "ptr"), info[1].As<Napi::Number>().Uint32Value(),
                                    u64(env, info[2], "count"), handle<CUstream>(env, info[3], "stream")),
        "cuMemsetD32Async");
}

void MemsetD8(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check(env, cu(env).memsetD8Async(u64(env, info[0], "ptr"), static_cast<unsigned char>(info[1].As<Napi::Number>().Uint32Value()),
                                   u64(env, info[2], "count"), handle<CUstream>(env, info[3], "stream")),
        "cuMemsetD8Async");
}

Napi::Value StreamCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CUstream s = nullptr;
  // Default (blocking) streams order against the legacy NULL stream, so plain blocking copies after a launch see
  // its results; pass true for a non-blocking stream when that implicit ordering is unwanted.
  unsigned flags = info[0].IsBoolean() && info[0].As<Napi::Boolean>() ? CU_STREAM_NON_BLOCKING : CU_STREAM_DEFAULT;
  check(env, cu(env).streamCreate(&s, flags), "cuStreamCreate");
  return big(env, s);
}
void StreamSynchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check(env, cu(env).streamSynchronize(handle<CUstream>(env, info[0], "stream")), "cuStreamSynchronize");
}
void StreamDestroy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check(env, cu(env).streamDestroy(handle<CUstream>(env, info[0], "stream")), "cuStreamDestroy_v2");
}

// moduleLoad(image): cubin/fatbin as-is; PTX text gets the NUL terminator cuModuleLoadData requires if missing.
Napi::Value ModuleLoad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CuApi& a = cu(env);
  Bytes b = bytes(env, info[0], "moduleLoad image");
  if (b.size == 0) throwCoded(env, "ZIPVL_BAD_ARGUMENT", "moduleLoad: empty image");
  static const uint8_t elf[4] = {0x7f, 'E', 'L', 'F'};
  static const uint8_t fatbin[4] = {0x50, 0xed, 0x55, 0xba};  // 0xba55ed50 little-endian
  bool binary = b.size >= 4 && (!memcmp(b.data, elf, 4) || !memcmp(b.data, fatbin, 4));
  std::vector<uint8_t> text;
  const void* image = b.data;
  if (!binary && b.data[b.size - 1] != 0) {
    text.assign(b.data, b.data + b.size);
    text.push_back(0);
    image = text.data();
  }
  CUmodule m = nullptr;
  check(env, a.moduleLoadData(&m, image), "cuModuleLoadData");
  return big(env, m);
}
std::unordered_map<CUfunction, long long> g_paramSize;
std::mutex g_paramMutex;  // worker threads share this process-wide cache

void ModuleUnload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  {
    std::lock_guard<std::mutex> lock(g_paramMutex);
    g_paramSize.clear();  // function handles of the unloaded module may be reused for other kernels
  }
  check(env, cu(env).moduleUnload(handle<CUmodule>(env, info[0], "module")), "cuModuleUnload");
}
Napi::Value GetFunction(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CUfunction f = nullptr;
  std::string name = info[1].As<Napi::String>();
  check(env, cu(env).moduleGetFunction(&f, handle<CUmodule>(env, info[0], "module"), name.c_str()), "cuModuleGetFunction");
  return big(env, f);
}
void SetMaxDynamicShared(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check(env, cu(env).funcSetAttribute(handle<CUfunction>(env, info[0], "function"), CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                      info[1].As<Napi::Number>().Int32Value()),
        "cuFuncSetAttribute");
}

// maxActiveBlocks(fn, threads, dynamicSmem): CTAs of this size one SM holds at once (registers, shared memory, threads).
Napi::Value MaxActiveBlocks(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int n = 0;
  check(env, cu(env).occupancyMaxActiveBlocks(&n, handle<CUfunction>(env, info[0], "function"), info[1].As<Napi::Number>().Int32Value(),
                                              static_cast<size_t>(info[2].As<Napi::Number>().Int64Value())),
        "cuOccupancyMaxActiveBlocksPerMultiprocessor");
  return Napi::Number::New(env, n);
}

void dims(Napi::Env env, const Napi::Value& v, unsigned out[3], const char* what) {
  out[0] = out[1] = out[2] = 1;
  if (!v.IsArray()) throwCoded(env, "ZIPVL_BAD_ARGUMENT", std::string(what) + ": expected [x, y, z]");
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < 3 && i < a.Length(); i++) {
    double d = a.Get(i).ToNumber().DoubleValue();
    if (!(d >= 1 && d <= 4294967295.0) || d != static_cast<double>(static_cast<unsigned>(d)))
      throwCoded(env, "ZIPVL_BAD_ARGUMENT", std::string(what) + ": dimensions must be positive integers");
    out[i] = static_cast<unsigned>(d);
  }
}

// Size of parameter 0 per function (-1: unknown), from cuFuncGetParamInfo where the driver has it (12.4+);
// cached in g_paramSize (declared above ModuleUnload, which clears it).

long long paramSize(CuApi& a, CUfunction f) {
  std::lock_guard<std::mutex> lock(g_paramMutex);
  auto it = g_paramSize.find(f);
  if (it != g_paramSize.end()) return it->second;
  long long n = -1;
  if (a.funcGetParamInfo) {
    size_t off = 0, size = 0, off1 = 0, size1 = 0;
    CUresult r = a.funcGetParamInfo(f, 0, &off, &size);
    if (r == CUDA_SUCCESS && a.funcGetParamInfo(f, 1, &off1, &size1) != CUDA_SUCCESS) n = static_cast<long long>(size);
    else if (r == CUDA_ERROR_INVALID_VALUE) n = 0;  // no parameters at all
    // more than one parameter: leave unknown (-1); the zipvl ABI is one struct, the driver still checks sizes.
  }
  g_paramSize[f] = n;
  return n;
}

// launch(fn, grid, block, sharedBytes, stream, argsBlock, pdl): the kernel takes ONE by-value struct whose bytes are
// argsBlock. It is passed through cuLaunchKernel's `extra` (BUFFER_POINTER + BUFFER_SIZE) so the driver gets the
// exact byte count rather than trusting the kernel signature; the block is copied to 8-byte aligned storage first.
// pdl true: cuLaunchKernelEx with programmatic stream serialization (the kernel may start before the previous one
// on the stream ends and must griddepcontrol.wait before reading its outputs); a driver without it launches plainly.
void Launch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CuApi& a = cu(env);
  CUfunction f = handle<CUfunction>(env, info[0], "function");
  unsigned g[3], b[3];
  dims(env, info[1], g, "grid");
  dims(env, info[2], b, "block");
  unsigned shared = info[3].IsNumber() ? info[3].As<Napi::Number>().Uint32Value() : 0;
  CUstream s = handle<CUstream>(env, info[4], "stream");
  Bytes args = bytes(env, info[5], "argsBlock");
  long long expect = paramSize(a, f);
  if (expect >= 0 && static_cast<size_t>(expect) != args.size)
    throwCoded(env, "ZIPVL_ARGS_SIZE_MISMATCH",
               "launch: args block is " + std::to_string(args.size) + " bytes but the kernel's parameter is " +
                   std::to_string(expect) + " bytes");
  std::vector<uint64_t> aligned((args.size + 7) / 8);
  if (args.size) memcpy(aligned.data(), args.data, args.size);
  size_t size = args.size;
  void* extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, aligned.data(), CU_LAUNCH_PARAM_BUFFER_SIZE, &size, CU_LAUNCH_PARAM_END};
  const bool pdl = info.Length() > 6 && info[6].IsBoolean() && info[6].As<Napi::Boolean>().Value();
  if (pdl && a.launchKernelEx) {
    CUlaunchAttribute attr;
    memset(&attr, 0, sizeof attr);
    attr.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attr.value.programmaticStreamSerializationAllowed = 1;
    CUlaunchConfig c = {g[0], g[1], g[2], b[0], b[1], b[2], shared, s, &attr, 1};
    check(env, a.launchKernelEx(&c, f, nullptr, args.size ? extra : nullptr), "cuLaunchKernelEx");
    return;
  }
  check(env, a.launchKernel(f, g[0], g[1], g[2], b[0], b[1], b[2], shared, s, nullptr, args.size ? extra : nullptr),
        "cuLaunchKernel");
}

Napi::Value EventCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CUevent e = nullptr;
  check(env, cu(env).eventCreate(&e, CU_EVENT_DEFAULT), "cuEventCreate");
  return big(env, e);
}
void EventRecord(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check(env, cu(env).eventRecord(handle<CUevent>(env, info[0], "event"), handle<CUstream>(env, info[1], "stream")), "cuEventRecord");
}
void EventSynchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check(env, cu(env).eventSynchronize(handle<CUevent>(env, info[0], "event")), "cuEventSynchronize");
}
Napi::Value EventElapsed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  float ms = 0;
  check(env, cu(env).eventElapsed(&ms, handle<CUevent>(env, info[0], "start"), handle<CUevent>(env, info[1], "end")),
        "cuEventElapsedTime");
  return Napi::Number::New(env, ms);
}
void EventDestroy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check(env, cu(env).eventDestroy(handle<CUevent>(env, info[0], "event")), "cuEventDestroy_v2");
}

// Thread-local capture mode: only this thread is barred from unsafe calls (e.g. cuMemAlloc) while capturing.
void BeginCapture(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int mode = info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
  check(env, cu(env).streamBeginCapture(handle<CUstream>(env, info[0], "stream"), static_cast<CUstreamCaptureMode>(mode)),
        "cuStreamBeginCapture_v2");
}
Napi::Value EndCapture(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CUgraph g = nullptr;
  check(env, cu(env).streamEndCapture(handle<CUstream>(env, info[0], "stream"), &g), "cuStreamEndCapture");
  return big(env, g);
}
Napi::Value GraphInstantiate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CUgraphExec e = nullptr;
  check(env, cu(env).graphInstantiate(&e, handle<CUgraph>(env, info[0], "graph"), 0), "cuGraphInstantiateWithFlags");
  return big(env, e);
}
void GraphLaunch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check(env, cu(env).graphLaunch(handle<CUgraphExec>(env, info[0], "graphExec"), handle<CUstream>(env, info[1], "stream")),
        "cuGraphLaunch");
}
void GraphExecDestroy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check(env, cu(env).graphExecDestroy(handle<CUgraphExec>(env, info[0], "graphExec")), "cuGraphExecDestroy");
}
void GraphDestroy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check(env, cu(env).graphDestroy(handle<CUgraph>(env, info[0], "graph")), "cuGraphDestroy");
}

void Synchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check(env, cu(env).ctxSynchronize(), "cuCtxSynchronize");
}

// Test hook: the mock driver (native/mock) exports zvmock_last_launch; a real driver does not -> null.
Napi::Value MockLastLaunch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  void* h = driver().handle;
  auto fn = h ? reinterpret_cast<int (*)(unsigned long long*)>(dlsym(h, "zvmock_last_launch")) : nullptr;
  if (!fn) return env.Null();
  unsigned long long v[10] = {0};
  fn(v);
  Napi::Object o = Napi::Object::New(env);
  auto arr3 = [&](int at) {
    Napi::Array a = Napi::Array::New(env, 3);
    for (uint32_t i = 0; i < 3; i++) a.Set(i, Napi::Number::New(env, static_cast<double>(v[at + i])));
    return a;
  };
  o.Set("grid", arr3(0));
  o.Set("block", arr3(3));
  o.Set("sharedBytes", Napi::Number::New(env, static_cast<double>(v[6])));
  o.Set("argsBytes", Napi::Number::New(env, static_cast<double>(v[7])));
  o.Set("launches", Napi::Number::New(env, static_cast<double>(v[8])));
  o.Set("pdlLaunches", Napi::Number::New(env, static_cast<double>(v[9])));
  return o;
}

}  // namespace

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
#define FN(name, impl) exports.Set(name, Napi::Function::New(env, impl, name));
  FN("init", Init) FN("memGetInfo", MemGetInfo) FN("memAlloc", MemAlloc) FN("memFree", MemFree)
  FN("htod", Htod) FN("dtoh", Dtoh) FN("memsetD32", MemsetD32) FN("memsetD8", MemsetD8)
  FN("streamCreate", StreamCreate) FN("streamSynchronize", StreamSynchronize) FN("streamDestroy", StreamDestroy)
  FN("moduleLoad", ModuleLoad) FN("moduleUnload", ModuleUnload) FN("getFunction", GetFunction)
  FN("setMaxDynamicShared", SetMaxDynamicShared) FN("maxActiveBlocks", MaxActiveBlocks) FN("launch", Launch)
  FN("eventCreate", EventCreate) FN("eventRecord", EventRecord) FN("eventSynchronize", EventSynchronize)
  FN("eventElapsed", EventElapsed) FN("eventDestroy", EventDestroy)
  FN("beginCapture", BeginCapture) FN("endCapture", EndCapture) FN("graphInstantiate", GraphInstantiate)
  FN("graphLaunch", GraphLaunch) FN("graphExecDestroy", GraphExecDestroy) FN("graphDestroy", GraphDestroy)
  FN("synchronize", Synchronize) FN("mockLastLaunch", MockLastLaunch)
  FN("nvrtcCompile", NvrtcCompile) FN("nvrtcVersion", NvrtcVersion) FN("cublasLtInfo", CublasLtInfo)
  FN("blasInit", BlasInit) FN("blasGemm", BlasGemm) FN("blasPlans", BlasPlans)
#undef FN
  exports.Set("abiVersion", Napi::Number::New(env, 1));
  exports.Set("cudaHeader", Napi::String::New(env, ZIPVL_CUDA_HEADER));
  return exports;
}

NODE_API_MODULE(zipvl_native, InitModule)
