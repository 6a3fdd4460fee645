//! Microbenchmark of the MLX affine quantized-linear kernels (src/weights/qkernel) against candle's
//! f32 matmul (the Dense path), side by side in one run.
//!
//! ```text
//! cargo run --release --example qkernel_bench -- [--mode layers|stack|sweep|all] [--model minilm|qwen3|all]
//!     [--m 1,8,32,256] [--paths avx512,avx2,scalar] [--group 64] [--min-time 0.3] [--clock wall|cpu]
//!     [--strategy auto|gemv|fused|tiled|int]
//! ```
//! `--clock cpu` times by process CPU time instead of wall time: on a shared machine other processes
//! do not inflate it (with `RAYON_NUM_THREADS=1` it is one core's work; with more threads it also
//! counts rayon's idle spinning).
//! - `layers`: one weight matrix per row of the table (warm caches), GFLOP/s.
//! - `stack`: every linear layer of a MiniLM-L6 / Qwen3-0.6B-shaped model (6 / 28 layers of
//!   distinct weights, so a pass streams the whole model from memory as inference does), tokens/s.
//! - `sweep`: fused vs tiled per m, next to f32, to place the crossover (`FUSED_MAX_M`).
//!
//! Times are the best of repeated runs (the machine is shared; the minimum is the least disturbed).

use std::time::Instant;

use candle_core::{Device, Tensor};
use embedrank::weights::qkernel::{quantize, selected_path, AffineWeight, KernelPath, Strategy};

struct Args {
    mode: String,
    model: String,
    ms: Vec<usize>,
    paths: Vec<KernelPath>,
    group: usize,
    min_time: f64,
    strategy: Strategy,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        mode: "all".into(),
        model: "all".into(),
        ms: vec![1, 8, 32, 256],
        paths: vec![selected_path()],
        group: 64,
        min_time: 0.3,
        strategy: Strategy::Auto,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--mode" => a.mode = val()?,
            "--model" => a.model = val()?,
            "--m" => a.ms = val()?.split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>()?,
            "--paths" => {
                a.paths = val()?
                    .split(',')
                    .map(|s| KernelPath::parse(s).ok_or_else(|| anyhow::anyhow!("unknown path `{s}`")))
                    .collect::<anyhow::Result<_>>()?;
                if let Some(p) = a.paths.iter().find(|p| !p.is_available()) {
                    anyhow::bail!("path `{p}` is not available on this CPU");
                }
            }
            "--group" => a.group = val()?.parse()?,
            "--min-time" => a.min_time = val()?.parse()?,
            "--strategy" => {
                a.strategy = match val()?.as_str() {
                    "auto" => Strategy::Auto,
                    "gemv" => Strategy::Gemv,
                    "fused" => Strategy::Fused,
                    "tiled" => Strategy::Tiled,
                    "int" => Strategy::Int,
                    other => anyhow::bail!("--strategy wants auto, gemv, fused, tiled or int, not `{other}`"),
                }
            }
            "--clock" => match val()?.as_str() {
                "cpu" => USE_CPU_CLOCK.store(true, std::sync::atomic::Ordering::Relaxed),
                "wall" => {}
                other => anyhow::bail!("--clock wants wall or cpu, not `{other}`"),
            },
            "-h" | "--help" => {
                println!("see the doc comment at the top of examples/qkernel_bench.rs");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument `{other}`"),
        }
    }
    Ok(a)
}

/// Process CPU time in seconds (all threads), or None where unavailable.
#[cfg(target_os = "linux")]
fn cpu_seconds() -> Option<f64> {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime writes one timespec (two 64-bit fields on 64-bit Linux) into `ts`.
    let rc = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (rc == 0).then_some(ts.sec as f64 + ts.nsec as f64 * 1e-9)
}

#[cfg(not(target_os = "linux"))]
fn cpu_seconds() -> Option<f64> {
    None
}

/// `--clock cpu`: time calls by process CPU time, which other processes on a shared machine do not
/// inflate (with RAYON_NUM_THREADS=1 it is the kernel's own single-core time).
static USE_CPU_CLOCK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn now() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    if USE_CPU_CLOCK.load(std::sync::atomic::Ordering::Relaxed) {
        if let Some(t) = cpu_seconds() {
            return t;
        }
    }
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// Best seconds per call of `f` over at least `min_time` seconds of wall time (after one warm-up
/// call).
fn best_time(min_time: f64, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut best = f64::INFINITY;
    let mut runs = 0;
    while runs < 3 || start.elapsed().as_secs_f64() < min_time {
        let t = now();
        f();
        best = best.min(now() - t);
        runs += 1;
    }
    best
}

