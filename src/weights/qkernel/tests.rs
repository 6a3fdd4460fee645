//! Kernel tests: the scalar path against MLX (fixture from scripts/reference/qkernel_mlx.py) and an
//! independent bit-by-bit packer; every SIMD path and both matmul strategies against scalar on odd
//! shapes (m = 1, n = 1, k = group size, k an odd number of groups), all bits and group sizes.

use super::driver::{self, Ops};
use super::*;

/// xorshift64*: deterministic test data without a `rand` dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
}

/// Pack codes one bit at a time (independent of the word/shift arithmetic under test).
fn pack_bitwise(codes: &[u32], bits: u32) -> Vec<u32> {
    let mut words = vec![0u32; codes.len() * bits as usize / 32];
    for (j, &c) in codes.iter().enumerate() {
        for b in 0..bits as usize {
            let pos = j * bits as usize + b;
            words[pos / 32] |= ((c >> b) & 1) << (pos % 32);
        }
    }
    words
}

fn random_weight(rng: &mut Rng, bits: u32, gs: usize, n: usize, k: usize) -> AffineWeight {
    let codes: Vec<u32> = (0..n * k).map(|_| (rng.next() >> 33) as u32 & ((1 << bits) - 1)).collect();
    let packed: Vec<u32> = codes.chunks(k).flat_map(|row| pack_bitwise(row, bits)).collect();
    let g = n * k / gs;
    let scales: Vec<f32> = (0..g).map(|_| rng.f() * 0.02).collect();
    let biases: Vec<f32> = (0..g).map(|_| rng.f() * 0.1).collect();
    AffineWeight::new(bits, gs, n, k, packed, scales, biases).unwrap()
}

fn paths_here() -> Vec<(String, Ops)> {
    let mut v = vec![("portable(neon)".to_string(), Ops::portable()), ("scalar ops".to_string(), driver::scalar_ops())];
    for p in [KernelPath::Avx2, KernelPath::Avx512, KernelPath::Neon] {
        if let Some(o) = Ops::for_path(p) {
            v.push((p.name().to_string(), o));
        }
    }
    v
}

fn assert_close(what: &str, got: &[f32], want: &[f32], scale: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((g, w), s)) in got.iter().zip(want).zip(scale).enumerate() {
        let tol = 2e-5 * s + 1e-6;
        assert!((g - w).abs() <= tol, "{what}: element {i}: got {g}, want {w} (tol {tol})");
    }
}

/// Σ|x|·|w| per output, the natural error scale of a dot product.
fn abs_scale(w: &AffineWeight, x: &[f32], m: usize) -> Vec<f32> {
    let (n, k) = (w.n(), w.k());
    let mut deq = vec![0f32; n * k];
    scalar_dequant_all(w, &mut deq);
    let mut s = vec![0f32; m * n];
    for i in 0..m {
        for r in 0..n {
            s[i * n + r] = (0..k).map(|j| (x[i * k + j] * deq[r * k + j]).abs()).sum();
        }
    }
    s
}

/// What the public entry points compute on `path` for m rows: the integer formula where that path
/// takes the integer kernel (`driver::INT_MIN_M` rows or more, AVX-512 VNNI, not switched off),
/// else the float product.
fn public_reference(w: &AffineWeight, path: KernelPath, x: &[f32], m: usize) -> Vec<f32> {
    let mut want = vec![0f32; m * w.n()];
    let int = driver::Ops::for_path(path).is_some_and(|o| o.int8) && int_activations() && m >= driver::INT_MIN_M;
    #[cfg(target_arch = "x86_64")]
    if int {
        int8::matmul_reference(w, x, m, &mut want);
        return want;
    }
    let _ = int;
    scalar::matmul(w, x, m, &mut want);
    want
}

fn scalar_dequant_all(w: &AffineWeight, out: &mut [f32]) {
    for r in 0..w.n() {
        scalar::dequantize_row(w, r, &mut out[r * w.k()..(r + 1) * w.k()]);
    }
}

#[test]
fn code_reads_the_lsb_first_stream() {
    let mut rng = Rng(1);
    for bits in SUPPORTED_BITS {
        let codes: Vec<u32> = (0..96).map(|_| (rng.next() >> 20) as u32 & ((1 << bits) - 1)).collect();
        let words = pack_bitwise(&codes, bits);
        for (j, &c) in codes.iter().enumerate() {
            assert_eq!(scalar::code(&words, j, bits), c, "bits {bits} element {j}");
        }
    }
    // The documented 4-bit layout: element 0 is the least significant nibble.
    assert_eq!(scalar::code(&[0x8765_4321], 0, 4), 1);
    assert_eq!(scalar::code(&[0x8765_4321], 7, 4), 8);
}

