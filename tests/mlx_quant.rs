//! MLX affine quantization against MLX itself: fixtures from scripts/reference/mlx_quant_cases.py
//! (`mx.quantize`, `mx.dequantize`, `mx.quantized_matmul` for every bits × group size).

mod common;

use candle_core::{Device, Module, Tensor};
use embedrank::convert::quantize::quantize;
use embedrank::weights::qkernel::AffineWeight;
use embedrank::weights::Linear;
use half::bf16;
use safetensors::{Dtype, SafeTensors};

struct Case {
    name: String,
    bits: u32,
    gs: usize,
    bf16: bool,
    n: usize,
    k: usize,
    m: usize,
    w: Vec<f32>,
    packed: Vec<u32>,
    scales: Vec<f32>,
    biases: Vec<f32>,
    deq: Vec<f32>,
    x: Vec<f32>,
    y: Vec<f32>,
}

fn floats(st: &SafeTensors, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let d = t.data();
    let v = match t.dtype() {
        Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::BF16 => d.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        other => panic!("{name}: unexpected dtype {other:?}"),
    };
    (v, t.shape().to_vec())
}

fn cases() -> Vec<Case> {
    let path = common::repo_root().join("tests/fixtures/mlx/quant_cases.safetensors");
    let bytes = std::fs::read(&path).expect("fixture: run scripts/reference/mlx_quant_cases.py");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut names: Vec<String> =
        st.names().iter().filter_map(|n| n.strip_suffix(".packed").map(str::to_string)).collect();
    names.sort();
    names
        .into_iter()
        .map(|c| {
            let parts: Vec<&str> = c.split('_').collect();
            let bits: u32 = parts[0][1..].parse().unwrap();
            let gs: usize = parts[1][1..].parse().unwrap();
            let (w, wshape) = floats(&st, &format!("{c}.w"));
            let (x, xshape) = floats(&st, &format!("{c}.x"));
            let p = st.tensor(&format!("{c}.packed")).unwrap();
            assert_eq!(p.dtype(), Dtype::U32);
            let packed = p.data().chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            Case {
                bits,
                gs,
                bf16: parts[2] == "bf16",
                n: wshape[0],
                k: wshape[1],
                m: xshape[0],
                w,
                packed,
                scales: floats(&st, &format!("{c}.scales")).0,
                biases: floats(&st, &format!("{c}.biases")).0,
                deq: floats(&st, &format!("{c}.deq")).0,
                x,
                y: floats(&st, &format!("{c}.y")).0,
                name: c,
            }
        })
        .collect()
}

fn weight(c: &Case) -> AffineWeight {
    AffineWeight::new(c.bits, c.gs, c.n, c.k, c.packed.clone(), c.scales.clone(), c.biases.clone()).expect("weight")
}

#[test]
fn every_supported_bits_and_group_size_is_covered() {
    let cs = cases();
    for bits in [2, 3, 4, 5, 6, 8] {
        for gs in [32, 64, 128] {
            assert!(cs.iter().any(|c| c.bits == bits && c.gs == gs && !c.bf16), "missing case b{bits} g{gs}");
        }
    }
}

#[test]
fn dequantize_matches_mx_dequantize() {
    for c in cases() {
        let w = weight(&c);
        let mut out = vec![0f32; c.n * c.k];
        w.dequantize_rows(0..c.n, &mut out);
        let groups = c.k / c.gs;
        for (i, (&a, &b)) in out.iter().zip(&c.deq).enumerate() {
            let scale = c.scales[(i / c.k) * groups + (i % c.k) / c.gs].abs();
            let bias = c.biases[(i / c.k) * groups + (i % c.k) / c.gs].abs();
            // f32: 1e-6 of the scale. bf16: MLX computes `s*q + b` in bf16 (two roundings of up to
            // 2^-9 relative each), we in f32 from the same bf16 scale and bias.
            // Plus one f32 rounding of `s*q`: MLX rounds the product before adding b, the kernel
            // fuses them (fma); with b ≈ −s·q the two can differ by an ulp of the product.
            let tol = if c.bf16 {
                1e-6 * scale + (bias + (a - bias).abs() + b.abs()) / 256.0
            } else {
                1e-6 * scale + f32::EPSILON * (bias + (a - bias).abs())
            };
            assert!((a - b).abs() <= tol, "{}: element {i}: ours {a}, mlx {b} (scale {scale})", c.name);
        }
    }
}

#[test]
fn quantized_matmul_matches_mx_quantized_matmul() {
    for c in cases() {
        let w = weight(&c);
        let mut out = vec![0f32; c.m * c.n];
        w.matmul(&c.x, c.m, &mut out);
        // Through the Linear layer the models use, too.
        let lin = Linear::quantized(weight(&c), None);
        let x = Tensor::from_vec(c.x.clone(), (1, c.m, c.k), &Device::Cpu).unwrap();
        let via_linear = lin.forward(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let top = c.y.iter().fold(0f32, |a, v| a.max(v.abs()));
        // f32: 1e-4 relative. bf16 cases check the bf16 scale/bias path only: MLX dequantizes and
        // accumulates in bf16, several percent off the exact product.
        let rel = if c.bf16 { 1e-1 } else { 1e-4 };
        for (i, ((&a, &l), &b)) in out.iter().zip(&via_linear).zip(&c.y).enumerate() {
            assert!((a - b).abs() <= rel * top, "{}: y[{i}]: ours {a}, mlx {b}", c.name);
            assert_eq!(a, l, "{}: Linear differs from the kernel at {i}", c.name);
        }
    }
}

#[test]
fn convert_quantizes_exactly_like_mx_quantize() {
    for c in cases() {
        let q = quantize(&c.w, c.n, c.k, c.bits, c.gs).unwrap();
        assert_eq!(q.packed, c.packed, "{}: codes differ from mx.quantize", c.name);
        for (i, (&ours, &mlx)) in q.scales.iter().zip(&c.scales).enumerate() {
            let ours = if c.bf16 { bf16::from_f32(ours).to_f32() } else { ours };
            assert_eq!(ours, mlx, "{}: scale {i}", c.name);
        }
        for (i, (&ours, &mlx)) in q.biases.iter().zip(&c.biases).enumerate() {
            let ours = if c.bf16 { bf16::from_f32(ours).to_f32() } else { ours };
            assert_eq!(ours, mlx, "{}: bias {i}", c.name);
        }
    }
}

#[test]
fn malformed_layouts_are_errors_not_panics() {
    let c = &cases()[0];
    let short = c.packed[..c.packed.len() - 1].to_vec();
    assert!(AffineWeight::new(c.bits, c.gs, c.n, c.k, short, c.scales.clone(), c.biases.clone()).is_err());
    assert!(AffineWeight::new(7, c.gs, c.n, c.k, c.packed.clone(), c.scales.clone(), c.biases.clone()).is_err());
}
