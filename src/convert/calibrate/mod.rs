//! `embedrank convert --calibrate`: quantization that looks at what the layers compute. The float
//! model runs a calibration set while every linear layer records its inputs
//! (`weights::recorder`); each method of `gptq` then quantizes every layer against those inputs,
//! each candidate model is measured against the float model on the calibration texts and on texts
//! held apart from them, and the best on the held-apart texts is written, with its quality report
//! (`quantization_report.json` and a README section). The output is standard MLX affine.

pub mod eval;
pub mod gptq;
pub mod report;
pub mod solve;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::quantize::Quantized;
use super::{convert_with, ConvertOptions, ConvertSummary, Destination, LayerQuantizer};
use crate::engine::{Engine, EngineOptions};
use crate::spec::{ModelSpec, Task};
use crate::weights::qkernel::put_code;
use crate::weights::recorder::{ActivationRecorder, InputStats};
use crate::{Error, Result};
pub use eval::{EvalData, EvalScores};
pub use report::{Agreement, CandidateReport, Report};

/// The calibration set that ships with embedrank: texts written for it (questions, statements,
/// code, several domains and languages), under the project's licence.
pub const DEFAULT_TEXTS: &str = include_str!("../../../assets/calibration/default.txt");

/// GPTQ's damping: a hundredth of the mean diagonal, its paper's default.
const DAMP: f64 = 0.01;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Round to nearest (the baseline; measured beside the others).
    Rtn,
    /// Error compensation over the layer's inputs.
    Gptq,
    /// GPTQ, then scales and biases refit by least squares, then codes chosen again on that grid.
    GptqRefit,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::Rtn, Method::Gptq, Method::GptqRefit];

    pub fn name(self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Gptq => "gptq",
            Method::GptqRefit => "gptq-refit",
        }
    }

    pub fn parse(s: &str) -> Result<Method> {
        Method::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            Error::InvalidInput(format!("unknown calibration method `{s}` (rtn, gptq, gptq-refit, or auto)"))
        })
    }
}

/// Calibration texts split into the ones the layers are fitted on and the ones held apart for
/// measuring: every fourth text is held apart, so both halves cover every kind of text.
#[derive(Debug, Clone)]
pub struct CalibrationSet {
    pub name: String,
    pub fit: Vec<String>,
    pub held: Vec<String>,
}

impl CalibrationSet {
    /// One text per non-empty line.
    pub fn from_text(name: &str, text: &str) -> Result<CalibrationSet> {
        let lines: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
        if lines.len() < 8 {
            return Err(Error::InvalidInput(format!(
                "calibration texts `{name}`: {} non-empty lines; at least 8 are needed (one text per line)",
                lines.len()
            )));
        }
        let (mut fit, mut held) = (Vec::new(), Vec::new());
        for (i, l) in lines.into_iter().enumerate() {
            if i % 4 == 3 {
                held.push(l);
            } else {
                fit.push(l);
            }
        }
        Ok(CalibrationSet { name: name.to_string(), fit, held })
    }

    pub fn default_set() -> CalibrationSet {
        // The shipped file has far more than 8 lines; a failure here is a broken build, caught by tests.
        CalibrationSet::from_text("embedrank default", DEFAULT_TEXTS).unwrap_or_else(|_| CalibrationSet {
            name: "empty".into(),
            fit: Vec::new(),
            held: Vec::new(),
        })
    }

    pub fn read(path: &Path) -> Result<CalibrationSet> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        CalibrationSet::from_text(&path.display().to_string(), &text)
    }

    /// sha256 of the texts, short: which texts calibrated an output.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for t in self.fit.iter().chain(&self.held) {
            h.update(t.as_bytes());
            h.update(b"\n");
        }
        h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
    }
}

/// Run the float model over `texts` as its task uses them (embedders embed each text; rerankers
/// score each text against the next four) and return every linear layer's input statistics.
pub fn collect_stats(spec: &ModelSpec, texts: &[String]) -> Result<HashMap<String, InputStats>> {
    let recorder = Arc::new(ActivationRecorder::new());
    let opts = EngineOptions { recorder: Some(recorder.clone()), ..Default::default() };
    let engine = Engine::load(spec.clone(), &opts)?;
    run_task(&engine, texts)?;
    Ok(recorder.take())
}

/// What the model computes on `texts`: one vector per text (embedders), or the scores of each text
/// as a query against the next four (rerankers), in order.
fn run_task(engine: &Engine, texts: &[String]) -> Result<Vec<Vec<f32>>> {
    match engine.spec.task {
        Task::Embed => Ok(engine.embed(texts, &Default::default())?.vectors),
        Task::Rerank => rerank_groups(texts)
            .map(|(q, docs)| {
                let mut r = engine.rerank(q, &docs, &Default::default())?;
                r.sort_by_key(|x| x.index);
                Ok(r.into_iter().map(|x| x.relevance_score).collect())
            })
            .collect(),
    }
}

