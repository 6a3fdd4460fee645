//! `embedrank convert`: quantize a checkpoint into the MLX layout.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use embedrank::convert::calibrate::{convert_calibrated, CalibrateOptions, CalibrationSet, EvalData, Method, Stage};
use embedrank::convert::{self, ConvertOptions, Destination};
use embedrank::eval::{beir, sts};
use embedrank::source::{self, ResolveOptions};
use embedrank::spec::{ModelSpec, SpecOverrides, Task};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Model to quantize: a local folder, or org/name[@revision] (downloaded if missing).
    pub source: String,
    /// Bits per weight: 2, 3, 4, 5, 6 or 8.
    #[arg(long, default_value_t = 4)]
    pub bits: u32,
    /// Weights per scale/bias group: 32, 64 or 128.
    #[arg(long, default_value_t = 64)]
    pub group_size: usize,
    /// Bits for the embedding tables (e.g. 8 keeps more quality at 4 bits); written as MLX
    /// per-layer overrides.
    #[arg(long)]
    pub embedding_bits: Option<u32>,
    /// Cast float tensors to f32, f16 or bf16 first (mlx-embeddings' convert uses f16); default:
    /// keep each tensor's dtype.
    #[arg(long, value_parser = ["f32", "f16", "bf16"])]
    pub dtype: Option<String>,
    /// Calibrate the quantization on texts (one per line; default: the calibration set shipped with
    /// embedrank, also named by `default`): every method is measured against the float model on texts held apart and the
    /// best is written, with quantization_report.json and a README section.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "default")]
    pub calibrate: Option<PathBuf>,
    /// With --calibrate: the method (rtn, gptq, gptq-refit), or auto to measure them all and keep
    /// the best.
    #[arg(long, default_value = "auto", requires = "calibrate")]
    pub method: String,
    /// With --calibrate: also score the float model and every candidate on a BEIR folder
    /// (corpus.jsonl, queries.jsonl, qrels/<split>.tsv): nDCG@10 and Recall@100 in the report.
    /// Embedders only; it does not influence the choice.
    #[arg(long, value_name = "DIR", requires = "calibrate")]
    pub eval: Option<PathBuf>,
    /// Qrels split of --eval.
    #[arg(long, default_value = "test", requires = "eval")]
    pub eval_split: String,
    /// With --calibrate: also score them on an STS file (STS-B layout): Spearman in the report.
    #[arg(long, value_name = "FILE", requires = "calibrate")]
    pub eval_sts: Option<PathBuf>,
    /// Output folder. Default: the first hub cache as `embedrank/<name>-<bits>bit[-g<group>][-e<bits>]`,
    /// which `--model` then finds by that name.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
    /// Extra hub cache folder to search first (repeatable); the default output goes to the first.
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub cache_dirs: Vec<PathBuf>,
    /// Treat the source as an embedder or a reranker, overriding detection.
    #[arg(long, value_parser = ["embed", "rerank"])]
    pub task: Option<String>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: ConvertArgs) -> Result<ExitCode> {
    let ropts = ResolveOptions::from_env(&a.cache_dirs);
    let resolved = source::resolve(&a.source, &ropts)?;
    let ov = SpecOverrides { task: a.task.as_deref().and_then(Task::parse), ..Default::default() };
    let spec = ModelSpec::load(&resolved, &ov)?;
    let dtype = match a.dtype.as_deref() {
        Some("f32") => Some("F32"),
        Some("f16") => Some("F16"),
        Some("bf16") => Some("BF16"),
        _ => None,
    };
    let cal = match &a.calibrate {
        None => None,
        Some(p) => {
            let texts =
                if p.as_os_str() == "default" { CalibrationSet::default_set() } else { CalibrationSet::read(p)? };
            let method = match a.method.as_str() {
                "auto" => None,
                m => Some(Method::parse(m)?),
            };
            let eval = EvalData {
                beir: a.eval.as_deref().map(|d| beir::load(d, &a.eval_split)).transpose()?,
                sts: a.eval_sts.as_deref().map(sts::load).transpose()?,
            };
            Some(CalibrateOptions { texts, method, eval })
        }
    };
    let mut opts = ConvertOptions {
        bits: a.bits,
        group_size: a.group_size,
        embedding_bits: a.embedding_bits,
        dtype,
        force: a.force,
        ..Default::default()
    };
    if let Some(c) = &cal {
        // Part of the default output's name, so a calibrated and a plain conversion do not collide.
        opts.calibration = Some(c.method.map_or("auto", Method::name).to_string());
    }
    opts.validate()?;
    let dest = match &a.out {
        Some(d) => Destination::Folder(d.clone()),
        None => {
            let root =
                ropts.roots.first().cloned().context("no hub cache folder known; pass --out DIR or --cache-dir")?;
            Destination::Cache { root, repo_id: Destination::default_repo_id(&spec, &opts) }
        }
    };
    let bar = if std::io::stderr().is_terminal() && !a.json {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_message(format!("quantizing {}", spec.name));
        b
    } else {
        ProgressBar::hidden()
    };
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let (summary, report) = match &cal {
        None => (convert::convert(&spec, &opts, &dest, &progress)?, None),
        Some(c) => {
            let stage = |s: Stage| {
                let msg = match s {
                    Stage::Recording { texts } => format!("recording layer inputs on {texts} texts"),
                    Stage::Candidate { method, index, of } => {
                        format!("measuring {} ({index}/{of})", method.name())
                    }
                    Stage::Writing { method } => format!("writing {}", method.name()),
                    Stage::Evaluating { model } => format!("scoring {model} on the evaluation data"),
                };
                if bar.is_hidden() {
                    if !a.json {
                        eprintln!("{msg}");
                    }
                } else {
                    bar.set_message(msg);
                }
            };
            let (s, r) = convert_calibrated(&spec, &opts, &dest, c, &stage, &progress)?;
            (s, Some(r))
        }
    };
    bar.finish_and_clear();
    if a.json {
        let v = serde_json::json!({
            "source": spec.name,
            "dir": summary.dir,
            "model": summary.repo_id,
            "bits": opts.bits,
            "group_size": opts.group_size,
            "embedding_bits": opts.embedding_bits,
            "tensors": summary.tensors,
            "quantized": summary.quantized,
            "bytes_in": summary.bytes_in,
            "bytes_out": summary.bytes_out,
            "calibration": report,
        });
        println!("{v}");
    } else {
        let mb = |b: u64| b as f64 / 1e6;
        println!(
            "{} -> {} ({} of {} tensors quantized, {:.1} MB -> {:.1} MB)",
            spec.name,
            summary.dir.display(),
            summary.quantized,
            summary.tensors,
            mb(summary.bytes_in),
            mb(summary.bytes_out)
        );
        if let Some(r) = &report {
            print!("{}", r.to_markdown().trim_start());
        }
        if let Some(id) = &summary.repo_id {
            println!("use it with: --model {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
