//! Small f32 SIMD building blocks shared by the CPU kernels of the weights stage (dense linear
//! layers) and the model stage (attention, norms): a macro that compiles a plain loop a second time
//! with AVX-512 / AVX2 enabled and picks at run time (so LLVM vectorizes it without a global
//! target-cpu), lane-wise dot products and sums, and a pointer type for rayon tasks that write
//! disjoint parts of one buffer.

/// Run `$body` (an expression) compiled for AVX-512, AVX2+FMA or baseline, picked at run time.
macro_rules! multiversion {
    ($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? $body
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? $body
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports the features the function was compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: as above.
                    return unsafe { v3($($arg),*) };
                }
            }
            #[allow(unreachable_code)]
            $body
        }
    };
}
pub(crate) use multiversion;

/// Lanes of the partial sums in reductions: one AVX-512 register of f32.
pub(crate) const LANES: usize = 16;

#[inline(always)]
pub(crate) fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [[0f32; LANES]; 4];
    let mut ca = a.chunks_exact(4 * LANES);
    let mut cb = b.chunks_exact(4 * LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for u in 0..4 {
            for l in 0..LANES {
                acc[u][l] = x[u * LANES + l].mul_add(y[u * LANES + l], acc[u][l]);
            }
        }
    }
    let mut tail = 0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail = x.mul_add(*y, tail);
    }
    let mut s = [0f32; LANES];
    for (l, v) in s.iter_mut().enumerate() {
        *v = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
    }
    s.iter().sum::<f32>() + tail
}

/// Four dot products against one weight row `w`, sharing its loads (a small register block: the
/// weight row is read once per four activation rows).
#[inline(always)]
pub(crate) fn dot4_lanes(x: [&[f32]; 4], w: &[f32]) -> [f32; 4] {
    let mut acc = [[0f32; LANES]; 4];
    let k = w.len();
    let full = k / LANES * LANES;
    let mut c = 0;
    while c < full {
        let wc = &w[c..c + LANES];
        for r in 0..4 {
            let xc = &x[r][c..c + LANES];
            for l in 0..LANES {
                acc[r][l] = xc[l].mul_add(wc[l], acc[r][l]);
            }
        }
        c += LANES;
    }
    let mut out = [0f32; 4];
    for r in 0..4 {
        let tail: f32 = (full..k).map(|t| x[r][t] * w[t]).sum();
        out[r] = acc[r].iter().sum::<f32>() + tail;
    }
    out
}

/// 4 activation rows × 4 weight rows: 16 dot products in 16 vector accumulators, so each loaded
/// chunk feeds four FMAs and the loop is bound by FMA throughput rather than by loads. Written with
/// AVX-512 intrinsics (LLVM kept the portable form's accumulators on the stack); other CPUs use
/// four `dot4_lanes` instead.
#[inline(always)]
pub(crate) fn dot4x4(x: [&[f32]; 4], w: [&[f32]; 4]) -> [[f32; 4]; 4] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { dot4x4_avx512(x, w) };
    }
    let mut out = [[0f32; 4]; 4];
    for (q, wq) in w.iter().enumerate() {
        let r = dot4_lanes(x, wq);
        for a in 0..4 {
            out[a][q] = r[a];
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn dot4x4_avx512(x: [&[f32]; 4], w: [&[f32]; 4]) -> [[f32; 4]; 4] {
    use std::arch::x86_64::*;
    let k = w[0].len();
    assert!(x.iter().chain(w.iter()).all(|r| r.len() == k), "dot4x4: row lengths");
    let full = k / LANES * LANES;
    let mut acc = [[_mm512_setzero_ps(); 4]; 4];
    let mut c = 0;
    while c < full {
        // SAFETY: c + 16 <= k, the length of every row (asserted).
        unsafe {
            let wv = [
                _mm512_loadu_ps(w[0].as_ptr().add(c)),
                _mm512_loadu_ps(w[1].as_ptr().add(c)),
                _mm512_loadu_ps(w[2].as_ptr().add(c)),
                _mm512_loadu_ps(w[3].as_ptr().add(c)),
            ];
            for r in 0..4 {
                let xv = _mm512_loadu_ps(x[r].as_ptr().add(c));
                for q in 0..4 {
                    acc[r][q] = _mm512_fmadd_ps(xv, wv[q], acc[r][q]);
                }
            }
        }
        c += LANES;
    }
    let mut out = [[0f32; 4]; 4];
    for r in 0..4 {
        for q in 0..4 {
            let tail: f32 = (full..k).map(|t| x[r][t] * w[q][t]).sum();
            out[r][q] = _mm512_reduce_add_ps(acc[r][q]) + tail;
        }
    }
    out
}

#[inline(always)]
pub(crate) fn sum_lanes(a: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut c = a.chunks_exact(LANES);
    for x in &mut c {
        for l in 0..LANES {
            acc[l] += x[l];
        }
    }
    acc.iter().sum::<f32>() + c.remainder().iter().sum::<f32>()
}

/// A raw pointer that rayon tasks writing disjoint parts of one buffer may share.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);
// SAFETY: only used for writes to disjoint elements, each task owning its own range.
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Deterministic test data in [-1, 1) (a multiplicative hash of the index; no `rand` dependency).
#[cfg(test)]
pub(crate) fn test_seq(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}