struct Rng(u64);
impl Rng {
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                let u = (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
                u * scale
            })
            .collect()
    }
}

/// (name, out features n, in features k) of each linear layer in one transformer block.
fn block(model: &str) -> Vec<(&'static str, usize, usize)> {
    match model {
        "minilm" => {
            vec![("minilm q/k/v/o", 384, 384), ("minilm intermediate", 1536, 384), ("minilm output", 384, 1536)]
        }
        _ => vec![
            ("qwen3 q_proj", 2048, 1024),
            ("qwen3 k/v_proj", 1024, 1024),
            ("qwen3 o_proj", 1024, 2048),
            ("qwen3 gate/up", 3072, 1024),
            ("qwen3 down", 1024, 3072),
        ],
    }
}

/// Every linear layer of the model, in forward order.
fn stack(model: &str) -> (usize, Vec<(usize, usize)>) {
    match model {
        "minilm" => {
            let l = [(384, 384), (384, 384), (384, 384), (384, 384), (1536, 384), (384, 1536)];
            (6, l.repeat(6))
        }
        _ => {
            let l = [(2048, 1024), (1024, 1024), (1024, 1024), (1024, 2048), (3072, 1024), (3072, 1024), (1024, 3072)];
            (28, l.repeat(28))
        }
    }
}

fn models(sel: &str) -> Vec<&'static str> {
    match sel {
        "minilm" => vec!["minilm"],
        "qwen3" => vec!["qwen3"],
        _ => vec!["minilm", "qwen3"],
    }
}

fn f32_matmul(x: &Tensor, w: &Tensor) -> Tensor {
    // The Dense linear path: x · wᵀ with w stored [n, k].
    x.matmul(&w.t().expect("transpose")).expect("f32 matmul")
}

fn layers(a: &Args) -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    println!("\n## Per-layer GFLOP/s (warm caches, group size {}, best of runs)", a.group);
    let mut hdr = String::from("| layer | n×k | m | f32 candle |");
    for p in &a.paths {
        hdr += &format!(" 8-bit {p} | 4-bit {p} |");
    }
    println!("{hdr}");
    println!("|{}", "---|".repeat(4 + 2 * a.paths.len()));
    for model in models(&a.model) {
        for (name, n, k) in block(model) {
            let wf = rng.vec(n * k, 0.05);
            let wt = Tensor::from_slice(&wf, (n, k), &dev)?;
            let q8 = quantize(&wf, n, k, 8, a.group)?;
            let q4 = quantize(&wf, n, k, 4, a.group)?;
            for &m in &a.ms {
                let xf = rng.vec(m * k, 1.0);
                let xt = Tensor::from_slice(&xf, (m, k), &dev)?;
                let flops = 2.0 * (m * n * k) as f64;
                let tf = best_time(a.min_time, || drop(f32_matmul(&xt, &wt)));
                let mut row = format!("| {name} | {n}×{k} | {m} | {:.1} |", flops / tf / 1e9);
                let mut out = vec![0f32; m * n];
                for &p in &a.paths {
                    for q in [&q8, &q4] {
                        let t =
                            best_time(a.min_time, || q.matmul_strategy(p, a.strategy, &xf, m, &mut out).expect("path"));
                        row += &format!(" {:.1} ({:.2}×) |", flops / t / 1e9, tf / t);
                    }
                }
                println!("{row}");
            }
        }
    }
    println!("(in parentheses: speed relative to f32 in the same row)");
    Ok(())
}

