// Fused bf16 kernels for the Qwen3 forward pass on CUDA (src/model/cuda_ops.rs launches them).
// Math in f32, one rounding to bf16 per output. One warp per row in the row-wise kernels: rows are short
// (head_dim, hidden size, or one attention row of at most a few thousand keys), so a warp reduction is enough.
//
// "Token layout": row t = b * l + pos of a projection output, head h at columns h * hd.., rows `tok_stride`
// elements apart (a column slice of the fused q|k|v output). "Head layout": [b, heads, l, hd], contiguous.
#include <cuda_bf16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ unsigned warp_id() { return blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; }

// In-place softmax of attention scores with the causal and padding masks computed from the row lengths
// (no bias tensor). Scores are rows of `l` keys; row r belongs to batch row r / rows_per_batch and to
// query position r % l (layout [b, kv_heads, group * l, l], or [b, heads, l, l]). Right padding: the real
// keys are 0..n-1; left padding: l-n..l-1. A query attends the real keys at or before it; masked keys get
// probability 0, and a query with no key at all (a left-pad row) gets an all-zero row.
extern "C" __global__ void causal_softmax_bf16(bf16* __restrict__ s, const uint32_t* __restrict__ lengths,
                                               unsigned rows, unsigned rows_per_batch, int l, int left, float scale) {
    const unsigned r = warp_id();
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const int n = (int)lengths[r / rows_per_batch];
    const int i = (int)(r % (unsigned)l);
    const int lo = left ? l - n : 0;
    const int hi = left ? i : min(i, n - 1);  // inclusive
    bf16* row = s + (long long)r * l;
    float m = -INFINITY;
    for (int j = lo + lane; j <= hi; j += 32) m = fmaxf(m, __bfloat162float(row[j]));
    m = warp_max(m);
    float sum = 0.f;
    for (int j = lo + lane; j <= hi; j += 32) sum += __expf((__bfloat162float(row[j]) - m) * scale);
    sum = warp_sum(sum);
    const float inv = hi >= lo ? 1.f / sum : 0.f;
    for (int j = lane; j < l; j += 32) {
        const float p = (j >= lo && j <= hi) ? __expf((__bfloat162float(row[j]) - m) * scale) * inv : 0.f;
        row[j] = __float2bfloat16(p);
    }
}

// RMS norm over head_dim (weight w), then rotary embedding (rotate-half), from the token layout to the
// head layout. Token t sits at position t % l. cs: [positions, hd] f32, cos in the first hd/2 columns, sin
// in the rest. hd = 32 * K, K even: lane `lane` holds elements lane + 32k, and the rotate-half partner of
// element k is k +- K/2 in the same lane.
template <int K>
__device__ __forceinline__ void rmsnorm_rope_row(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                                 const float* __restrict__ cs, bf16* __restrict__ y, unsigned r,
                                                 int heads, int l, long long tok_stride, float eps, int lane) {
    constexpr int HD = 32 * K, HALF = HD / 2, KH = K / 2;
    const unsigned t = r / heads;
    const unsigned h = r % heads;
    const unsigned b = t / l;
    const unsigned pos = t % l;
    const bf16* xr = x + t * tok_stride + h * HD;
    float v[K];
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < K; k++) {
        v[k] = __bfloat162float(xr[lane + 32 * k]);
        ss += v[k] * v[k];
    }
    ss = warp_sum(ss);
    const float rs = rsqrtf(ss / HD + eps);
#pragma unroll
    for (int k = 0; k < K; k++) v[k] *= rs * __bfloat162float(w[lane + 32 * k]);
    const float* c = cs + (long long)pos * HD;
    bf16* out = y + (((long long)b * heads + h) * l + pos) * HD;
#pragma unroll
    for (int k = 0; k < K; k++) {
        const int d = lane + 32 * k;
        const int j = k < KH ? d : d - HALF;
        const float rot = k < KH ? -v[k + KH] : v[k - KH];
        out[d] = __float2bfloat16(v[k] * c[j] + rot * c[HALF + j]);
    }
}

extern "C" __global__ void rmsnorm_rope_bf16(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                             const float* __restrict__ cs, bf16* __restrict__ y, unsigned rows,
                                             int heads, int l, int hd, long long tok_stride, float eps) {
    const unsigned r = warp_id();
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    switch (hd) {
        case 64: rmsnorm_rope_row<2>(x, w, cs, y, r, heads, l, tok_stride, eps, lane); break;
        case 128: rmsnorm_rope_row<4>(x, w, cs, y, r, heads, l, tok_stride, eps, lane); break;
        case 256: rmsnorm_rope_row<8>(x, w, cs, y, r, heads, l, tok_stride, eps, lane); break;
        default: break;  // the caller only launches for these sizes
    }
}