fn rerank_groups(texts: &[String]) -> impl Iterator<Item = (&String, Vec<String>)> {
    (0..texts.len()).map(move |i| (&texts[i], (1..=4).map(|d| texts[(i + d) % texts.len()].clone()).collect()))
}

/// A quantizer that uses recorded input statistics; layers without any (embedding tables, a head
/// the task never runs) are rounded to nearest.
pub struct Calibrated {
    method: Method,
    stats: HashMap<String, InputStats>,
    prepared: Mutex<HashMap<String, Arc<gptq::Prepared>>>,
}

impl Calibrated {
    pub fn new(method: Method, stats: HashMap<String, InputStats>) -> Self {
        Calibrated { method, stats, prepared: Mutex::new(HashMap::new()) }
    }

    fn with_method(&self, method: Method) -> Calibrated {
        let prepared = self.prepared.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Calibrated { method, stats: self.stats.clone(), prepared: Mutex::new(prepared) }
    }

    fn prepared(&self, module: &str, s: &InputStats) -> Result<Arc<gptq::Prepared>> {
        if let Some(p) = self.prepared.lock().unwrap_or_else(|p| p.into_inner()).get(module) {
            return Ok(p.clone());
        }
        let p = gptq::prepare(&s.hessian(), s.k, DAMP).ok_or_else(|| {
            Error::Quantization(format!("layer `{module}`: its input statistics are not positive definite"))
        })?;
        let p = Arc::new(p);
        self.prepared.lock().unwrap_or_else(|p| p.into_inner()).insert(module.to_string(), p.clone());
        Ok(p)
    }

    /// The codes of one layer by this quantizer's method (round to nearest where nothing was recorded).
    #[allow(clippy::too_many_arguments)]
    pub fn codes(
        &self,
        module: &str,
        w: &[f32],
        n: usize,
        k: usize,
        bits: u32,
        group_size: usize,
        dtype: &'static str,
    ) -> Result<gptq::Codes> {
        let stats = self.stats.get(module).filter(|s| s.k == k && s.rows > 0);
        let (Some(s), false) = (stats, self.method == Method::Rtn) else {
            return Ok(gptq::rtn(w, n, k, bits, group_size));
        };
        let p = self.prepared(module, s)?;
        let round = |v: f32| {
            let mut x = [v];
            super::round_to(dtype, &mut x);
            x[0]
        };
        let g = gptq::gptq(w, n, bits, group_size, &p, None, &round);
        if self.method == Method::Gptq {
            return Ok(g);
        }
        let mut f = gptq::refit(w, &g, &p);
        super::round_to(dtype, &mut f.scales);
        super::round_to(dtype, &mut f.biases);
        let g2 = gptq::gptq(w, n, bits, group_size, &p, Some(&f), &round);
        // Keep whichever the inputs say is closer (refitting never loses on its own objective, but
        // choosing codes again on the new grid can, in rare rows).
        Ok(if gptq::relative_error(w, &g2, &p.h) <= gptq::relative_error(w, &g, &p.h) { g2 } else { g })
    }
}

impl LayerQuantizer for Calibrated {
    #[allow(clippy::too_many_arguments)]
    fn quantize(
        &self,
        module: &str,
        w: &[f32],
        n: usize,
        k: usize,
        bits: u32,
        group_size: usize,
        dtype: &'static str,
    ) -> Result<Quantized> {
        Ok(pack(&self.codes(module, w, n, k, bits, group_size, dtype)?))
    }
}

/// Codes into MLX's packed words.
pub fn pack(c: &gptq::Codes) -> Quantized {
    let wpr = c.k * c.bits as usize / 32;
    let mut packed = vec![0u32; c.n * wpr];
    for (r, words) in packed.chunks_mut(wpr.max(1)).enumerate().take(c.n) {
        for (j, &q) in c.codes[r * c.k..(r + 1) * c.k].iter().enumerate() {
            put_code(words, j, c.bits, q as u32);
        }
    }
    Quantized { packed, scales: c.scales.clone(), biases: c.biases.clone() }
}

/// What `convert --calibrate` is asked to do.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    pub texts: CalibrationSet,
    /// None: measure every method and keep the best on the held-apart texts.
    pub method: Option<Method>,
    /// Task data to score the float model and every candidate on (embedders only).
    pub eval: EvalData,
}

/// Stages reported to a progress display.
#[derive(Debug, Clone)]
pub enum Stage {
    Recording {
        texts: usize,
    },
    Candidate {
        method: Method,
        index: usize,
        of: usize,
    },
    Writing {
        method: Method,
    },
    /// Scoring a model on the --eval data ("float" or a method's name).
    Evaluating {
        model: String,
    },
}

