//! Corpus jobs (`embedrank embed --output DIR`): every input format, vectors equal to the plain
//! `embed` command, resume after kill -9 (one process and a sharded run), refusal of another model
//! or options, and an S3 bucket (moto's server on loopback) including a resume.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use common::*;
use embedrank::corpus::job::read_vectors;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_embedrank"));
    c.env("HF_HUB_OFFLINE", "1").env_remove("HF_HUB_CACHE").env("HF_HOME", repo_root().join(".cache/none"));
    c
}

fn hub() -> String {
    test_hub().display().to_string()
}

fn job_cmd(input: &str, out: &str, extra: &[&str]) -> Command {
    let mut c = bin();
    c.args(["embed", "--cache-dir", &hub(), "-m", MINILM, "--input", input, "--output", out]).args(extra);
    c
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Documents of varied lengths (so length sorting reorders them), some repeated words.
fn texts(n: usize) -> Vec<String> {
    let words = ["retrieval", "protein", "cell", "vector", "index", "the", "of", "neural", "model", "corpus", "shard"];
    (0..n)
        .map(|i| {
            let len = 3 + (i * 7919) % 40;
            let mut t = format!("doc {i}:");
            for j in 0..len {
                t.push(' ');
                t.push_str(words[(i + j * 3) % words.len()]);
            }
            t
        })
        .collect()
}

fn write_jsonl(p: &Path, t: &[String]) {
    let lines: Vec<String> =
        t.iter().enumerate().map(|(i, t)| serde_json::json!({"id": format!("d{i}"), "text": t}).to_string()).collect();
    std::fs::write(p, lines.join("\n") + "\n").unwrap();
}

/// Vectors from the plain (non-job) `embed` command.
fn plain_embed(t: &[String], extra: &[&str]) -> Vec<Vec<f32>> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("in.txt");
    std::fs::write(&f, t.join("\n") + "\n").unwrap();
    let o =
        ok(bin().args(["embed", "--cache-dir", &hub(), "-m", MINILM, "--input", &s(&f)]).args(extra).output().unwrap());
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
        })
        .collect()
}

#[test]
fn formats_match_plain_embed_exactly() {
    let t = texts(40);
    let want = plain_embed(&t, &[]);
    let dir = tempfile::tempdir().unwrap();
    // JSONL
    let jl = dir.path().join("c.jsonl");
    write_jsonl(&jl, &t);
    // CSV with a passthrough column
    let csv = dir.path().join("c.csv");
    let mut w = csv::Writer::from_path(&csv).unwrap();
    w.write_record(["id", "text", "lang"]).unwrap();
    for (i, x) in t.iter().enumerate() {
        w.write_record([format!("d{i}").as_str(), x, "en"]).unwrap();
    }
    w.flush().unwrap();
    // Parquet with custom column names
    let pq = dir.path().join("c.parquet");
    {
        use arrow_array::{ArrayRef, RecordBatch, StringArray};
        let ids: ArrayRef = Arc::new(StringArray::from_iter_values((0..t.len()).map(|i| format!("d{i}"))));
        let body: ArrayRef = Arc::new(StringArray::from_iter_values(t.iter()));
        let b = RecordBatch::try_from_iter([("doc_id", ids), ("body", body)]).unwrap();
        let mut wr =
            parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&pq).unwrap(), b.schema(), None).unwrap();
        wr.write(&b).unwrap();
        wr.close().unwrap();
    }
    for (input, extra) in
        [(&jl, vec![]), (&csv, vec!["--keep", "lang"]), (&pq, vec!["--text-field", "body", "--id-field", "doc_id"])]
    {
        let out = dir.path().join(format!("out-{}", input.extension().unwrap().to_string_lossy()));
        let o = ok(job_cmd(&s(input), &format!("{}/", s(&out)), &[&extra[..], &["--json"]].concat()).output().unwrap());
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(summary["documents"], 40, "{summary}");
        let got = read_vectors(&s(&out)).unwrap();
        assert_eq!(got.len(), t.len());
        for (i, (id, v)) in got.iter().enumerate() {
            assert_eq!(id, &format!("d{i}"));
            assert_eq!(v, &want[i], "{}: vector {i} differs from plain embed", input.display());
        }
    }
    // The passthrough column is in the CSV job's part.
    let part = dir.path().join("out-csv/part-00000-00000000.parquet");
    let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(part).unwrap())
        .unwrap();
    let names: Vec<String> = r.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["id", "embedding", "lang"]);
}

