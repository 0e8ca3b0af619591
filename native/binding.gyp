# zipvl_native: N-API addon that dlopens the CUDA driver at run time (never links libcuda).
# cuda_home only supplies headers (types); force_cuda_min=1 compiles against src/cuda_min.h instead, which
# native/build.mjs passes when <cuda_home>/include/cuda.h is absent (CPU-only CI).
{
  "variables": {
    "cuda_home%": "<!(node -p \"process.env.CUDA_HOME || '/usr/local/cuda'\")",
    "force_cuda_min%": 0
  },
  "targets": [
    {
      "target_name": "zipvl_native",
      "sources": ["src/addon.cc", "src/driver.cc", "src/nvrtc.cc", "src/cublaslt.cc"],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "include_dirs": ["<(cuda_home)/include", "src"],
      "libraries": ["-ldl"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wno-unused-parameter"],
      "defines": ["NAPI_VERSION=8"],
      "conditions": [
        ["force_cuda_min==1", { "defines": ["ZIPVL_FORCE_CUDA_MIN=1"] }]
      ]
    }
  ]
}
