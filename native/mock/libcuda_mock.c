/* Fake CUDA driver for CPU-only tests of the zipvl addon (load with ZIPVL_LIBCUDA=native/mock/libcuda_mock.so).
 * One device, "zipvl mock device", cc 9.0, 132 SMs. "Device" memory is host malloc, so CUdeviceptr values are host
 * pointers and memcpy/memset work directly. Launches execute nothing except the test kernel "zv_mock_fill", whose
 * args block {u32* dst; i64 count; i64 value} fills dst[0..count) with (u32)value, and the serving step's greedy
 * sampling "zv_model_argmax_<dtype>" (ZvArgmaxArgs in zv_model_args.cuh; same ties and NaN rule as the kernel), so
 * the engine's device-token path runs on the logits the mock cuBLASLt computes. Stream capture records launches
 * into a graph that cuGraphLaunch replays. zvmock_last_launch() exposes the last launch's geometry to tests.
 * Exports exactly the (versioned) names the addon dlsyms, so a missing export here fails the addon's init loudly. */
#include <stdint.h>
#include "mock_dtype.h"
#include <stdlib.h>
#include <string.h>
#include "cuda_min.h"

#define MOCK_TOTAL (80ull << 30)
#define MAX_ARGS 4096
#define MAX_NODES 64
#define EXPORT __attribute__((visibility("default")))

typedef struct { char name[64]; } MockFunc;
typedef struct { MockFunc* f; unsigned g[3], b[3], shared; size_t n; unsigned char args[MAX_ARGS]; } Launch;
typedef struct CUgraph_st { int count; Launch nodes[MAX_NODES]; } MockGraph;
typedef struct CUstream_st { MockGraph* capture; } MockStream;

static unsigned long long g_used, g_launches, g_pdl;
static Launch g_last;
static int g_ctx_dummy;

EXPORT int zvmock_last_launch(unsigned long long out[10]) {
  for (int i = 0; i < 3; i++) { out[i] = g_last.g[i]; out[3 + i] = g_last.b[i]; }
  out[6] = g_last.shared; out[7] = g_last.n; out[8] = g_launches; out[9] = g_pdl;
  return g_launches > 0;
}

static float mock_logit(const void* x, long long i, int dt) {
  if (dt == 4) return ((const float*)x)[i];
  const uint16_t h = ((const uint16_t*)x)[i];
  return dt == 2 ? zvmock_f16_to_f(h) : zvmock_bf16_to_f(h);
}

/* zv_model_argmax_<dtype>: {const void* x; int* ids; int* copy; const int* slot; i64 rows, V, stride}. */
static void mock_argmax(const Launch* l) {
  const char* dts = l->f->name + strlen("zv_model_argmax_");
  const int dt = strcmp(dts, "f32") == 0 ? 4 : strcmp(dts, "f16") == 0 ? 2 : 1;
  unsigned long long w[7];
  if (l->n < sizeof w) return;
  memcpy(w, l->args, sizeof w);
  const void* x = (const void*)(uintptr_t)w[0];
  int* ids = (int*)(uintptr_t)w[1];
  int* copy = (int*)(uintptr_t)w[2];
  const int* slot = (const int*)(uintptr_t)w[3];
  const long long rows = (long long)w[4], V = (long long)w[5], stride = (long long)w[6];
  for (long long r = 0; r < rows; r++) {
    const long long base = r * V;
    long long best = 0;
    for (long long i = 1; i < V; i++)
      if (mock_logit(x, base + i, dt) > mock_logit(x, base + best, dt)) best = i; /* a NaN first element stays */
    ids[r] = (int)best;
    if (copy) copy[(slot ? *slot : 0) * stride + r] = (int)best;
  }
}

static void execute(const Launch* l) {
  g_last = *l;
  g_launches++;
  if (strncmp(l->f->name, "zv_model_argmax_", 16) == 0) mock_argmax(l);
  if (strcmp(l->f->name, "zv_mock_fill") == 0 && l->n >= 24) {
    unsigned long long w[3];
    memcpy(w, l->args, sizeof w);
    unsigned* dst = (unsigned*)(uintptr_t)w[0];
    for (unsigned long long i = 0; i < w[1]; i++) dst[i] = (unsigned)w[2];
  }
}