#[test]
fn malformed_rows_stop_or_skip() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.jsonl");
    std::fs::write(
        &f,
        "{\"id\":\"a\",\"text\":\"fine\"}\n\n{\"id\":\"b\",\"txt\":\"typo\"}\n{\"id\":\"c\",\"text\":\"also fine\"}\n",
    )
    .unwrap();
    let out = dir.path().join("out/");
    let o = job_cmd(&s(&f), &s(&out), &[]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("bad.jsonl:3:") && err.contains("no \"text\" field") && !err.contains("panicked"), "{err}");
    let out2 = dir.path().join("out2/");
    ok(job_cmd(&s(&f), &s(&out2), &["--on-error", "skip"]).output().unwrap());
    let got = read_vectors(&s(&out2)).unwrap();
    assert_eq!(got.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), ["a", "c"]);
    let m = std::fs::read_to_string(out2.join("manifest-00000-of-00001.json")).unwrap();
    assert!(m.contains("\"skipped\""), "{m}");
}

fn parts_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("part-")).count())
        .unwrap_or(0)
}

/// Start `c`, wait until `ready()` says enough is written, then kill -9. True if it was killed
/// before finishing on its own.
fn kill_when(mut c: Command, ready: impl Fn() -> bool) -> bool {
    let mut child: Child = c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t0 = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "job failed before the kill");
            return false;
        }
        if ready() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return true;
        }
        assert!(t0.elapsed().as_secs() < 600, "job made no progress in 10 minutes");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn assert_same(got: &[(String, Vec<f32>)], want: &[(String, Vec<f32>)]) {
    assert_eq!(got.len(), want.len(), "row count");
    for ((gi, gv), (wi, wv)) in got.iter().zip(want) {
        assert_eq!(gi, wi);
        let d = gv.iter().zip(wv).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(d <= 1e-6, "{gi}: max difference {d}");
    }
}

fn verify(out: &str) -> Output {
    bin().args(["embed", "--cache-dir", &hub(), "-m", MINILM, "--output", out, "--verify", "--json"]).output().unwrap()
}

#[test]
fn resumes_after_kill_9_single_and_sharded() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("docs.jsonl");
    let t = texts(600);
    write_jsonl(&input, &t);
    let args = ["--part-rows", "25"];
    let clean = dir.path().join("clean");
    ok(job_cmd(&s(&input), &format!("{}/", s(&clean)), &args).output().unwrap());
    let want = read_vectors(&s(&clean)).unwrap();
    assert_eq!(want.len(), 600);

    // One process killed at three points, then finished.
    let out = dir.path().join("resumed");
    let mut kills = 0;
    for at in [1usize, 6, 15] {
        let o = out.clone();
        kills += kill_when(job_cmd(&s(&input), &format!("{}/", s(&out)), &args), move || parts_in(&o) >= at) as usize;
    }
    let o = ok(job_cmd(&s(&input), &s(&out), &[&args[..], &["--json"]].concat()).output().unwrap());
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    eprintln!("single process: {kills} kills, final run {summary}");
    assert!(kills >= 1, "no run was killed before finishing");
    assert!(summary["parts_resumed"].as_u64().unwrap() >= 1, "{summary}");
    assert_same(&read_vectors(&s(&out)).unwrap(), &want);
    ok(verify(&s(&out)));

    // Three shards, each killed once mid-run, then rerun; the union equals the clean run.
    let sh = dir.path().join("sharded");
    std::fs::create_dir_all(&sh).unwrap();
    let o = verify(&s(&sh));
    assert!(!o.status.success());
    for i in 0..3 {
        let shard = format!("{i}/3");
        let d = sh.clone();
        let at = 2 + 2 * i;
        kill_when(job_cmd(&s(&input), &s(&sh), &[&args[..], &["--shard", &shard]].concat()), move || {
            parts_in(&d) >= at
        });
    }
    let o = verify(&s(&sh));
    assert!(!o.status.success(), "verify passed on an unfinished sharded run");
    let children: Vec<Child> = (0..3)
        .map(|i| {
            job_cmd(&s(&input), &s(&sh), &[&args[..], &["--shard", &format!("{i}/3")]].concat())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        ok(c.wait_with_output().unwrap());
    }
    let v: serde_json::Value = serde_json::from_slice(&ok(verify(&s(&sh))).stdout).unwrap();
    assert_eq!(v["documents"], 600, "{v}");
    assert_same(&read_vectors(&s(&sh)).unwrap(), &want);
}

