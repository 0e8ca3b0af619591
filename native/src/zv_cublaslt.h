// cuBLASLt GEMM bindings (cublaslt.cc); registered by addon.cc.
#pragma once
#include <napi.h>

Napi::Value BlasInit(const Napi::CallbackInfo& info);
void BlasGemm(const Napi::CallbackInfo& info);
Napi::Value BlasPlans(const Napi::CallbackInfo& info);