/* ZIPVL_MOCK_NO_DEVICE=1 imitates the real driver on a machine without a GPU: cuInit fails with NO_DEVICE. */
EXPORT CUresult cuInit(unsigned f) { (void)f; return getenv("ZIPVL_MOCK_NO_DEVICE") ? CUDA_ERROR_NO_DEVICE : CUDA_SUCCESS; }
EXPORT CUresult cuDriverGetVersion(int* v) { *v = 13000; return CUDA_SUCCESS; }
EXPORT CUresult cuGetErrorName(CUresult r, const char** s) {
  switch (r) {
    case CUDA_SUCCESS: *s = "CUDA_SUCCESS"; return CUDA_SUCCESS;
    case CUDA_ERROR_INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; return CUDA_SUCCESS;
    case CUDA_ERROR_OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; return CUDA_SUCCESS;
    case CUDA_ERROR_NO_DEVICE: *s = "CUDA_ERROR_NO_DEVICE"; return CUDA_SUCCESS;
    case CUDA_ERROR_NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; return CUDA_SUCCESS;
    default: *s = 0; return CUDA_ERROR_INVALID_VALUE;
  }
}
EXPORT CUresult cuDeviceGetCount(int* n) { *n = 1; return CUDA_SUCCESS; }
EXPORT CUresult cuDeviceGet(CUdevice* d, int i) { *d = i; return i == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE; }
EXPORT CUresult cuDeviceGetName(char* s, int len, CUdevice d) { (void)d; strncpy(s, "zipvl mock device", len); return CUDA_SUCCESS; }
EXPORT CUresult cuDeviceTotalMem_v2(size_t* b, CUdevice d) { (void)d; *b = MOCK_TOTAL; return CUDA_SUCCESS; }
EXPORT CUresult cuDeviceGetAttribute(int* v, CUdevice_attribute a, CUdevice d) {
  (void)d;
  switch (a) {
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = 9; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *v = 0; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *v = 132; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *v = 49152; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *v = 232448; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: *v = 233472; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *v = 32; break;
    case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: *v = 50 << 20; break;
    default: *v = 0;
  }
  return CUDA_SUCCESS;
}
EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext* c, CUdevice d) { (void)d; *c = (CUcontext)&g_ctx_dummy; return CUDA_SUCCESS; }
EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) { (void)d; return CUDA_SUCCESS; }
EXPORT CUresult cuCtxSetCurrent(CUcontext c) { (void)c; return CUDA_SUCCESS; }
EXPORT CUresult cuCtxSynchronize(void) { return CUDA_SUCCESS; }

EXPORT CUresult cuMemGetInfo_v2(size_t* f, size_t* t) { *t = MOCK_TOTAL; *f = MOCK_TOTAL - g_used; return CUDA_SUCCESS; }
EXPORT CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t n) {
  if (n == 0) return CUDA_ERROR_INVALID_VALUE;
  if (n > MOCK_TOTAL - g_used) return CUDA_ERROR_OUT_OF_MEMORY;
  /* A size header in front lets cuMemFree_v2 keep g_used exact. */
  size_t* h = (size_t*)malloc(n + 16);
  if (!h) return CUDA_ERROR_OUT_OF_MEMORY;
  h[0] = n; g_used += n;
  *p = (CUdeviceptr)(uintptr_t)(h + 2);
  return CUDA_SUCCESS;
}
EXPORT CUresult cuMemFree_v2(CUdeviceptr p) {
  if (!p) return CUDA_ERROR_INVALID_VALUE;
  size_t* h = (size_t*)(uintptr_t)p - 2;
  g_used -= h[0]; free(h);
  return CUDA_SUCCESS;
}
EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void* s, size_t n) { memcpy((void*)(uintptr_t)d, s, n); return CUDA_SUCCESS; }
EXPORT CUresult cuMemcpyDtoH_v2(void* d, CUdeviceptr s, size_t n) { memcpy(d, (void*)(uintptr_t)s, n); return CUDA_SUCCESS; }
EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void* s, size_t n, CUstream st) { (void)st; return cuMemcpyHtoD_v2(d, s, n); }
EXPORT CUresult cuMemcpyDtoHAsync_v2(void* d, CUdeviceptr s, size_t n, CUstream st) { (void)st; return cuMemcpyDtoH_v2(d, s, n); }
EXPORT CUresult cuMemsetD32Async(CUdeviceptr p, unsigned v, size_t n, CUstream s) {
  (void)s; unsigned* q = (unsigned*)(uintptr_t)p;
  for (size_t i = 0; i < n; i++) q[i] = v;
  return CUDA_SUCCESS;
}
EXPORT CUresult cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n, CUstream s) { (void)s; memset((void*)(uintptr_t)p, v, n); return CUDA_SUCCESS; }

