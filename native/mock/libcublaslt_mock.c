/* Fake cuBLASLt for CPU-only tests (ZIPVL_LIBCUBLASLT=native/mock/libcublaslt_mock.so, with the mock libcuda, whose
 * "device" pointers are host pointers). It implements the column-major semantics of cublasLtMatmul for the subset
 * the addon uses: D = alpha * op(A) op(B) + beta * C (+ bias[row] with the BIAS epilogue), f32/f16/bf16 storage,
 * f32 accumulation, default (column-major) order. Anything else returns CUBLAS_STATUS_NOT_SUPPORTED, so a layout
 * mistake in the addon fails a test against the JS reference instead of passing silently.
 * zvmock_lt_calls() counts heuristic queries and matmuls (the addon caches plans; tests check the reuse).
 * ZIPVL_MOCK_LT_FAIL=1 makes cublasLtMatmul fail with CUBLAS_STATUS_EXECUTION_FAILED (the error-path test). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "mock_dtype.h"

#define EXPORT __attribute__((visibility("default")))
typedef int cublasStatus_t;
enum { OK = 0, NOT_INITIALIZED = 1, INVALID_VALUE = 7, EXECUTION_FAILED = 13, NOT_SUPPORTED = 15 };
enum { R_32F = 0, R_16F = 2, R_16BF = 14 };

typedef struct { int compute, scale, transa, transb, epilogue, biasType; const void* bias; } Desc;
typedef struct { int type, order; uint64_t rows, cols; int64_t ld; } Layout;
typedef struct { uint64_t maxWorkspace; } Pref;
typedef struct { uint64_t data[8]; } Algo;
typedef struct { Algo algo; size_t workspaceSize; cublasStatus_t state; float wavesCount; int reserved[4]; } Heuristic;

static int g_handle;
static unsigned long long g_heuristics, g_matmuls;

EXPORT void zvmock_lt_calls(unsigned long long out[2]) { out[0] = g_heuristics; out[1] = g_matmuls; }
EXPORT size_t cublasLtGetVersion(void) { return 130000; }
EXPORT const char* cublasLtGetStatusName(cublasStatus_t s) {
  switch (s) {
    case OK: return "CUBLAS_STATUS_SUCCESS";
    case NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}
EXPORT cublasStatus_t cublasLtCreate(void** h) { *h = &g_handle; return OK; }
EXPORT cublasStatus_t cublasLtDestroy(void* h) { return h == &g_handle ? OK : INVALID_VALUE; }

EXPORT cublasStatus_t cublasLtMatmulDescCreate(Desc** d, int compute, int scale) {
  if (compute != 68 || scale != R_32F) return NOT_SUPPORTED; /* CUBLAS_COMPUTE_32F, CUDA_R_32F */
  *d = (Desc*)calloc(1, sizeof(Desc));
  (*d)->compute = compute; (*d)->scale = scale; (*d)->epilogue = 1; (*d)->biasType = -1;
  return OK;
}
EXPORT cublasStatus_t cublasLtMatmulDescDestroy(Desc* d) { free(d); return OK; }
EXPORT cublasStatus_t cublasLtMatmulDescSetAttribute(Desc* d, int attr, const void* buf, size_t size) {
  switch (attr) {
    case 3: if (size != 4) return INVALID_VALUE; memcpy(&d->transa, buf, 4); return OK;
    case 4: if (size != 4) return INVALID_VALUE; memcpy(&d->transb, buf, 4); return OK;
    case 7: if (size != 4) return INVALID_VALUE; memcpy(&d->epilogue, buf, 4); return OK;
    case 8: if (size != sizeof(void*)) return INVALID_VALUE; memcpy(&d->bias, buf, sizeof(void*)); return OK;
    case 26: if (size != 4) return INVALID_VALUE; memcpy(&d->biasType, buf, 4); return OK;
    default: return NOT_SUPPORTED;
  }
}
EXPORT cublasStatus_t cublasLtMatrixLayoutCreate(Layout** l, int type, uint64_t rows, uint64_t cols, int64_t ld) {
  if (type != R_32F && type != R_16F && type != R_16BF) return NOT_SUPPORTED;
  if (ld < (int64_t)rows) return INVALID_VALUE;
  *l = (Layout*)calloc(1, sizeof(Layout));
  (*l)->type = type; (*l)->rows = rows; (*l)->cols = cols; (*l)->ld = ld;
  return OK;
}
EXPORT cublasStatus_t cublasLtMatrixLayoutDestroy(Layout* l) { free(l); return OK; }
EXPORT cublasStatus_t cublasLtMatmulPreferenceCreate(Pref** p) { *p = (Pref*)calloc(1, sizeof(Pref)); return OK; }
EXPORT cublasStatus_t cublasLtMatmulPreferenceDestroy(Pref* p) { free(p); return OK; }
EXPORT cublasStatus_t cublasLtMatmulPreferenceSetAttribute(Pref* p, int attr, const void* buf, size_t size) {
  if (attr != 1 || size != 8) return NOT_SUPPORTED;
  memcpy(&p->maxWorkspace, buf, 8);
  return OK;
}

