// The model's own CUDA kernels: non-overlapping max-pool (forward and input gradient, PyTorch's
// winner rule) and hashed dropout (the same keep decisions as the CPU code, element by element).
// Compiled to PTX at build time (build.rs) and loaded by src/model/ops/cuda/mod.rs.
typedef unsigned long long u64;
typedef unsigned int u32;

// Index of the element this thread handles.
__device__ __forceinline__ u64 ecg_index() {
    return (u64)blockIdx.x * (u64)blockDim.x + (u64)threadIdx.x;
}

// Offset of the winner in window w[0..k): the first maximum, or the last NaN (PyTorch's CPU rule,
// as src/model/ops/maxpool.rs).
template <typename T>
__device__ __forceinline__ u32 ecg_argmax(const T* w, u32 k) {
    u32 at = 0;
    T best = w[0];
    for (u32 j = 1; j < k; ++j) {
        T v = w[j];
        // v > best, or v is NaN; a NaN best stays unless a later NaN comes.
        if (v > best || v != v) {
            best = v;
            at = j;
        }
    }
    return at;
}

template <typename T>
__device__ void ecg_maxpool_fwd(const T* x, T* y, u64 n_out, u32 k) {
    u64 i = ecg_index();
    if (i >= n_out) return;
    const T* w = x + i * k;
    y[i] = w[ecg_argmax(w, k)];
}

template <typename T>
__device__ void ecg_maxpool_bwd(const T* x, const T* g, T* dx, u64 n_out, u32 k) {
    u64 i = ecg_index();
    if (i >= n_out) return;
    const T* w = x + i * k;
    u32 at = ecg_argmax(w, k);
    T* d = dx + i * k;
    for (u32 j = 0; j < k; ++j) d[j] = j == at ? g[i] : (T)0;
}

// splitmix64's output function.
__device__ __forceinline__ u64 ecg_mix(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// y = x * m with m = scale where the element's draw is at or above threshold, else 0.
template <typename T>
__device__ void ecg_dropout(const T* x, T* y, u64 n, u64 key, u64 threshold, T scale) {
    u64 i = ecg_index();
    if (i >= n) return;
    u64 draw = ecg_mix(key + (i + 1) * 0x9E3779B97F4A7C15ull) >> 32;
    T m = draw >= threshold ? scale : (T)0;
    y[i] = x[i] * m;
}

extern "C" __global__ void ecg_maxpool_fwd_f32(const float* x, float* y, u64 n_out, u32 k) {
    ecg_maxpool_fwd<float>(x, y, n_out, k);
}
extern "C" __global__ void ecg_maxpool_fwd_f64(const double* x, double* y, u64 n_out, u32 k) {
    ecg_maxpool_fwd<double>(x, y, n_out, k);
}
extern "C" __global__ void ecg_maxpool_bwd_f32(const float* x, const float* g, float* dx, u64 n_out, u32 k) {
    ecg_maxpool_bwd<float>(x, g, dx, n_out, k);
}
extern "C" __global__ void ecg_maxpool_bwd_f64(const double* x, const double* g, double* dx, u64 n_out, u32 k) {
    ecg_maxpool_bwd<double>(x, g, dx, n_out, k);
}
extern "C" __global__ void ecg_dropout_f32(const float* x, float* y, u64 n, u64 key, u64 threshold, float scale) {
    ecg_dropout<float>(x, y, n, key, threshold, scale);
}
extern "C" __global__ void ecg_dropout_f64(const double* x, double* y, u64 n, u64 key, u64 threshold, double scale) {
    ecg_dropout<double>(x, y, n, key, threshold, scale);
}
