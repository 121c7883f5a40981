#!/usr/bin/env bash
# Builds the CUDA worker on a machine without a GPU and without a CUDA toolkit:
#   bash scripts/build-cuda.sh            # features cudnn (cuDNN convolutions), the default
#   FEATURES=cuda bash scripts/build-cuda.sh
# nvcc 13.0 comes from NVIDIA's pip wheels (pinned: newer PTX would be refused by a CUDA 13.0
# driver), into .venv-cuda. Candle links the CUDA libraries at build time, so the linker gets
# stub libraries generated from cudarc's own bindings (cuda-link/lib); the real libraries are
# needed only where the binary runs. Kernels for compute capability 9.0 (H100, H200); set
# CUDA_COMPUTE_CAP for other GPUs.
# Output: target/cuda/release/worker and dist/worker-<features>.gz (about 12 MB), and the CPU
# coordinator as dist/coordinator.gz (bench/gpu_e2e.sh runs both on the GPU machine).
# A clean build takes about 17 minutes on 2 cores; later builds reuse target/cuda.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
features="${FEATURES:-cudnn}"
case "$features" in cuda | cudnn) ;; *) echo "build-cuda: FEATURES must be cuda or cudnn, not '$features'" >&2; exit 2 ;; esac

if [ ! -x .venv-cuda/bin/python ] || [ ! -f .venv-cuda/.ecg-cuda-1 ]; then
  echo "build-cuda: installing nvcc 13.0 into .venv-cuda (pip wheels)" >&2
  python3 -m venv .venv-cuda
  .venv-cuda/bin/pip install --quiet --disable-pip-version-check \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
  touch .venv-cuda/.ecg-cuda-1
fi
CU="$(.venv-cuda/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13"
"$CU/bin/nvcc" --version | grep -q "release 13.0" || { echo "build-cuda: $CU/bin/nvcc is not release 13.0" >&2; exit 1; }

cargo fetch --locked >/dev/null
cudarc_version="$(awk '/^name = "cudarc"/{getline; gsub(/[^0-9.]/, ""); print; exit}' Cargo.lock)"
CUDARC_SRC="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$cudarc_version" | head -1)/src"
[ -d "$CUDARC_SRC" ] || { echo "build-cuda: cudarc $cudarc_version sources not found" >&2; exit 1; }

# Stub libraries: one empty function per symbol cudarc binds, under the real SONAME (and symbol
# version where the real library has one), so that the binary loads the real ones at run time.
mkdir -p cuda-link/lib
for spec in driver:cuda:libcuda.so.1:0 cublas:cublas:libcublas.so.13:1 cublaslt:cublasLt:libcublasLt.so.13:1 \
            curand:curand:libcurand.so.10:1 nvrtc:nvrtc:libnvrtc.so.13:1 cudnn:cudnn:libcudnn.so.9:1 \
            nccl:nccl:libnccl.so.2:0; do
  IFS=: read -r mod lib soname versioned <<< "$spec"
  [ -f "cuda-link/lib/lib$lib.so" ] && continue
  grep -oE '^pub unsafe fn [A-Za-z0-9_]+' "$CUDARC_SRC/$mod/sys/mod.rs" \
    | awk '{print "void " $4 "(void){}"}' | sort -u > "cuda-link/$lib.c"
  vs=()
  if [ "$versioned" = 1 ]; then
    echo "$soname { global: *; };" > "cuda-link/$lib.map"
    vs=("-Wl,--version-script=cuda-link/$lib.map")
  fi
  gcc -shared -fPIC -o "cuda-link/lib/lib$lib.so" -Wl,-soname,"$soname" "${vs[@]}" "cuda-link/$lib.c"
done
# The real cudart: Candle's static kernels library needs its internal symbols.
ln -sf "$CU/lib/libcudart.so.13" cuda-link/lib/libcudart.so

export PATH="$CU/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CUDA_ROOT="$PWD/cuda-link"
export CARGO_TARGET_DIR="$PWD/target/cuda"
cargo build --release --locked -p ecg-worker --features "$features"
mkdir -p dist
# Shipped without debug symbols (the line tables triple its size).
strip -o "dist/worker-$features" target/cuda/release/worker
gzip -f "dist/worker-$features"
unset CARGO_TARGET_DIR
cargo build --release --locked -p ecg-coordinator
strip -o dist/coordinator target/release/coordinator
gzip -f dist/coordinator
ls -l target/cuda/release/worker dist/*.gz
