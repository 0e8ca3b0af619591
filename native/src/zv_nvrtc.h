// NVRTC / cuBLASLt bindings (nvrtc.cc); registered by addon.cc.
#pragma once
#include <napi.h>

Napi::Value NvrtcCompile(const Napi::CallbackInfo& info);
Napi::Value NvrtcVersion(const Napi::CallbackInfo& info);
Napi::Value CublasLtInfo(const Napi::CallbackInfo& info);
