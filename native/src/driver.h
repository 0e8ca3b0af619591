// Run-time bound CUDA driver entry points. The addon never links libcuda: every symbol below is dlsym'd by its
// *versioned* exported name (the cuda.h macros that map cuMemAlloc -> cuMemAlloc_v2 do not apply to dlsym), so
// the .node file loads on machines with no driver and fails later, at init(), with a coded error instead.
#pragma once
#include <napi.h>

#if !defined(ZIPVL_FORCE_CUDA_MIN) && __has_include(<cuda.h>)
#include <cuda.h>
#define ZIPVL_CUDA_HEADER "cuda.h"
#else
#include "cuda_min.h"
#define ZIPVL_CUDA_HEADER "cuda_min.h"
#endif

#include <string>

// X(field, exported symbol, return, params). The field names are ours (not cu*) so cuda.h's renaming macros
// can never rewrite them.
#define ZV_CU_REQUIRED(X)                                                                                    \
  X(init, "cuInit", (unsigned int flags))                                                                     \
  X(driverGetVersion, "cuDriverGetVersion", (int* v))                                                         \
  X(getErrorName, "cuGetErrorName", (CUresult r, const char** s))                                             \
  X(deviceGet, "cuDeviceGet", (CUdevice * d, int ordinal))                                                    \
  X(deviceGetCount, "cuDeviceGetCount", (int* n))                                                             \
  X(deviceGetAttribute, "cuDeviceGetAttribute", (int* v, CUdevice_attribute a, CUdevice d))                    \
  X(deviceGetName, "cuDeviceGetName", (char* name, int len, CUdevice d))                                      \
  X(deviceTotalMem, "cuDeviceTotalMem_v2", (size_t * bytes, CUdevice d))                                      \
  X(primaryCtxRetain, "cuDevicePrimaryCtxRetain", (CUcontext * c, CUdevice d))                                \
  X(primaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", (CUdevice d))                                          \
  X(ctxSetCurrent, "cuCtxSetCurrent", (CUcontext c))                                                          \
  /* CUDA 13 gave cuCtxSynchronize a ctx argument but only under the _v2 name; the plain symbol keeps (void). */ \
  X(ctxSynchronize, "cuCtxSynchronize", (void))                                                               \
  X(memGetInfo, "cuMemGetInfo_v2", (size_t * free, size_t * total))                                           \
  X(memAlloc, "cuMemAlloc_v2", (CUdeviceptr * p, size_t bytes))                                               \
  X(memFree, "cuMemFree_v2", (CUdeviceptr p))                                                                 \
  X(memcpyHtoD, "cuMemcpyHtoD_v2", (CUdeviceptr dst, const void* src, size_t n))                              \
  X(memcpyDtoH, "cuMemcpyDtoH_v2", (void* dst, CUdeviceptr src, size_t n))                                    \
  X(memcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", (CUdeviceptr dst, const void* src, size_t n, CUstream s))        \
  X(memcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", (void* dst, CUdeviceptr src, size_t n, CUstream s))              \
  X(memsetD32Async, "cuMemsetD32Async", (CUdeviceptr p, unsigned int v, size_t n, CUstream s))               \
  X(memsetD8Async, "cuMemsetD8Async", (CUdeviceptr p, unsigned char v, size_t n, CUstream s))                \
  X(moduleLoadData, "cuModuleLoadData", (CUmodule * m, const void* image))                                    \
  X(moduleUnload, "cuModuleUnload", (CUmodule m))                                                             \
  X(moduleGetFunction, "cuModuleGetFunction", (CUfunction * f, CUmodule m, const char* name))                 \
  X(funcSetAttribute, "cuFuncSetAttribute", (CUfunction f, CUfunction_attribute a, int v))                    \
  X(occupancyMaxActiveBlocks, "cuOccupancyMaxActiveBlocksPerMultiprocessor",                                  \
    (int* n, CUfunction f, int blockSize, size_t dynamicSmem))                                                \
  X(launchKernel, "cuLaunchKernel",                                                                           \
    (CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,              \
     unsigned shared, CUstream s, void** params, void** extra))                                               \
  X(streamCreate, "cuStreamCreate", (CUstream * s, unsigned int flags))                                       \
  X(streamSynchronize, "cuStreamSynchronize", (CUstream s))                                                   \
  X(streamDestroy, "cuStreamDestroy_v2", (CUstream s))                                                        \
  X(eventCreate, "cuEventCreate", (CUevent * e, unsigned int flags))                                          \
  X(eventRecord, "cuEventRecord", (CUevent e, CUstream s))                                                    \
  X(eventSynchronize, "cuEventSynchronize", (CUevent e))                                                      \
  X(eventDestroy, "cuEventDestroy_v2", (CUevent e))                                                           \
  X(streamBeginCapture, "cuStreamBeginCapture_v2", (CUstream s, CUstreamCaptureMode mode))                    \
  X(streamEndCapture, "cuStreamEndCapture", (CUstream s, CUgraph * g))                                        \
  /* cuda.h 12+/13 maps cuGraphInstantiate to cuGraphInstantiateWithFlags (the old 5-arg form is gone). */    \
  X(graphInstantiate, "cuGraphInstantiateWithFlags", (CUgraphExec * e, CUgraph g, unsigned long long flags))  \
  X(graphLaunch, "cuGraphLaunch", (CUgraphExec e, CUstream s))                                                \
  X(graphExecDestroy, "cuGraphExecDestroy", (CUgraphExec e))                                                  \
  X(graphDestroy, "cuGraphDestroy", (CUgraph g))

struct CuApi {
#define ZV_FIELD(field, sym, params) CUresult(CUDAAPI* field) params = nullptr;
  ZV_CU_REQUIRED(ZV_FIELD)
#undef ZV_FIELD
  // cuda.h 12.8+ maps cuEventElapsedTime to _v2 (same signature); older drivers export only the plain name.
  CUresult(CUDAAPI* eventElapsed)(float* ms, CUevent a, CUevent b) = nullptr;
  // Optional (driver 12.4+): lets launch() check the packed args block against the kernel's parameter size.
  CUresult(CUDAAPI* funcGetParamInfo)(CUfunction f, size_t index, size_t* offset, size_t* size) = nullptr;
  // Optional (driver 12.0+): launches with programmatic dependent launch (PDL); without it such launches are plain.
  CUresult(CUDAAPI* launchKernelEx)(const CUlaunchConfig* config, CUfunction f, void** params, void** extra) = nullptr;
};

// Loaded state. All calls come from JS threads; the primary context is made current per thread on first use.
struct Driver {
  void* handle = nullptr;
  std::string path;
  CuApi api;
  CUdevice device = 0;
  CUcontext ctx = nullptr;
  bool ready = false;
};

Driver& driver();
// Loads libcuda (path, else $ZIPVL_LIBCUDA, else libcuda.so.1), resolves symbols, cuInit, retains the primary
// context of `ordinal`. Throws coded Napi errors. Idempotent once it has succeeded.
void loadDriver(Napi::Env env, const std::string& pathArg, int ordinal);
// Throws a "not initialized" error unless init() succeeded; makes the context current on this thread.
CuApi& cu(Napi::Env env);
// Error with message "CUDA_ERROR_X (n) in cuFoo" and properties cuResult / cuName / cuCall.
[[noreturn]] void throwCu(Napi::Env env, CUresult r, const char* call);
[[noreturn]] void throwCoded(Napi::Env env, const char* cuName, const std::string& message);
inline void check(Napi::Env env, CUresult r, const char* call) {
  if (r != CUDA_SUCCESS) throwCu(env, r, call);
}