#[test]
fn scalar_dequantize_matches_formula() {
    let mut rng = Rng(2);
    let w = random_weight(&mut rng, 3, 32, 2, 64);
    let mut out = vec![0f32; 2 * 64];
    w.dequantize_rows(0..2, &mut out);
    for r in 0..2 {
        for j in 0..64 {
            let q = scalar::code(&w.packed()[r * 6..(r + 1) * 6], j, 3) as f32;
            let (s, b) = (w.scales()[r * 2 + j / 32], w.biases()[r * 2 + j / 32]);
            assert!((out[r * 64 + j] - (q * s + b)).abs() <= 1e-6);
        }
    }
}

#[derive(serde::Deserialize)]
struct Fixture {
    n: usize,
    k: usize,
    m: usize,
    weight: Vec<f32>,
    x: Vec<f32>,
    cases: Vec<Case>,
}
#[derive(serde::Deserialize)]
struct Case {
    bits: u32,
    group_size: usize,
    packed: Vec<u32>,
    scales: Vec<f32>,
    biases: Vec<f32>,
    dequantized: Vec<f32>,
    matmul: Vec<f32>,
}

fn fixture() -> Fixture {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/qkernel_mlx.json");
    let text = std::fs::read_to_string(path).expect("run scripts/reference/qkernel_mlx.py");
    serde_json::from_str(&text).expect("fixture parses")
}

#[test]
fn quantize_matches_mlx() {
    let fx = fixture();
    for c in &fx.cases {
        let q = quantize(&fx.weight, fx.n, fx.k, c.bits, c.group_size).unwrap();
        let what = format!("bits {} gs {}", c.bits, c.group_size);
        // Scales/biases: MLX computes in f32 too, so these agree to the last bit or one ulp.
        for (i, (a, b)) in q.scales().iter().zip(&c.scales).chain(q.biases().iter().zip(&c.biases)).enumerate() {
            assert!((a - b).abs() <= b.abs() * 2e-7, "{what}: scale/bias {i}: {a} vs mlx {b}");
        }
        let differing = q.packed().iter().zip(&c.packed).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{what}: {differing} packed words differ from MLX");
    }
}

#[test]
fn dequantize_and_matmul_match_mlx() {
    let fx = fixture();
    for c in &fx.cases {
        let w =
            AffineWeight::new(c.bits, c.group_size, fx.n, fx.k, c.packed.clone(), c.scales.clone(), c.biases.clone())
                .unwrap();
        let what = format!("bits {} gs {}", c.bits, c.group_size);
        let mut deq = vec![0f32; fx.n * fx.k];
        scalar_dequant_all(&w, &mut deq);
        let ones = vec![1f32; deq.len()];
        assert_close(&format!("{what} dequantize"), &deq, &c.dequantized, &ones);
        let scale = abs_scale(&w, &fx.x, fx.m);
        for (name, path) in [("scalar", None), ("selected", Some(selected_path()))] {
            let mut y = vec![0f32; fx.m * fx.n];
            match path {
                Some(p) => w.matmul_with(p, &fx.x, fx.m, &mut y).unwrap(),
                None => scalar::matmul(&w, &fx.x, fx.m, &mut y),
            }
            assert_close(&format!("{what} matmul {name}"), &y, &c.matmul, &scale);
        }
    }
}

/// Within half a step inside the representable range; MLX snaps the scale so the larger-magnitude
/// edge is exact, which can leave the other edge clipped by less than one step.
#[test]
fn quantize_round_trip_error_is_within_a_step() {
    let mut rng = Rng(3);
    let (n, k) = (3, 256);
    let w = rng.vec(n * k);
    for bits in SUPPORTED_BITS {
        for gs in SUPPORTED_GROUP_SIZES {
            let q = quantize(&w, n, k, bits, gs).unwrap();
            let mut d = vec![0f32; n * k];
            q.dequantize_rows(0..n, &mut d);
            for (i, (a, b)) in w.iter().zip(&d).enumerate() {
                let step = q.scales()[i / gs].abs();
                assert!((a - b).abs() <= step + 1e-6, "bits {bits} gs {gs} element {i}: {a} -> {b}");
            }
        }
    }
}