fn stack_bench(a: &Args) -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for model in models(&a.model) {
        let (blocks, shapes) = stack(model);
        // One block's weights are generated and quantized, then copied per block: distinct memory
        // (a pass streams the whole model) without quantizing the same numbers 28 times.
        let per_block = shapes.len() / blocks;
        let mut f32w = Vec::new();
        let mut q8w: Vec<AffineWeight> = Vec::new();
        let mut q4w: Vec<AffineWeight> = Vec::new();
        for &(n, k) in &shapes[..per_block] {
            let wf = rng.vec(n * k, 0.05);
            q8w.push(quantize(&wf, n, k, 8, a.group)?);
            q4w.push(quantize(&wf, n, k, 4, a.group)?);
            f32w.push(wf);
        }
        let f32t: Vec<Tensor> = (0..shapes.len())
            .map(|i| Tensor::from_slice(&f32w[i % per_block], shapes[i], &dev))
            .collect::<Result<_, _>>()?;
        let q8: Vec<AffineWeight> = (0..shapes.len()).map(|i| q8w[i % per_block].clone()).collect();
        let q4: Vec<AffineWeight> = (0..shapes.len()).map(|i| q4w[i % per_block].clone()).collect();
        let params: usize = shapes.iter().map(|(n, k)| n * k).sum();
        let mb = |b: usize| b as f64 / (1 << 20) as f64;
        println!(
            "\n## {model}-shaped linear stack: {} layers, {:.0} M params; weights f32 {:.0} MiB, 8-bit {:.0} MiB, 4-bit {:.0} MiB (group {})",
            shapes.len(),
            params as f64 / 1e6,
            mb(params * 4),
            mb(q8.iter().map(|w| w.memory_bytes()).sum()),
            mb(q4.iter().map(|w| w.memory_bytes()).sum()),
            a.group
        );
        let mut hdr = String::from("| m (tokens) | f32 candle tok/s |");
        for p in &a.paths {
            hdr += &format!(" 8-bit {p} tok/s | 4-bit {p} tok/s |");
        }
        println!("{hdr}");
        println!("|{}", "---|".repeat(2 + 2 * a.paths.len()));
        for &m in &a.ms {
            let xs: Vec<Vec<f32>> = shapes.iter().map(|&(_, k)| rng.vec(m * k, 1.0)).collect();
            let xts: Vec<Tensor> = xs
                .iter()
                .zip(&shapes)
                .map(|(x, &(_, k))| Tensor::from_slice(x, (m, k), &dev))
                .collect::<Result<_, _>>()?;
            let tf = best_time(a.min_time, || {
                for (x, w) in xts.iter().zip(&f32t) {
                    drop(f32_matmul(x, w));
                }
            });
            let mut row = format!("| {m} | {:.1} |", m as f64 / tf);
            let maxn = shapes.iter().map(|s| s.0).max().unwrap_or(0);
            let mut out = vec![0f32; m * maxn];
            for &p in &a.paths {
                for q in [&q8, &q4] {
                    let t = best_time(a.min_time, || {
                        for (x, w) in xs.iter().zip(q.iter()) {
                            w.matmul_strategy(p, a.strategy, x, m, &mut out[..m * w.n()]).expect("path");
                        }
                    });
                    row += &format!(" {:.1} ({:.2}×) |", m as f64 / t, tf / t);
                }
            }
            println!("{row}");
        }
        println!("(in parentheses: speed relative to f32 in the same row; linear layers only, no attention/norms)");
    }
    Ok(())
}

fn sweep(a: &Args) -> anyhow::Result<()> {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let (n, k) = (3072, 1024);
    let wf = rng.vec(n * k, 0.05);
    let wt = Tensor::from_slice(&wf, (n, k), &Device::Cpu)?;
    println!("\n## Strategy crossover, {n}×{k}, group {} (GFLOP/s)", a.group);
    println!("| path | bits | m | f32 candle | fused | tiled |");
    println!("|---|---|---|---|---|---|");
    for &p in &a.paths {
        for bits in [4, 8] {
            let q = quantize(&wf, n, k, bits, a.group)?;
            for &m in &a.ms {
                let x = rng.vec(m * k, 1.0);
                let xt = Tensor::from_slice(&x, (m, k), &Device::Cpu)?;
                let mut out = vec![0f32; m * n];
                let flops = 2.0 * (m * n * k) as f64;
                let tf = best_time(a.min_time, || drop(f32_matmul(&xt, &wt)));
                let tg =
                    best_time(a.min_time, || q.matmul_strategy(p, Strategy::Fused, &x, m, &mut out).expect("path"));
                let tt =
                    best_time(a.min_time, || q.matmul_strategy(p, Strategy::Tiled, &x, m, &mut out).expect("path"));
                println!(
                    "| {p} | {bits} | {m} | {:.1} | {:.1} ({:.2}×) | {:.1} ({:.2}×) |",
                    flops / tf / 1e9,
                    flops / tg / 1e9,
                    tf / tg,
                    flops / tt / 1e9,
                    tf / tt
                );
            }
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a = parse_args()?;
    println!(
        "qkernel_bench: selected path {}, rayon threads {}, paths benchmarked: {}",
        selected_path(),
        rayon::current_num_threads(),
        a.paths.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
    );
    if matches!(a.mode.as_str(), "sweep" | "all") {
        sweep(&a)?;
    }
    if matches!(a.mode.as_str(), "layers" | "all") {
        layers(&a)?;
    }
    if matches!(a.mode.as_str(), "stack" | "all") {
        stack_bench(&a)?;
    }
    Ok(())
}