#[test]
fn refuses_other_model_or_options() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("docs.jsonl");
    write_jsonl(&input, &texts(10));
    let out = format!("{}/", s(&dir.path().join("out")));
    ok(job_cmd(&s(&input), &out, &[]).output().unwrap());
    for extra in [
        &["--dimensions", "128"][..],
        &["--no-normalize"],
        &["--dtype", "int8"],
        &["--shard", "0/2"],
        &["--vector-type", "float16"],
    ] {
        let o = job_cmd(&s(&input), &out, extra).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{extra:?} accepted: {err}");
        assert!(err.contains("another model or options") || err.contains("--shard"), "{extra:?}: {err}");
    }
    let tiny = tiny_dir().join("tiny-qwen3-embedding");
    let o = bin().args(["embed", "-m", &s(&tiny), "--input", &s(&input), "--output", &out]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("another model or options") && err.contains("model"), "{err}");
    // Same model and options: a no-op rerun.
    let o = ok(job_cmd(&s(&input), &out, &["--json"]).output().unwrap());
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["parts_written"], 0);
}

// ---- S3 (moto's server on loopback) ----

const S3_PORT: u16 = 18401;

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python() -> PathBuf {
    repo_root().join(".venv/bin/python")
}

fn start_moto() -> Moto {
    let py = python();
    let check = Command::new(&py).args(["-c", "import moto.server, boto3"]).output();
    assert!(
        check.map(|o| o.status.success()).unwrap_or(false),
        "moto missing: run scripts/setup.sh (installs moto[server] from scripts/requirements-ci.txt)"
    );
    let child = Command::new(&py)
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &S3_PORT.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto(child);
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", S3_PORT)).is_err() {
        assert!(t0.elapsed().as_secs() < 120, "moto did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    moto
}

fn s3_env(c: &mut Command) -> &mut Command {
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{S3_PORT}"))
        .env("AWS_ALLOW_HTTP", "true")
}

fn boto(script: &str) {
    let o = s3_env(&mut Command::new(python()))
        .args([
            "-c",
            &format!("import boto3,sys\ns3=boto3.client('s3', endpoint_url='http://127.0.0.1:{S3_PORT}')\n{script}"),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "boto3: {}", String::from_utf8_lossy(&o.stderr));
}

fn s3_parts(prefix: &str) -> usize {
    let o = s3_env(&mut Command::new(python()))
        .args([
            "-c",
            &format!(
                "import boto3\ns3=boto3.client('s3', endpoint_url='http://127.0.0.1:{S3_PORT}')\nr=s3.list_objects_v2(Bucket='corpus', Prefix='{prefix}/part-')\nprint(r.get('KeyCount', 0))"
            ),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn s3_input_and_output_with_resume() {
    let _moto = start_moto();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("docs.jsonl");
    let t = texts(300);
    write_jsonl(&input, &t);
    boto(&format!("s3.create_bucket(Bucket='corpus')\ns3.upload_file('{}', 'corpus', 'in/docs.jsonl')", s(&input)));
    let args = ["--part-rows", "20"];
    let clean = dir.path().join("clean");
    ok(job_cmd(&s(&input), &format!("{}/", s(&clean)), &args).output().unwrap());
    let want = read_vectors(&s(&clean)).unwrap();

    let out = "s3://corpus/out";
    let mut kills = 0;
    for at in [1usize, 5] {
        let mut c = job_cmd("s3://corpus/in/", out, &args);
        s3_env(&mut c);
        kills += kill_when(c, move || s3_parts("out") >= at) as usize;
    }
    let mut c = job_cmd("s3://corpus/in/", out, &[&args[..], &["--json"]].concat());
    let o = ok(s3_env(&mut c).output().unwrap());
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    eprintln!("s3: {kills} kills, final run {summary}");
    assert!(kills >= 1, "no run was killed before finishing");
    let mut c = bin();
    c.args(["embed", "--cache-dir", &hub(), "-m", MINILM, "--output", out, "--verify", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&ok(s3_env(&mut c).output().unwrap()).stdout).unwrap();
    assert_eq!(v["documents"], 300, "{v}");
    // Read back through the library, with the same environment.
    let got = {
        for (k, v) in [
            ("AWS_ACCESS_KEY_ID", "test".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{S3_PORT}")),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ] {
            std::env::set_var(k, v);
        }
        read_vectors(out).unwrap()
    };
    // The input ids came through S3 too (the input name differs, the vectors must not).
    assert_same(&got, &want);
}