/// Every path, both strategies, against scalar: all bits × group sizes × odd shapes.
#[test]
fn every_path_matches_scalar_on_odd_shapes() {
    let mut rng = Rng(4);
    for bits in SUPPORTED_BITS {
        for gs in SUPPORTED_GROUP_SIZES {
            // k = one group; k = 3 or 5 groups (not a multiple of any SIMD width × group); n = 1; n odd.
            for (n, k) in [(1, gs), (7, gs), (1, 3 * gs), (19, 5 * gs), (40, 3 * gs)] {
                let w = random_weight(&mut rng, bits, gs, n, k);
                for m in [1, 2, 3, 4, 5, 33] {
                    let x = rng.vec(m * k);
                    let mut want = vec![0f32; m * n];
                    scalar::matmul(&w, &x, m, &mut want);
                    let scale = abs_scale(&w, &x, m);
                    for (name, ops) in paths_here() {
                        let what = format!("{name} bits {bits} gs {gs} m {m} n {n} k {k}");
                        let mut got = vec![f32::NAN; m * n];
                        driver::fused(&w, ops, &x, m, &mut got, None, false);
                        assert_close(&format!("{what} fused"), &got, &want, &scale);
                        let mut got = vec![f32::NAN; m * n];
                        driver::tiled(&w, ops, &x, m, &mut got, None, false);
                        assert_close(&format!("{what} tiled"), &got, &want, &scale);
                        let mut got = vec![f32::NAN; m * n];
                        if driver::gemv(&w, ops, &x, m, &mut got, None, false) {
                            assert!(ops.gemv4.is_some() && matches!(bits, 4 | 8), "{what}: gemv ran");
                            assert_close(&format!("{what} gemv"), &got, &want, &scale);
                        }
                        let mut deq = vec![f32::NAN; n * k];
                        for r in 0..n {
                            (ops.dequant)(&w, r, 0..k / gs, &mut deq[r * k..(r + 1) * k]);
                        }
                        let mut want_deq = vec![0f32; n * k];
                        scalar_dequant_all(&w, &mut want_deq);
                        assert_close(&format!("{what} dequant"), &deq, &want_deq, &vec![1.0; n * k]);
                    }
                }
            }
        }
    }
}

/// Activation row counts past the GEMM block size, and the public entry point on every path.
#[test]
fn large_m_and_public_paths_match_scalar() {
    let mut rng = Rng(5);
    for bits in [4, 8, 3] {
        let (n, k, m) = (70, 192, 1100);
        let w = random_weight(&mut rng, bits, 64, n, k);
        let x = rng.vec(m * k);
        let scale = abs_scale(&w, &x, m);
        for p in KernelPath::ALL.into_iter().filter(|p| p.is_available()) {
            let mut got = vec![f32::NAN; m * n];
            w.matmul_with(p, &x, m, &mut got).unwrap();
            assert_close(&format!("{p} bits {bits}"), &got, &public_reference(&w, p, &x, m), &scale);
        }
        let mut got = vec![f32::NAN; m * n];
        w.matmul(&x, m, &mut got);
        assert_close(&format!("selected bits {bits}"), &got, &public_reference(&w, selected_path(), &x, m), &scale);
    }
}

#[test]
fn x86_with_avx512_still_runs_the_avx2_path() {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        assert!(KernelPath::Avx2.is_available());
        assert!(Ops::for_path(KernelPath::Avx2).is_some());
        if KernelPath::Avx512.is_available() {
            assert_eq!(KernelPath::detect(), KernelPath::Avx512);
        } else {
            assert_eq!(KernelPath::detect(), KernelPath::Avx2);
        }
    }
    assert!(KernelPath::Scalar.is_available());
}

#[test]
fn unavailable_path_is_an_error() {
    let w = quantize(&[0.5; 64], 1, 64, 4, 64).unwrap();
    let mut out = [0f32; 1];
    for p in KernelPath::ALL {
        let r = w.matmul_with(p, &[1.0; 64], 1, &mut out);
        assert_eq!(r.is_ok(), p.is_available(), "{p}");
    }
}

#[test]
fn path_names_parse() {
    for p in KernelPath::ALL {
        assert_eq!(KernelPath::parse(p.name()), Some(p));
    }
    assert_eq!(KernelPath::parse(" AVX2 "), Some(KernelPath::Avx2));
    assert_eq!(KernelPath::parse("sse"), None);
}