// Token layout -> head layout (to_heads = 1) or head layout -> contiguous token layout (to_heads = 0), in
// 16-byte pieces: hd, tok_stride and the start offsets are multiples of 8 elements (checked by the caller).
extern "C" __global__ void swap_heads_bf16(const bf16* __restrict__ x, bf16* __restrict__ y, unsigned tokens,
                                           int heads, int l, int hd, long long tok_stride, int to_heads) {
    const unsigned vpr = hd / 8;
    const unsigned n = tokens * heads * vpr;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const unsigned c = i % vpr;
        const unsigned r = i / vpr;
        if (to_heads) {  // r = t * heads + h, read in order
            const unsigned h = r % heads, t = r / heads;
            const uint4* src = reinterpret_cast<const uint4*>(x + t * tok_stride + h * hd) + c;
            uint4* dst = reinterpret_cast<uint4*>(y + (((long long)(t / l) * heads + h) * l + t % l) * hd) + c;
            *dst = *src;
        } else {  // r = (b * heads + h) * l + pos, read in order
            const unsigned pos = r % l, bh = r / l;
            const unsigned h = bh % heads, b = bh / heads;
            const uint4* src = reinterpret_cast<const uint4*>(x + (long long)r * hd) + c;
            uint4* dst = reinterpret_cast<uint4*>(y + ((long long)b * l + pos) * heads * hd + h * hd) + c;
            *dst = *src;
        }
    }
}

// SwiGLU: y[r, c] = silu(g[r, c]) * u[r, c] for rows of `cols` (even) elements, g and u rows
// `g_stride` / `u_stride` apart (even: column slices of the fused gate|up output), y contiguous.
extern "C" __global__ void silu_mul_bf16(const bf16* __restrict__ g, const bf16* __restrict__ u, bf16* __restrict__ y,
                                         unsigned rows, unsigned cols, long long g_stride, long long u_stride) {
    const unsigned half = cols / 2;
    const unsigned n2 = rows * half;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n2; i += gridDim.x * blockDim.x) {
        const unsigned r = i / half, c = 2 * (i % half);
        const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(g + r * g_stride + c));
        const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(u + r * u_stride + c));
        const float s0 = a.x / (1.f + __expf(-a.x));
        const float s1 = a.y / (1.f + __expf(-a.y));
        reinterpret_cast<__nv_bfloat162*>(y)[i] = __floats2bfloat162_rn(s0 * b.x, s1 * b.y);
    }
}

// Residual add + RMS norm, one warp per row of n (multiple of 8) elements, in 16-byte pieces:
// with has_b, x = a + b rounded to bf16 (the reference's residual add) is written to `sum`; then
// out = x * rsqrt(mean(x^2) + eps) * w. Without has_b, x = a and `sum` is not written.
extern "C" __global__ void add_rmsnorm_bf16(const bf16* a, const bf16* b, const bf16* __restrict__ w, bf16* sum,
                                            bf16* __restrict__ out, unsigned rows, int n, int has_b, float eps) {
    const unsigned r = warp_id();
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const int vpr = n / 8;
    const long long base = (long long)r * n;
    const uint4* a4 = reinterpret_cast<const uint4*>(a + base);
    const uint4* b4 = reinterpret_cast<const uint4*>(b + base);
    uint4* s4 = reinterpret_cast<uint4*>(sum + base);
    float ss = 0.f;
    for (int c = lane; c < vpr; c += 32) {
        uint4 va = a4[c];
        bf16* pa = reinterpret_cast<bf16*>(&va);
        if (has_b) {
            uint4 vb = b4[c];
            const bf16* pb = reinterpret_cast<const bf16*>(&vb);
#pragma unroll
            for (int e = 0; e < 8; e++) pa[e] = __float2bfloat16(__bfloat162float(pa[e]) + __bfloat162float(pb[e]));
            s4[c] = va;
        }
#pragma unroll
        for (int e = 0; e < 8; e++) {
            const float f = __bfloat162float(pa[e]);
            ss += f * f;
        }
    }
    ss = warp_sum(ss);
    const float rs = rsqrtf(ss / n + eps);
    // Each lane re-reads only the pieces it wrote itself (same c), so no synchronization is needed.
    const uint4* x4 = has_b ? s4 : a4;
    const uint4* w4 = reinterpret_cast<const uint4*>(w);
    uint4* o4 = reinterpret_cast<uint4*>(out + base);
    for (int c = lane; c < vpr; c += 32) {
        uint4 vx = x4[c];
        const uint4 vw = w4[c];
        bf16* px = reinterpret_cast<bf16*>(&vx);
        const bf16* pw = reinterpret_cast<const bf16*>(&vw);
#pragma unroll
        for (int e = 0; e < 8; e++) px[e] = __float2bfloat16(__bfloat162float(px[e]) * rs * __bfloat162float(pw[e]));
        o4[c] = vx;
    }
}