EXPORT CUresult cuModuleLoadData(CUmodule* m, const void* image) { (void)image; *m = (CUmodule)malloc(1); return CUDA_SUCCESS; }
EXPORT CUresult cuModuleUnload(CUmodule m) { free(m); return CUDA_SUCCESS; }
EXPORT CUresult cuModuleGetFunction(CUfunction* f, CUmodule m, const char* name) {
  (void)m;
  if (strcmp(name, "zv_mock_missing") == 0) return CUDA_ERROR_NOT_FOUND;
  MockFunc* fn = (MockFunc*)calloc(1, sizeof(MockFunc)); /* leaked on purpose: tests make a handful */
  strncpy(fn->name, name, sizeof fn->name - 1);
  *f = (CUfunction)fn;
  return CUDA_SUCCESS;
}
/* Occupancy: 4 CTAs an SM for any kernel (the mock knows no registers). */
EXPORT CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int* n, CUfunction f, int threads, size_t smem) {
  (void)f; (void)smem;
  *n = threads > 0 && threads <= 1024 ? 4 : 0;
  return threads > 0 && threads <= 1024 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
EXPORT CUresult cuFuncSetAttribute(CUfunction f, CUfunction_attribute a, int v) { (void)f; (void)a; return v <= 232448 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE; }
EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                               unsigned shared, CUstream s, void** params, void** extra) {
  Launch l; memset(&l, 0, sizeof l);
  l.f = (MockFunc*)f; l.g[0] = gx; l.g[1] = gy; l.g[2] = gz; l.b[0] = bx; l.b[1] = by; l.b[2] = bz; l.shared = shared;
  if (params) return CUDA_ERROR_INVALID_VALUE; /* the addon always uses `extra` */
  if (extra) {
    if (extra[0] != CU_LAUNCH_PARAM_BUFFER_POINTER || extra[2] != CU_LAUNCH_PARAM_BUFFER_SIZE || extra[4] != CU_LAUNCH_PARAM_END)
      return CUDA_ERROR_INVALID_VALUE;
    l.n = *(size_t*)extra[3];
    if (l.n > MAX_ARGS) return CUDA_ERROR_INVALID_VALUE;
    memcpy(l.args, extra[1], l.n);
  }
  MockStream* ms = (MockStream*)s;
  if (ms && ms->capture) {
    if (ms->capture->count >= MAX_NODES) return CUDA_ERROR_OUT_OF_MEMORY;
    ms->capture->nodes[ms->capture->count++] = l;
    return CUDA_SUCCESS;
  }
  execute(&l);
  return CUDA_SUCCESS;
}
/* Launches with attributes: only programmatic stream serialization (PDL) is accepted; counted, then as above. */
EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig* c, CUfunction f, void** params, void** extra) {
  if (!c || c->numAttrs != 1 || !c->attrs || c->attrs[0].id != CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION ||
      c->attrs[0].value.programmaticStreamSerializationAllowed != 1)
    return CUDA_ERROR_INVALID_VALUE;
  CUresult r = cuLaunchKernel(f, c->gridDimX, c->gridDimY, c->gridDimZ, c->blockDimX, c->blockDimY, c->blockDimZ, c->sharedMemBytes, c->hStream, params, extra);
  if (r == CUDA_SUCCESS) g_pdl++;
  return r;
}

EXPORT CUresult cuStreamCreate(CUstream* s, unsigned f) { (void)f; *s = (CUstream)calloc(1, sizeof(MockStream)); return CUDA_SUCCESS; }
EXPORT CUresult cuStreamSynchronize(CUstream s) { (void)s; return CUDA_SUCCESS; }
EXPORT CUresult cuStreamDestroy_v2(CUstream s) { free(s); return CUDA_SUCCESS; }
EXPORT CUresult cuEventCreate(CUevent* e, unsigned f) { (void)f; *e = (CUevent)malloc(1); return CUDA_SUCCESS; }
EXPORT CUresult cuEventRecord(CUevent e, CUstream s) { (void)e; (void)s; return CUDA_SUCCESS; }
EXPORT CUresult cuEventSynchronize(CUevent e) { (void)e; return CUDA_SUCCESS; }
EXPORT CUresult cuEventDestroy_v2(CUevent e) { free(e); return CUDA_SUCCESS; }
EXPORT CUresult cuEventElapsedTime_v2(float* ms, CUevent a, CUevent b) { (void)a; (void)b; *ms = 1.5f; return CUDA_SUCCESS; }

EXPORT CUresult cuStreamBeginCapture_v2(CUstream s, CUstreamCaptureMode m) {
  (void)m; MockStream* ms = (MockStream*)s;
  if (!ms || ms->capture) return CUDA_ERROR_INVALID_VALUE; /* legacy stream cannot capture, like the real driver */
  ms->capture = (MockGraph*)calloc(1, sizeof(MockGraph));
  return CUDA_SUCCESS;
}
EXPORT CUresult cuStreamEndCapture(CUstream s, CUgraph* g) {
  MockStream* ms = (MockStream*)s;
  if (!ms || !ms->capture) return CUDA_ERROR_INVALID_VALUE;
  *g = ms->capture; ms->capture = 0;
  return CUDA_SUCCESS;
}
EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec* e, CUgraph g, unsigned long long f) {
  (void)f; MockGraph* copy = (MockGraph*)malloc(sizeof(MockGraph));
  memcpy(copy, g, sizeof(MockGraph));
  *e = (CUgraphExec)copy;
  return CUDA_SUCCESS;
}
EXPORT CUresult cuGraphLaunch(CUgraphExec e, CUstream s) {
  (void)s; MockGraph* g = (MockGraph*)e;
  for (int i = 0; i < g->count; i++) execute(&g->nodes[i]);
  return CUDA_SUCCESS;
}
EXPORT CUresult cuGraphExecDestroy(CUgraphExec e) { free(e); return CUDA_SUCCESS; }
EXPORT CUresult cuGraphDestroy(CUgraph g) { free(g); return CUDA_SUCCESS; }