#[test]
fn new_rejects_bad_layouts() {
    let ok = |bits, gs, n, k, p, s| AffineWeight::new(bits, gs, n, k, vec![0; p], vec![0.0; s], vec![0.0; s]);
    assert!(ok(4, 64, 2, 128, 32, 4).is_ok());
    assert!(ok(7, 64, 2, 128, 56, 4).is_err(), "7 bits");
    assert!(ok(4, 16, 2, 128, 32, 16).is_err(), "group 16");
    assert!(ok(4, 64, 2, 96, 24, 3).is_err(), "k not a multiple of the group");
    assert!(ok(4, 64, 2, 128, 33, 4).is_err(), "packed size");
    assert!(ok(4, 64, 2, 128, 32, 3).is_err(), "scales size");
    assert!(AffineWeight::new(4, 64, 1, 64, vec![0; 8], vec![f32::NAN], vec![0.0]).is_err(), "NaN scale");
    assert!(quantize(&[f32::INFINITY; 64], 1, 64, 4, 64).is_err());
    assert!(quantize(&[0.0; 63], 1, 64, 4, 64).is_err());
}

/// Weights stored with 16-bit scales/biases (as MLX checkpoints hold them) compute exactly what the
/// same values widened to f32 compute, on every path and strategy, with and without a bias.
#[test]
fn half_params_and_fused_bias_match_f32() {
    let mut rng = Rng(6);
    let (n, k) = (37, 320);
    for bits in [4, 8, 3] {
        for gs in [32, 64] {
            let w32 = random_weight(&mut rng, bits, gs, n, k);
            let (s, b) = (w32.scales(), w32.biases());
            let as_bf16 = |v: &[f32]| GroupParams::Bf16(v.iter().map(|&x| half::bf16::from_f32(x)).collect());
            let as_f16 = |v: &[f32]| GroupParams::F16(v.iter().map(|&x| half::f16::from_f32(x)).collect());
            for (kind, sp, bp) in [("bf16", as_bf16(&s), as_bf16(&b)), ("f16", as_f16(&s), as_f16(&b))] {
                let wh = AffineWeight::with_params(bits, gs, n, k, w32.packed().to_vec(), sp, bp).unwrap();
                assert_eq!(wh.scale_params().dtype_name(), kind);
                assert_eq!(wh.memory_bytes(), 4 * w32.packed().len() + 2 * 2 * s.len());
                // The same rounded values in f32: the reference for the 16-bit copy.
                let wr = AffineWeight::new(
                    bits,
                    gs,
                    n,
                    k,
                    w32.packed().to_vec(),
                    wh.scales().to_vec(),
                    wh.biases().to_vec(),
                )
                .unwrap();
                let bias = rng.vec(n);
                for m in [1, 2, 3, 17, 40] {
                    let x = rng.vec(m * k);
                    let mut want = vec![0f32; m * n];
                    scalar::matmul(&wr, &x, m, &mut want);
                    for (i, v) in want.iter_mut().enumerate() {
                        *v += bias[i % n];
                    }
                    let mut scale = abs_scale(&wr, &x, m);
                    scale.iter_mut().for_each(|s| *s += 1.0);
                    for (name, ops) in paths_here() {
                        let what = format!("{kind} {name} bits {bits} gs {gs} m {m}");
                        let mut got = vec![f32::NAN; m * n];
                        driver::fused(&wh, ops, &x, m, &mut got, Some(&bias), false);
                        assert_close(&format!("{what} fused+bias"), &got, &want, &scale);
                        let mut got = vec![f32::NAN; m * n];
                        driver::tiled(&wh, ops, &x, m, &mut got, Some(&bias), false);
                        assert_close(&format!("{what} tiled+bias"), &got, &want, &scale);
                        let mut got = vec![f32::NAN; m * n];
                        if driver::gemv(&wh, ops, &x, m, &mut got, Some(&bias), false) {
                            assert_close(&format!("{what} gemv+bias"), &got, &want, &scale);
                        }
                    }
                    let mut got = vec![f32::NAN; m * n];
                    wh.matmul_bias(&x, m, &mut got, Some(&bias));
                    let mut want_public = public_reference(&wr, selected_path(), &x, m);
                    for (i, v) in want_public.iter_mut().enumerate() {
                        *v += bias[i % n];
                    }
                    assert_close(&format!("{kind} selected m {m}"), &got, &want_public, &scale);
                }
            }
        }
    }
}

/// The tiled path splits weights larger than one tile; rows past the first tile land in place.
#[test]
fn tiled_path_splits_large_weights() {
    let mut rng = Rng(7);
    // 4 M floats per tile: k = 32768 leaves 128 rows per tile, so 300 rows take three tiles.
    let (n, k, m) = (300, 32768, 20);
    let w = random_weight(&mut rng, 4, 128, n, k);
    let x = rng.vec(m * k);
    let mut want = vec![0f32; m * n];
    scalar::matmul(&w, &x, m, &mut want);
    let scale = abs_scale(&w, &x, m);
    for (name, ops) in paths_here() {
        let mut got = vec![f32::NAN; m * n];
        driver::tiled(&w, ops, &x, m, &mut got, None, false);
        assert_close(&format!("{name} tiled"), &got, &want, &scale);
    }
}

