//! The deployment files against the binary they deploy: the kustomize overlays render, every object
//! passes strict Kubernetes schema validation (kubernetes-validate), and the probes, port, args and
//! config they give `embedrank serve` are what the real binary accepts and serves. The Dockerfiles'
//! ENTRYPOINT/CMD flags exist in the binary. No container engine or cluster needed: the image itself
//! is tested by deploy/image-test.sh.
//!
//! Needs `kubectl` (kustomize) and the venv from scripts/setup.sh (kubernetes-validate, PyYAML).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

#[path = "common/mod.rs"]
mod common;

use common::{repo_root, test_hub};

/// This test's port (the fleet helper's range 19000-19099).
const PORT: u16 = 19010;
const OVERLAYS: [&str; 2] = ["cpu", "cuda"];

fn python() -> PathBuf {
    let p = repo_root().join(".venv/bin/python");
    assert!(p.exists(), "{} missing: run scripts/setup.sh", p.display());
    p
}

fn render(overlay: &str) -> String {
    let dir = repo_root().join("deploy/k8s/overlays").join(overlay);
    let out = Command::new("kubectl").arg("kustomize").arg(&dir).output().unwrap_or_else(|e| {
        panic!("cannot run kubectl (needed for `kubectl kustomize`; install kubectl >= 1.27): {e}")
    });
    assert!(out.status.success(), "kubectl kustomize {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 manifests")
}

/// The rendered objects as JSON (PyYAML from the venv: no YAML crate in the project).
fn objects(yaml: &str) -> Vec<Value> {
    let mut child = Command::new(python())
        .args(["-c", "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), yaml.as_bytes()).expect("write yaml");
    let out = child.wait_with_output().expect("python");
    assert!(out.status.success(), "YAML does not parse");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    v.as_array().expect("list").clone()
}

fn write_tmp(name: &str, text: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&p, text).expect("write temp file");
    p
}

/// kubernetes-validate --strict: unknown fields and wrong types are errors.
fn validate(file: &Path) -> (bool, String) {
    let exe = repo_root().join(".venv/bin/kubernetes-validate");
    assert!(exe.exists(), "{} missing: run scripts/setup.sh (scripts/requirements-ci.txt)", exe.display());
    let out = Command::new(exe).args(["--strict", "--quiet"]).arg(file).output().expect("run kubernetes-validate");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn find<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    objs.iter().find(|o| o["kind"] == kind).unwrap_or_else(|| panic!("no {kind} rendered"))
}

/// Every `--long-flag` an `embedrank SUB --help` lists.
fn flags(sub: &str) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_embedrank")).args([sub, "--help"]).output().expect("run embedrank");
    assert!(out.status.success(), "embedrank {sub} --help failed");
    String::from_utf8_lossy(&out.stdout)
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == '<')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_string)
        .collect()
}

/// Every `--flag` in `args` is one the subcommand accepts.
fn assert_flags_exist(sub: &str, args: &[String], what: &str) {
    let known = flags(sub);
    for a in args.iter().filter(|a| a.starts_with("--")) {
        let name = a.split('=').next().unwrap_or(a);
        assert!(known.contains(name), "{what}: `embedrank {sub}` has no flag {name} (has {known:?})");
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

fn container<'a>(deploy: &'a Value, name: &str, init: bool) -> &'a Value {
    let list = if init { "initContainers" } else { "containers" };
    deploy["spec"]["template"]["spec"][list]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {list} entry `{name}`"))
}

/// The serve.toml the ConfigMap carries, and the path the container reads it from.
fn serve_toml(objs: &[Value]) -> String {
    let cm = find(objs, "ConfigMap");
    cm["data"]["serve.toml"].as_str().expect("ConfigMap has serve.toml").to_string()
}

#[test]
fn overlays_render_and_pass_strict_schema_validation() {
    for o in OVERLAYS {
        let yaml = render(o);
        let objs = objects(&yaml);
        let kinds: BTreeSet<&str> = objs.iter().filter_map(|x| x["kind"].as_str()).collect();
        for k in [
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
            "ConfigMap",
            "Secret",
            "PersistentVolumeClaim",
        ] {
            assert!(kinds.contains(k), "overlay {o}: no {k} (rendered {kinds:?})");
        }
        let file = write_tmp(&format!("deploy-{o}.yaml"), &yaml);
        let (ok, msg) = validate(&file);
        assert!(ok, "overlay {o} fails schema validation:\n{msg}");
    }
}

#[test]
fn the_validator_rejects_what_kubernetes_would() {
    // So the test above can fail: an unknown field, and a probe port of the wrong type.
    let bad = "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  bogus: 1\n  ports: [{port: 80}]\n";
    let (ok, _) = validate(&write_tmp("deploy-bad-field.yaml", bad));
    assert!(!ok, "kubernetes-validate accepted an unknown field");
    let bad = "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports: [{port: eighty}]\n";
    let (ok, _) = validate(&write_tmp("deploy-bad-type.yaml", bad));
    assert!(!ok, "kubernetes-validate accepted a string port");
}