/// Calibrate, measure, and write the chosen quantization of `spec` to `dest`, with its report.
pub fn convert_calibrated(
    spec: &ModelSpec,
    opts: &ConvertOptions,
    dest: &Destination,
    cal: &CalibrateOptions,
    stage: &(dyn Fn(Stage) + Sync),
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(ConvertSummary, Report)> {
    let t0 = Instant::now();
    if cal.texts.fit.is_empty() || cal.texts.held.is_empty() {
        return Err(Error::InvalidInput("calibration needs texts to fit on and texts held apart".into()));
    }
    if spec.task == Task::Rerank && !cal.eval.is_empty() {
        return Err(Error::InvalidInput(
            "--eval and --eval-sts score embedders; score a reranker with `embedrank eval --reranker`".into(),
        ));
    }
    stage(Stage::Recording { texts: cal.texts.fit.len() });
    let stats = collect_stats(spec, &cal.texts.fit)?;
    let record_s = t0.elapsed().as_secs_f64();
    let float = Engine::load(spec.clone(), &EngineOptions::default())?;
    let reference = Reference { fit: run_task(&float, &cal.texts.fit)?, held: run_task(&float, &cal.texts.held)? };
    let score = |engine: &Engine, model: &str| -> Result<Option<EvalScores>> {
        if cal.eval.is_empty() {
            return Ok(None);
        }
        stage(Stage::Evaluating { model: model.into() });
        eval::measure(engine, &cal.eval, &crate::eval::Silent).map(Some)
    };
    let float_eval = score(&float, "float")?;
    drop(float);
    let base = Calibrated::new(Method::Rtn, stats);
    let methods: Vec<Method> = match cal.method {
        Some(m) => vec![m],
        None => Method::ALL.to_vec(),
    };
    let scratch = tempfile::Builder::new()
        .prefix(".embedrank-calibrate-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let mut candidates = Vec::new();
    for (i, &m) in methods.iter().enumerate() {
        stage(Stage::Candidate { method: m, index: i + 1, of: methods.len() });
        let t = Instant::now();
        let q = base.with_method(m);
        let dir = scratch.path().join(m.name());
        let summary = convert_with(spec, opts, &Destination::Folder(dir.clone()), &q, &[], &|_, _| {})?;
        let quantize_s = t.elapsed().as_secs_f64();
        let resolved = crate::source::ResolvedModel {
            dir: dir.clone(),
            repo_id: None,
            commit: None,
            name: format!("{} ({})", spec.name, m.name()),
        };
        let qspec = ModelSpec::load(&resolved, &spec_overrides(spec))?;
        let engine = Engine::load(qspec, &EngineOptions::default())?;
        candidates.push(CandidateReport {
            method: m.name().into(),
            fit: report::agreement(spec.task, &reference.fit, &run_task(&engine, &cal.texts.fit)?),
            held: report::agreement(spec.task, &reference.held, &run_task(&engine, &cal.texts.held)?),
            bytes: summary.bytes_out,
            seconds: quantize_s,
            eval: score(&engine, m.name())?,
        });
    }
    let best = report::best(&candidates).ok_or_else(|| Error::Quantization("no calibration candidate".into()))?;
    let method = methods[best];
    let mut opts = opts.clone();
    opts.calibration = Some(format!("{}:{}", method.name(), cal.texts.digest()));
    let mut rep = Report {
        source: spec.name.clone(),
        task: spec.task.key().into(),
        bits: opts.bits,
        group_size: opts.group_size,
        layer_bits: opts.layer_bits.clone(),
        method: method.name().into(),
        texts: cal.texts.name.clone(),
        texts_digest: cal.texts.digest(),
        fit_texts: cal.texts.fit.len(),
        held_texts: cal.texts.held.len(),
        candidates,
        float_eval,
        record_seconds: record_s,
        total_seconds: 0.0,
    };
    stage(Stage::Writing { method });
    let q = base.with_method(method);
    let extra = |rep: &Report| -> Result<Vec<(String, Vec<u8>)>> {
        Ok(vec![
            ("quantization_report.json".into(), rep.to_json()?.into_bytes()),
            ("README.md".into(), rep.to_markdown().into_bytes()),
        ])
    };
    rep.total_seconds = t0.elapsed().as_secs_f64();
    let summary = convert_with(spec, &opts, dest, &q, &extra(&rep)?, progress)?;
    Ok((summary, rep))
}

struct Reference {
    fit: Vec<Vec<f32>>,
    held: Vec<Vec<f32>>,
}

fn spec_overrides(spec: &ModelSpec) -> crate::spec::SpecOverrides {
    crate::spec::SpecOverrides { task: Some(spec.task), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_set_splits() {
        let s = CalibrationSet::default_set();
        assert!(s.fit.len() >= 100 && s.held.len() >= 30, "{} / {}", s.fit.len(), s.held.len());
        assert!(CalibrationSet::from_text("x", "a\nb\n").is_err());
        assert_eq!(s.digest(), CalibrationSet::default_set().digest());
    }

    #[test]
    fn pack_matches_mlx_quantize() {
        let w: Vec<f32> = (0..4 * 64).map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.01).collect();
        for bits in [3, 4, 6] {
            let c = gptq::rtn(&w, 4, 64, bits, 32);
            let q = crate::weights::qkernel::quantize(&w, 4, 64, bits, 32).unwrap();
            assert_eq!(pack(&c).packed, q.packed(), "{bits} bits");
        }
    }
}