/// The register-dequantizing kernel runs where the path has one (AVX-512) for 4 and 8 bits.
#[test]
fn gemv_kernel_covers_four_and_eight_bits_on_avx512() {
    let Some(ops) = Ops::for_path(KernelPath::Avx512) else { return };
    let mut rng = Rng(8);
    for (bits, runs) in [(4, true), (8, true), (3, false), (6, false)] {
        let w = random_weight(&mut rng, bits, 64, 9, 192);
        let x = rng.vec(2 * 192);
        let mut out = vec![0f32; 2 * 9];
        assert_eq!(driver::gemv(&w, ops, &x, 2, &mut out, None, false), runs, "bits {bits}");
    }
}

/// `matmul_acc` and every strategy with `accumulate` add the product (and bias) onto the output.
#[test]
fn accumulate_adds_onto_the_output() {
    let mut rng = Rng(9);
    let (n, k) = (21, 256);
    for bits in [4, 8, 5] {
        let w = random_weight(&mut rng, bits, 64, n, k);
        let bias = rng.vec(n);
        for m in [1, 2, 6, 90] {
            let x = rng.vec(m * k);
            let start = rng.vec(m * n);
            let mut prod = vec![0f32; m * n];
            scalar::matmul(&w, &x, m, &mut prod);
            let mut scale = abs_scale(&w, &x, m);
            scale.iter_mut().for_each(|s| *s += 4.0);
            let want: Vec<f32> = (0..m * n).map(|i| start[i] + prod[i] + bias[i % n]).collect();
            let want_nob: Vec<f32> = (0..m * n).map(|i| start[i] + prod[i]).collect();
            for (name, ops) in paths_here() {
                let what = format!("{name} bits {bits} m {m}");
                for strategy in ["gemv", "fused", "tiled"] {
                    let mut got = start.clone();
                    let ran = match strategy {
                        "gemv" => driver::gemv(&w, ops, &x, m, &mut got, Some(&bias), true),
                        "fused" => {
                            driver::fused(&w, ops, &x, m, &mut got, Some(&bias), true);
                            true
                        }
                        _ => {
                            driver::tiled(&w, ops, &x, m, &mut got, Some(&bias), true);
                            true
                        }
                    };
                    if ran {
                        assert_close(&format!("{what} {strategy} acc+bias"), &got, &want, &scale);
                    }
                }
            }
            let mut got = start.clone();
            w.matmul_acc(&x, m, &mut got);
            let public = public_reference(&w, selected_path(), &x, m);
            let want_public: Vec<f32> = (0..m * n).map(|i| start[i] + public[i]).collect();
            assert_close(&format!("matmul_acc bits {bits} m {m}"), &got, &want_public, &scale);
            let _ = &want_nob;
            let mut got = start.clone();
            w.matmul_with(KernelPath::Scalar, &x, m, &mut got).unwrap();
            assert_close(&format!("scalar overwrites bits {bits} m {m}"), &got, &prod, &scale);
        }
    }
}

/// Whether the integer kernel can run here (else the test says it is skipped).
#[cfg(target_arch = "x86_64")]
fn vnni_here() -> bool {
    let ok = int8::available();
    if !ok {
        eprintln!("skipped: this CPU has no AVX-512 VNNI");
    }
    ok
}

/// The integer kernel (AVX-512 VNNI) against its plain-loop reference, which follows the same
/// formula in the same order: all bits × group sizes, odd shapes (m = 1, n = 1, n not a multiple of
/// the 32-column panel, k one group, k past the 512-input chunk), bias, accumulate, and row counts
/// past the row block.
#[cfg(target_arch = "x86_64")]
#[test]
fn int_kernel_matches_its_reference() {
    if !vnni_here() {
        return;
    }
    let mut rng = Rng(21);
    for bits in SUPPORTED_BITS {
        for gs in SUPPORTED_GROUP_SIZES {
            for (n, k) in [(1, gs), (17, 3 * gs), (33, 640), (64, 1280)] {
                let w = random_weight(&mut rng, bits, gs, n, k);
                let bias = rng.vec(n);
                for m in [1, 3, 7, 13] {
                    let x = rng.vec(m * k);
                    let mut want = vec![0f32; m * n];
                    int8::matmul_reference(&w, &x, m, &mut want);
                    let scale = abs_scale(&w, &x, m);
                    let what = format!("int bits {bits} gs {gs} m {m} n {n} k {k}");
                    let mut got = vec![f32::NAN; m * n];
                    int8::matmul(&w, &x, m, &mut got, Default::default());
                    assert_close(&what, &got, &want, &scale);
                    let start = rng.vec(m * n);
                    let mut got = start.clone();
                    int8::matmul(
                        &w,
                        &x,
                        m,
                        &mut got,
                        int8::Finish { bias: Some(&bias), acc: true, ..Default::default() },
                    );
                    let want_acc: Vec<f32> = (0..m * n).map(|i| start[i] + want[i] + bias[i % n]).collect();
                    let scale_acc: Vec<f32> = scale.iter().map(|s| s + 4.0).collect();
                    assert_close(&format!("{what} acc+bias"), &got, &want_acc, &scale_acc);
                }
            }
        }
    }
    let (n, k, m) = (45, 256, 1100);
    let w = random_weight(&mut rng, 4, 64, n, k);
    let x = rng.vec(m * k);
    let mut want = vec![0f32; m * n];
    int8::matmul_reference(&w, &x, m, &mut want);
    let mut got = vec![f32::NAN; m * n];
    int8::matmul(&w, &x, m, &mut got, Default::default());
    assert_close("int m 1100", &got, &want, &abs_scale(&w, &x, m));
}