#[test]
fn manifests_match_the_binary() {
    for o in OVERLAYS {
        let objs = objects(&render(o));
        let deploy = find(&objs, "Deployment");
        let pod = &deploy["spec"]["template"]["spec"];
        let c = container(deploy, "embedrank", false);

        // Entrypoint `/embedrank serve` (image); the args are serve flags.
        let args = strings(&c["args"]);
        assert!(c["command"].is_null(), "{o}: the server container must keep the image ENTRYPOINT");
        assert_flags_exist("serve", &args, &format!("{o} container args"));
        let cfg_path = args.iter().position(|a| a == "--config").and_then(|i| args.get(i + 1)).expect("--config FILE");

        // The config file comes from the ConfigMap mount; its port is the container port.
        let mount = c["volumeMounts"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| cfg_path.starts_with(m["mountPath"].as_str().unwrap_or("-"))))
            .unwrap_or_else(|| panic!("{o}: {cfg_path} is not under a volume mount"));
        let vol = pod["volumes"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["name"] == mount["name"]))
            .expect("volume of the config mount");
        assert_eq!(vol["configMap"]["name"], find(&objs, "ConfigMap")["metadata"]["name"], "{o}: config volume");
        let cfg: toml::Value = toml::from_str(&serve_toml(&objs)).expect("serve.toml parses");
        let port = cfg.get("port").and_then(toml::Value::as_integer).expect("serve.toml sets port");
        assert_eq!(cfg.get("host").and_then(toml::Value::as_str), Some("0.0.0.0"), "{o}: must listen beyond loopback");
        assert_eq!(c["ports"][0]["containerPort"].as_i64(), Some(port), "{o}: containerPort vs serve.toml port");
        assert_eq!(c["ports"][0]["name"], "http");

        // Probes: readiness and startup on /ready, liveness on /health, on the serving port.
        for (probe, path) in [("readinessProbe", "/ready"), ("livenessProbe", "/health"), ("startupProbe", "/ready")] {
            let p = &c[probe]["httpGet"];
            assert_eq!(p["path"], path, "{o}: {probe} path");
            assert!(p["port"] == "http" || p["port"].as_i64() == Some(port), "{o}: {probe} port {}", p["port"]);
        }
        // The Service reaches the named port.
        assert_eq!(find(&objs, "Service")["spec"]["ports"][0]["targetPort"], "http");

        // Grace period covers the preStop sleep plus the server's drain deadline (shutdown_timeout:
        // after it in-flight requests are dropped), so the kubelet's SIGKILL never cuts a drain short.
        let drain =
            cfg.get("shutdown_timeout").and_then(toml::Value::as_str).expect("serve.toml sets shutdown_timeout");
        let drain = embedrank::server::config::parse_duration(drain).expect("duration").as_secs();
        let sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().expect("preStop sleep");
        let grace = pod["terminationGracePeriodSeconds"].as_u64().expect("terminationGracePeriodSeconds");
        assert!(grace > sleep + drain, "{o}: grace {grace}s <= preStop {sleep}s + shutdown_timeout {drain}s");

        // Non-root, read-only root filesystem (the image has uid 65532 and needs only /tmp + /models).
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], 65532);
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert!(c["resources"]["requests"]["memory"].is_string() && c["resources"]["limits"]["memory"].is_string());

        // Init container: `embedrank pull MODEL --cache-dir <the models volume>/hub`, every model served.
        let init = container(deploy, "pull", true);
        assert_eq!(strings(&init["command"]), ["/embedrank", "pull"], "{o}: init command");
        let iargs = strings(&init["args"]);
        assert_flags_exist("pull", &iargs, &format!("{o} init args"));
        let served: Vec<&str> = cfg
            .get("models")
            .and_then(toml::Value::as_array)
            .expect("models")
            .iter()
            .filter_map(|m| m.get("source").or_else(|| m.get("id")).and_then(toml::Value::as_str))
            .collect();
        for m in &served {
            assert!(iargs.iter().any(|a| a == m), "{o}: init container does not pull {m}");
        }
        let env_home = c["env"]
            .as_array()
            .and_then(|e| e.iter().find(|v| v["name"] == "HF_HOME"))
            .and_then(|v| v["value"].as_str())
            .expect("HF_HOME");
        let cache = iargs.iter().position(|a| a == "--cache-dir").and_then(|i| iargs.get(i + 1)).expect("--cache-dir");
        assert_eq!(cache, &format!("{env_home}/hub"), "{o}: init pulls where the server looks (HF_HOME/hub)");

        // The HPA's custom metric is a series the server exports.
        let hpa = find(&objs, "HorizontalPodAutoscaler");
        let metric = hpa["spec"]["metrics"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["type"] == "Pods"))
            .and_then(|m| m["pods"]["metric"]["name"].as_str())
            .expect("a Pods metric");
        let src = std::fs::read_to_string(repo_root().join("src/server/metrics.rs")).expect("metrics.rs");
        assert!(src.contains(&format!("\"{metric}\"")), "{o}: HPA metric {metric} is not exported");
    }
}

