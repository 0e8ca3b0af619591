/* 16-bit float storage to f32 for the mock driver and the mock cuBLASLt (both read bf16 / f16 "device" memory). */
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float zvmock_bf16_to_f(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static inline float zvmock_f16_to_f(uint16_t h) {
  uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1f, m = h & 0x3ff, u;
  if (e == 0) { float f = ldexpf((float)m, -24); return s ? -f : f; }
  if (e == 31) u = s | 0x7f800000 | (m << 13);
  else u = s | ((e + 112) << 23) | (m << 13);
  float f;
  memcpy(&f, &u, 4);
  return f;
}