/// The integer kernel's task split on many threads (the GPU host had 16): with 96 panels and 64
/// wanted tasks the split once left tasks past the last panel, whose finish pass addressed columns past
/// the matrix (a panic here, memory corruption in a release build). Same answer on 1, 2, 16 and 48 threads.
#[cfg(target_arch = "x86_64")]
#[test]
fn int_kernel_splits_work_for_any_thread_count() {
    if !vnni_here() {
        return;
    }
    let mut rng = Rng(23);
    let (n, k) = (3072, 768);
    let w = random_weight(&mut rng, 8, 64, n, k);
    let bias = rng.vec(n);
    for m in [1, 4, 13] {
        let x = rng.vec(m * k);
        let mut want = vec![0f32; m * n];
        int8::matmul_reference(&w, &x, m, &mut want);
        for i in 0..m * n {
            want[i] += bias[i % n];
        }
        for threads in [1, 2, 16, 48] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut got = vec![f32::NAN; m * n];
            // An activation makes every task run the finish pass over its own columns.
            let act = |r: &mut [f32]| r.iter_mut().for_each(|v| *v *= 2.0);
            pool.install(|| {
                int8::matmul(
                    &w,
                    &x,
                    m,
                    &mut got,
                    int8::Finish { bias: Some(&bias), act: Some(&act), ..Default::default() },
                )
            });
            let want2: Vec<f32> = want.iter().map(|v| v * 2.0).collect();
            let scale: Vec<f32> = abs_scale(&w, &x, m).iter().map(|s| s * 2.0).collect();
            assert_close(&format!("m {m} threads {threads}"), &got, &want2, &scale);
        }
    }
}

/// The SIMD activation quantizer gives the scalar definition's codes and scales bit for bit, zero
/// groups included, and every code is within half a step of its input.
#[cfg(target_arch = "x86_64")]
#[test]
fn int_activation_quantizer_is_exact_and_within_half_a_step() {
    if !vnni_here() {
        return;
    }
    let mut rng = Rng(22);
    let (m, k, gs) = (5, 256, 64);
    let mut x: Vec<f32> = rng.vec(m * k).iter().map(|v| v * 3.0).collect();
    x[32..64].fill(0.0); // an all-zero group
    x[300] = 1e4; // an outlier
    let a = int8::quantize_acts(&x, m, k, gs, true);
    let b = int8::quantize_acts(&x, m, k, gs, false);
    assert_eq!(a.q, b.q);
    assert_eq!(a.scale, b.scale);
    assert_eq!(a.gsum, b.gsum);
    for (i, (&v, &q)) in x.iter().zip(&a.q).enumerate() {
        let s = a.scale[i / int8::ACT_GROUP];
        assert!((v - s * q as f32).abs() <= 0.5 * s * 1.0001 + 1e-30, "element {i}: {v} vs {}·{q}", s);
    }
    assert!(a.q[32..64].iter().all(|&q| q == 0) && a.scale[1] == 0.0);
}