#[test]
fn dockerfiles_entrypoint_is_the_binary() {
    let serve = flags("serve");
    for f in ["deploy/Dockerfile", "deploy/Dockerfile.cuda"] {
        let text = std::fs::read_to_string(repo_root().join(f)).expect("Dockerfile");
        let json_line = |key: &str| -> Vec<String> {
            let line = text.lines().rev().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{f}: no {key}"));
            serde_json::from_str::<Vec<String>>(line[key.len()..].trim())
                .unwrap_or_else(|e| panic!("{f}: {key} must be an exec-form JSON array: {e}"))
        };
        assert_eq!(json_line("ENTRYPOINT"), ["/embedrank", "serve"], "{f}");
        let cmd = json_line("CMD");
        for a in cmd.iter().filter(|a| a.starts_with("--")) {
            assert!(serve.contains(a), "{f}: CMD flag {a} is not an `embedrank serve` flag");
        }
        assert!(text.contains("ENV HF_HOME=/models") && text.contains("VOLUME /models"), "{f}: model cache volume");
        assert!(text.contains("USER 65532:65532"), "{f}: non-root user");
    }
    // stage-rootfs.sh puts the binary where ENTRYPOINT looks and creates the user.
    let stage = std::fs::read_to_string(repo_root().join("deploy/stage-rootfs.sh")).expect("stage-rootfs.sh");
    assert!(stage.contains("\"$root/embedrank\"") && stage.contains("embedrank:x:65532:65532"));
}

/// Kills the server if an assertion fails first, so no orphan keeps the port (or the test's pipes).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(url: &str) -> (u16, String) {
    match ureq::get(url).timeout(Duration::from_secs(120)).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// The ConfigMap's serve.toml, run by the real binary with the Deployment's args: probes answer 200
/// on the paths the manifests probe, a request works, the HPA's metric appears on /metrics, and
/// SIGTERM ends it with exit 0 (what the kubelet sends after preStop).
#[test]
fn the_configmap_config_serves_the_probed_paths() {
    let objs = objects(&render("cpu"));
    let deploy = find(&objs, "Deployment");
    let c = container(deploy, "embedrank", false);
    let cfg_file = write_tmp("deploy-serve.toml", &serve_toml(&objs));
    // The Deployment's args with the config path replaced by the local copy; then a loopback port
    // in this test's range (flags override serve.toml, as in the container).
    let mut args: Vec<String> = strings(&c["args"]);
    if let Some(i) = args.iter().position(|a| a == "--config") {
        args[i + 1] = cfg_file.display().to_string();
    }
    args.extend(["--host".into(), "127.0.0.1".into(), "--port".into(), PORT.to_string()]);
    args.extend(["--cache-dir".into(), test_hub().display().to_string(), "--request-timeout".into(), "600s".into()]);
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_embedrank"))
            .arg("serve")
            .args(&args)
            .env("HF_HUB_OFFLINE", "1")
            .env_remove("EMBEDRANK_API_KEY")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn embedrank serve"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("address line");
    assert_eq!(line.trim(), format!("listening on http://127.0.0.1:{PORT}"));
    let base = format!("http://127.0.0.1:{PORT}");

    let paths: BTreeSet<String> = ["readinessProbe", "livenessProbe", "startupProbe"]
        .iter()
        .map(|p| c[*p]["httpGet"]["path"].as_str().expect("probe path").to_string())
        .collect();
    // preload = true: /ready is 503 until the model is loaded; wait for it (no timing asserted:
    // the cap of 10 minutes only keeps a broken server from hanging CI).
    let mut ready = 0;
    for _ in 0..3000 {
        ready = get(&format!("{base}/ready")).0;
        if ready == 200 {
            break;
        }
        assert_eq!(ready, 503, "/ready while loading");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(ready, 200, "/ready never turned 200");
    for p in &paths {
        let (code, body) = get(&format!("{base}{p}"));
        assert_eq!(code, 200, "probe path {p}: {body}");
    }
    let r = ureq::post(&format!("{base}/v1/embeddings"))
        .timeout(Duration::from_secs(600))
        .send_json(serde_json::json!({"model": "minilm", "input": "hello"}))
        .expect("embedding request");
    let v: Value = r.into_json().expect("json");
    assert_eq!(v["data"][0]["embedding"].as_array().map(Vec::len), Some(384));
    let (_, metrics) = get(&format!("{base}/metrics"));
    assert!(metrics.contains("embedrank_queue_depth{model="), "no queue depth series:\n{metrics}");

    let pid = child.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(killed.success());
    let status = child.0.wait().expect("wait");
    assert!(status.success(), "exit after SIGTERM: {status}");
}
