// MLX affine dequantization on the GPU: w = scale * q + bias per group, codes packed LSB-first into u32
// words (reference/model-formats.md §1.3; the CPU reference is src/weights/qkernel/scalar.rs).
//
// One thread writes 8 consecutive outputs of one row. Group sizes (32/64/128) are multiples of 8, so
// the 8 share one scale/bias; k is a multiple of 32, so the 8 outputs never cross a row and their store
// is 16-byte aligned for 2-byte types. The kernel is bound by its writes: the codes are `bits`/16 of
// the bytes written (bf16), read once and served from L1 for the neighbours.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

__device__ __forceinline__ uint32_t code_at(const uint32_t* row, uint32_t j, uint32_t bits) {
    uint32_t off = j * bits;
    uint32_t w = off >> 5, sh = off & 31;
    uint32_t v = row[w] >> sh;
    // 3/5/6-bit codes may straddle two words.
    if (sh + bits > 32) v |= row[w + 1] << (32 - sh);
    return v & ((1u << bits) - 1u);
}

__device__ __forceinline__ void store8(float* out, const float* v) {
    float4* o = reinterpret_cast<float4*>(out);
    o[0] = make_float4(v[0], v[1], v[2], v[3]);
    o[1] = make_float4(v[4], v[5], v[6], v[7]);
}

__device__ __forceinline__ void store8(__nv_bfloat16* out, const float* v) {
    __nv_bfloat162 p[4];
    for (int i = 0; i < 4; ++i) p[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
    *reinterpret_cast<uint4*>(out) = *reinterpret_cast<const uint4*>(p);
}

__device__ __forceinline__ void store8(__half* out, const float* v) {
    __half2 p[4];
    for (int i = 0; i < 4; ++i) p[i] = __floats2half2_rn(v[2 * i], v[2 * i + 1]);
    *reinterpret_cast<uint4*>(out) = *reinterpret_cast<const uint4*>(p);
}

// Output row `r` (of `rows`) is source row `ids ? ids[r] : r` of the [n, k] weight. An id outside
// the table (the host checks ids first; this only keeps a bad one from reading out of bounds) writes
// zeros.
template <typename T>
__device__ void dequant(const uint32_t* packed, const float* scales, const float* biases, const uint32_t* ids,
                        T* out, uint32_t rows, uint32_t n, uint32_t k, uint32_t bits, uint32_t group_size) {
    uint64_t t = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    uint32_t per_row = k / 8;
    if (t >= (uint64_t)rows * per_row) return;
    uint32_t r = (uint32_t)(t / per_row);
    uint32_t c = (uint32_t)(t % per_row) * 8;
    uint32_t src = ids ? ids[r] : r;
    float v[8];
    if (src < n) {
        const uint32_t* row = packed + (uint64_t)src * (k * bits / 32);
        uint64_t g = (uint64_t)src * (k / group_size) + c / group_size;
        float s = scales[g], b = biases[g];
        // fmaf: the same single rounding as the CPU reference's f32 mul_add.
        for (int i = 0; i < 8; ++i) v[i] = fmaf((float)code_at(row, c + i, bits), s, b);
    } else {
        for (int i = 0; i < 8; ++i) v[i] = 0.0f;
    }
    store8(out + (uint64_t)r * k + c, v);
}

#define DEQUANT(NAME, T)                                                                                   \
    extern "C" __global__ void NAME(const uint32_t* packed, const float* scales, const float* biases,      \
                                    const uint32_t* ids, T* out, uint32_t rows, uint32_t n, uint32_t k,     \
                                    uint32_t bits, uint32_t group_size) {                                  \
        dequant<T>(packed, scales, biases, ids, out, rows, n, k, bits, group_size);                        \
    }

DEQUANT(affine_dequant_f32, float)
DEQUANT(affine_dequant_f16, __half)
DEQUANT(affine_dequant_bf16, __nv_bfloat16)