/// What integer activations cost in agreement: per output row, cosine to the float product of the
/// same quantized weight ≥ 0.9995 on random data (the model-level numbers are in
/// tests/qkernel_minilm.rs).
#[cfg(target_arch = "x86_64")]
#[test]
fn int_kernel_stays_close_to_float_activations() {
    if !vnni_here() {
        return;
    }
    let mut rng = Rng(23);
    let (n, k, m) = (96, 384, 9);
    for bits in [4, 8] {
        let w = random_weight(&mut rng, bits, 64, n, k);
        let x = rng.vec(m * k);
        let mut exact = vec![0f32; m * n];
        scalar::matmul(&w, &x, m, &mut exact);
        let mut got = vec![0f32; m * n];
        int8::matmul(&w, &x, m, &mut got, Default::default());
        for i in 0..m {
            let (g, e) = (&got[i * n..(i + 1) * n], &exact[i * n..(i + 1) * n]);
            let dot: f64 = g.iter().zip(e).map(|(a, b)| *a as f64 * *b as f64).sum();
            let norm = |v: &[f32]| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
            let cos = dot / (norm(g) * norm(e));
            assert!(cos >= 0.9995, "bits {bits} row {i}: cosine {cos}");
        }
    }
}

/// The outlier split (`AffineWeight::set_split_outliers`): with a few planted huge input channels,
/// the result is exactly the integer product of the activations with those channels cleared plus
/// their f32 product, and it is far closer to the float-activation result than without the split.
#[cfg(target_arch = "x86_64")]
#[test]
fn outlier_split_multiplies_huge_channels_in_f32() {
    if !vnni_here() {
        return;
    }
    let mut rng = Rng(31);
    let (n, k, m) = (40, 256, 70);
    let mut w = random_weight(&mut rng, 8, 32, n, k);
    let mut x = rng.vec(m * k);
    let huge = [5usize, 77, 200];
    for row in x.chunks_exact_mut(k) {
        for &c in &huge {
            row[c] *= 60.0;
        }
    }
    let mut exact = vec![0f32; m * n];
    scalar::matmul(&w, &x, m, &mut exact);
    let err = |got: &[f32]| got.iter().zip(&exact).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let mut plain = vec![0f32; m * n];
    int8::matmul(&w, &x, m, &mut plain, Default::default());
    w.set_split_outliers(true);
    let mut split = vec![0f32; m * n];
    int8::matmul(&w, &x, m, &mut split, Default::default());
    assert!(err(&split) * 8.0 < err(&plain), "split {} vs plain {}", err(&split), err(&plain));
    // The decomposition itself: integer part on the cleared activations + f32 outlier part.
    let mut cleared = x.clone();
    for row in cleared.chunks_exact_mut(k) {
        for &c in &huge {
            row[c] = 0.0;
        }
    }
    let mut want = vec![0f32; m * n];
    int8::matmul_reference(&w, &cleared, m, &mut want);
    let mut dense = vec![0f32; n * k];
    scalar_dequant_all(&w, &mut dense);
    for i in 0..m {
        for j in 0..n {
            let extra: f32 = huge.iter().map(|&c| x[i * k + c] * dense[j * k + c]).sum();
            let (g, e) = (split[i * n + j], want[i * n + j] + extra);
            assert!((g - e).abs() <= 1e-4 * (1.0 + e.abs()), "row {i} col {j}: {g} vs {e}");
        }
    }
}

/// The integer kernel's one-pass finish (`int8::Finish`, what `AffineWeight::matmul_finish` runs
/// there): bias, residual and the outlier channels are added before the activation, which runs on
/// every element exactly once, for several row-block and panel splits (m past the row block, n not
/// a multiple of the panel); the result equals the separate passes (product, additions, activation).
#[cfg(target_arch = "x86_64")]
#[test]
fn int_kernel_finish_adds_then_activates_once() {
    if !vnni_here() {
        return;
    }
    let mut rng = Rng(41);
    for (n, k, m, split) in [(50, 128, 70, true), (33, 64, 5, false), (96, 256, 200, true)] {
        let mut w = random_weight(&mut rng, 8, 32, n, k);
        w.set_split_outliers(split);
        let mut x = rng.vec(m * k);
        for row in x.chunks_exact_mut(k) {
            row[k / 2] *= 80.0; // an outlier channel
        }
        let (bias, residual) = (rng.vec(n), rng.vec(m * n));
        let calls = std::sync::atomic::AtomicUsize::new(0);
        // Not idempotent, so running twice on an element would show: y -> 2y + 1.
        let act = |v: &mut [f32]| {
            calls.fetch_add(v.len(), std::sync::atomic::Ordering::Relaxed);
            v.iter_mut().for_each(|y| *y = 2.0 * *y + 1.0);
        };
        let mut want = vec![0f32; m * n];
        int8::matmul(&w, &x, m, &mut want, Default::default());
        for (i, v) in want.iter_mut().enumerate() {
            *v = 2.0 * (*v + bias[i % n] + residual[i]) + 1.0;
        }
        let mut got = vec![f32::NAN; m * n];
        let fin = int8::Finish { bias: Some(&bias), residual: Some(&residual), act: Some(&act), ..Default::default() };
        int8::matmul(&w, &x, m, &mut got, fin);
        assert_eq!(calls.into_inner(), m * n, "activation runs once per element (n {n} m {m})");
        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
            assert!((g - e).abs() <= 1e-4 * (1.0 + e.abs()), "n {n} m {m} element {i}: {g} vs {e}");
        }
    }
}