/* op(X) dims: rows x cols after the transpose. */
static uint64_t opRows(const Layout* l, int t) { return t ? l->cols : l->rows; }
static uint64_t opCols(const Layout* l, int t) { return t ? l->rows : l->cols; }

static int shapesAgree(const Desc* d, const Layout* a, const Layout* b, const Layout* c, const Layout* dd) {
  if (d->transa > 1 || d->transb > 1) return 0;
  if (opCols(a, d->transa) != opRows(b, d->transb)) return 0;
  if (opRows(a, d->transa) != dd->rows || opCols(b, d->transb) != dd->cols) return 0;
  if (c->rows != dd->rows || c->cols != dd->cols || a->type != dd->type || b->type != dd->type) return 0;
  return d->epilogue == 1 || (d->epilogue == 4 && (d->biasType == -1 || d->biasType == dd->type));
}

EXPORT cublasStatus_t cublasLtMatmulAlgoGetHeuristic(void* h, Desc* d, Layout* a, Layout* b, Layout* c, Layout* dd, Pref* p,
                                                     int requested, Heuristic* out, int* found) {
  (void)p;
  g_heuristics++;
  if (h != &g_handle) return NOT_INITIALIZED;
  if (requested < 1) return INVALID_VALUE;
  *found = 0;
  if (!shapesAgree(d, a, b, c, dd)) return NOT_SUPPORTED;
  memset(out, 0, sizeof *out);
  out->algo.data[0] = 0x2b1a5; /* a recognizable token the matmul checks */
  *found = 1;
  return OK;
}

static uint16_t fToBf16(float f) {
  uint32_t u; memcpy(&u, &f, 4);
  if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40);
  return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}
static uint16_t fToF16(float f) {
  uint32_t u; memcpy(&u, &f, 4);
  uint16_t s = (uint16_t)((u >> 16) & 0x8000);
  float a = fabsf(f);
  if (a != a) return s | 0x7e00;
  if (a >= 65520.0f) return s | 0x7c00;
  if (a < 6.103515625e-05f) return s | (uint16_t)lrintf(a * 16777216.0f); /* subnormal: units of 2^-24, ties to even */
  int e; float fr = frexpf(a, &e); /* a = fr * 2^e, fr in [0.5, 1) */
  long m = lrintf((fr * 2.0f - 1.0f) * 1024.0f);
  int ex = e - 1 + 15;
  if (m == 1024) { m = 0; ex++; }
  if (ex >= 31) return s | 0x7c00;
  return s | (uint16_t)(ex << 10) | (uint16_t)m;
}
static float get(const void* p, int type, uint64_t i) {
  if (type == R_32F) return ((const float*)p)[i];
  if (type == R_16BF) return zvmock_bf16_to_f(((const uint16_t*)p)[i]);
  return zvmock_f16_to_f(((const uint16_t*)p)[i]);
}
static void put(void* p, int type, uint64_t i, float v) {
  if (type == R_32F) ((float*)p)[i] = v;
  else if (type == R_16BF) ((uint16_t*)p)[i] = fToBf16(v);
  else ((uint16_t*)p)[i] = fToF16(v);
}
/* Element (r, c) of op(X), X column-major with leading dimension ld. */
static float at(const void* p, const Layout* l, int t, uint64_t r, uint64_t c) {
  return t ? get(p, l->type, c + r * (uint64_t)l->ld) : get(p, l->type, r + c * (uint64_t)l->ld);
}

EXPORT cublasStatus_t cublasLtMatmul(void* h, Desc* d, const float* alpha, const void* A, Layout* a, const void* B, Layout* b,
                                     const float* beta, const void* C, Layout* c, void* D, Layout* dd, const Algo* algo,
                                     void* ws, size_t wsBytes, void* stream) {
  (void)ws; (void)wsBytes; (void)stream;
  g_matmuls++;
  if (h != &g_handle) return NOT_INITIALIZED;
  if (getenv("ZIPVL_MOCK_LT_FAIL")) return EXECUTION_FAILED;
  if (!algo || algo->data[0] != 0x2b1a5 || !shapesAgree(d, a, b, c, dd)) return NOT_SUPPORTED;
  if (d->epilogue == 4 && !d->bias) return INVALID_VALUE;
  uint64_t K = opCols(a, d->transa);
  int bt = d->biasType == -1 ? dd->type : d->biasType;
  for (uint64_t j = 0; j < dd->cols; j++)
    for (uint64_t i = 0; i < dd->rows; i++) {
      float acc = 0;
      for (uint64_t k = 0; k < K; k++) acc += at(A, a, d->transa, i, k) * at(B, b, d->transb, k, j);
      float v = *alpha * acc;
      if (*beta != 0) v += *beta * get(C, c->type, i + j * (uint64_t)c->ld);
      if (d->epilogue == 4) v += get(d->bias, bt, i);
      put(D, dd->type, i + j * (uint64_t)dd->ld, v);
    }
  return OK;
}