/// Stacked weights (`AffineWeight::concat_rows`, used for fused q/k/v) multiply exactly as their
/// parts, on every path; mismatched layouts are refused.
#[test]
fn concat_rows_multiplies_as_its_parts() {
    let mut rng = Rng(43);
    let (k, m) = (128, 7);
    let parts: Vec<AffineWeight> = [24, 40, 8].iter().map(|&n| random_weight(&mut rng, 8, 32, n, k)).collect();
    let refs: Vec<&AffineWeight> = parts.iter().collect();
    let joined = AffineWeight::concat_rows(&refs).expect("same layout");
    assert_eq!((joined.n(), joined.k()), (72, k));
    let x = rng.vec(m * k);
    let mut got = vec![0f32; m * 72];
    scalar::matmul(&joined, &x, m, &mut got);
    let mut col = 0;
    for p in &parts {
        let mut want = vec![0f32; m * p.n()];
        scalar::matmul(p, &x, m, &mut want);
        for i in 0..m {
            assert_eq!(&got[i * 72 + col..i * 72 + col + p.n()], &want[i * p.n()..(i + 1) * p.n()]);
        }
        col += p.n();
    }
    let other = random_weight(&mut rng, 4, 32, 8, k);
    assert!(AffineWeight::concat_rows(&[&parts[0], &other]).is_none(), "bits differ");
    let mut split = parts[1].clone();
    split.set_split_outliers(true);
    assert!(AffineWeight::concat_rows(&[&parts[0], &split]).is_none(), "settings differ");
}

/// The fused feed-forward pair (`int8::mlp`: the first layer quantizes its output block by block
/// for the second) gives exactly the two separate integer calls, for group sizes 32 and 64 of the
/// second layer and several row counts (with and without the first layer's outlier split); a second
/// layer that splits outliers is refused (it needs its whole input first).
#[cfg(target_arch = "x86_64")]
#[test]
fn int_mlp_equals_two_separate_calls() {
    if !vnni_here() {
        return;
    }
    let mut rng = Rng(47);
    let act = |v: &mut [f32]| v.iter_mut().for_each(|y| *y = y.max(0.0) + 0.01 * *y);
    for (gs2, m) in [(32, 70), (64, 9), (64, 130)] {
        let (k, n1, n2) = (96, 192, 40);
        let mut w1 = random_weight(&mut rng, 8, 32, n1, k);
        w1.set_split_outliers(true);
        let w2 = random_weight(&mut rng, 8, gs2, n2, n1);
        let x = rng.vec(m * k);
        let (b1, b2, res) = (rng.vec(n1), rng.vec(n2), rng.vec(m * n2));
        let mut mid = vec![0f32; m * n1];
        int8::matmul(&w1, &x, m, &mut mid, int8::Finish { bias: Some(&b1), act: Some(&act), ..Default::default() });
        let mut want = vec![0f32; m * n2];
        int8::matmul(
            &w2,
            &mid,
            m,
            &mut want,
            int8::Finish { bias: Some(&b2), residual: Some(&res), ..Default::default() },
        );
        let (mut mid2, mut got) = (vec![f32::NAN; m * n1], vec![f32::NAN; m * n2]);
        let fin1 = int8::Finish { bias: Some(&b1), act: Some(&act), ..Default::default() };
        let fin2 = int8::Finish { bias: Some(&b2), residual: Some(&res), ..Default::default() };
        assert!(int8::mlp((&w1, &w2), &x, m, &mut mid2, &mut got, (fin1, fin2)));
        assert_eq!(mid2, mid, "gs2 {gs2} m {m}: intermediate");
        assert_eq!(got, want, "gs2 {gs2} m {m}: output");
    }
    let (w1, mut w2) = (random_weight(&mut rng, 8, 32, 64, 32), random_weight(&mut rng, 8, 32, 8, 64));
    w2.set_split_outliers(true);
    let (mut mid, mut out) = (vec![0f32; 64 * 4], vec![0f32; 8 * 4]);
    assert!(!int8::mlp((&w1, &w2), &rng.vec(4 * 32), 4, &mut mid, &mut out, Default::default()));
}
