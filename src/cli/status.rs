//! `embedrank status`: what is in the hub cache roots, and how the wanted list stands.
//! Exit 0 when every wanted entry is available, 1 when one is missing or broken, 2 on usage errors.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use embedrank::source::cache::default_hub_cache;
use embedrank::source::inventory::{self, format_utc, human_bytes, human_count, Inventory, RepoEntry};
use embedrank::source::verify::{self, VerifyReport};
use embedrank::source::wanted::{self, State, WantedList, WantedStatus};
use embedrank::source::CacheRoots;
use serde::Serialize;

/// Version of the `--json` document (docs/status-json.md); bumped on incompatible changes.
pub const JSON_SCHEMA_VERSION: u32 = 1;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Extra hub cache folder to scan (repeatable), e.g. on an external disk. Also EMBEDRANK_CACHE_DIRS
    /// (colon-separated); the standard cache (HF_HUB_CACHE / HF_HOME) is always scanned.
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub cache_dirs: Vec<PathBuf>,
    /// Wanted list (TOML `[[model]]` tables); default: wanted.toml in the config dir, else built-in.
    #[arg(long, value_name = "FILE")]
    pub wanted: Option<PathBuf>,
    /// Machine-readable output (schema: docs/status-json.md).
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// A Markdown report to paste.
    #[arg(long)]
    pub markdown: bool,
    /// Re-hash every cached blob against its name (sha256, or git blob sha1 for small files) and
    /// report mismatches (exit 1 when there is one). Reads the whole cache.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Serialize)]
struct Summary {
    repos: usize,
    revisions: usize,
    size_bytes: u64,
    incomplete_repos: usize,
    wanted_available: usize,
    wanted_missing: usize,
    wanted_broken: usize,
}

#[derive(Serialize)]
struct JsonWanted<'a> {
    source: Option<&'a PathBuf>,
    entries: &'a [WantedStatus],
}

#[derive(Serialize)]
struct JsonReport<'a> {
    schema_version: u32,
    generated_at: u64,
    roots: &'a [inventory::RootEntry],
    repos: &'a [RepoEntry],
    wanted: JsonWanted<'a>,
    summary: Summary,
    /// Only with --verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    verify: Option<&'a VerifyReport>,
}

pub fn run(a: StatusArgs) -> Result<ExitCode> {
    let list = match wanted::load(a.wanted.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: wanted list: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let roots = CacheRoots::from_env(&a.cache_dirs);
    let mut inv = inventory::scan(&roots);
    // Before the wanted list is evaluated: a corrupt blob makes its revisions broken.
    let verified = a.verify.then(|| {
        let mut report = VerifyReport::default();
        for r in &mut inv.repos {
            report.merge(verify::verify_repo(r));
        }
        report
    });
    let default_root = default_hub_cache();
    let statuses = wanted::evaluate(&list, &inv, default_root.as_deref());
    let count = |s: State| statuses.iter().filter(|w| w.state == s).count();
    let summary = Summary {
        repos: inv.repos.len(),
        revisions: inv.repos.iter().map(|r| r.revisions.len()).sum(),
        size_bytes: inv.repos.iter().map(|r| r.size_bytes).sum(),
        incomplete_repos: inv.repos.iter().filter(|r| !r.complete).count(),
        wanted_available: count(State::Available),
        wanted_missing: count(State::Missing),
        wanted_broken: count(State::Broken),
    };
    let all_ok =
        summary.wanted_missing == 0 && summary.wanted_broken == 0 && verified.as_ref().is_none_or(VerifyReport::ok);
    let code = if all_ok { ExitCode::SUCCESS } else { ExitCode::from(1) };
    match write_report(&a, &inv, &list, &statuses, summary, verified.as_ref()) {
        // `embedrank status | head` is not an error.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => {
            Ok(code)
        }
        Err(e) => Err(e),
        Ok(()) => Ok(code),
    }
}

fn write_report(
    a: &StatusArgs,
    inv: &Inventory,
    list: &WantedList,
    statuses: &[WantedStatus],
    summary: Summary,
    verified: Option<&VerifyReport>,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if a.json {
        let report = JsonReport {
            schema_version: JSON_SCHEMA_VERSION,
            generated_at: now_secs(),
            roots: &inv.roots,
            repos: &inv.repos,
            wanted: JsonWanted { source: list.source.as_ref(), entries: statuses },
            summary,
            verify: verified,
        };
        let text = serde_json::to_string_pretty(&report)?;
        writeln!(out, "{text}")?;
    } else if a.markdown {
        write!(out, "{}", markdown(inv, list, statuses, &summary))?;
    } else {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        write!(out, "{}", table(inv, list, statuses, &summary, colour))?;
    }
    if let (false, Some(v)) = (a.json, verified) {
        write!(out, "{}", verify_lines(v))?;
    }
    out.flush()?;
    Ok(())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// One row per revision: repo, rev, task, arch, params, format, dtype, size, state, modified.
fn rows(inv: &Inventory) -> Vec<[String; 10]> {
    let mut rows = Vec::new();
    for r in &inv.repos {
        if r.revisions.is_empty() {
            rows.push([
                r.repo_id.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                human_bytes(r.size_bytes),
                "broken".into(),
                r.last_modified.map(format_utc).unwrap_or_default(),
            ]);
        }
        for (i, v) in r.revisions.iter().enumerate() {
            let rev = if v.refs.is_empty() { v.commit[..v.commit.len().min(10)].to_string() } else { v.refs.join(",") };
            let format = match &v.quantization {
                Some(q) => {
                    let mut s = v.format.as_str().to_string();
                    if let Some(b) = q.bits {
                        s.push_str(&format!(" {b}bit"));
                    }
                    if let Some(g) = q.group_size {
                        s.push_str(&format!(" g{g}"));
                    }
                    if q.mode != "affine" {
                        s.push_str(&format!(" {}", q.mode));
                    }
                    s
                }
                None => v.format.as_str().to_string(),
            };
            let ok = v.complete && r.problems.is_empty();
            rows.push([
                if i == 0 { r.repo_id.clone() } else { String::new() },
                rev,
                v.task.as_str().into(),
                v.architecture.clone().or_else(|| v.model_type.clone()).unwrap_or_else(|| "-".into()),
                v.parameters.map(human_count).unwrap_or_else(|| "-".into()),
                format,
                v.dtype.clone().unwrap_or_else(|| "-".into()),
                // Repo size (shared blobs once) on the first row, the revision's own below.
                human_bytes(if i == 0 { r.size_bytes } else { v.size_bytes }),
                if ok { "complete".into() } else { "broken".into() },
                v.last_modified.or(r.last_modified).map(format_utc).unwrap_or_default(),
            ]);
        }
    }
    rows
}

/// `Verified: …` and one line per corrupt blob.
fn verify_lines(v: &VerifyReport) -> String {
    let mut o = format!(
        "\nVerified: {} blobs ({}) re-hashed, {} skipped (names that are not digests, plain copies): ",
        v.checked,
        human_bytes(v.checked_bytes),
        v.skipped
    );
    if v.ok() {
        o.push_str("all match\n");
        return o;
    }
    o.push_str(&format!("{} corrupt, {} unreadable\n", v.mismatches.len(), v.errors.len()));
    for m in &v.mismatches {
        o.push_str(&format!(
            "  corrupt: {} {} ({} is {}; linked as {}) — repair: embedrank pull --verify {}\n",
            m.repo_id,
            m.blob.display(),
            m.algorithm.as_str(),
            m.actual,
            if m.files.is_empty() { "nothing".to_string() } else { m.files.join(", ") },
            m.repo_id
        ));
    }
    for e in &v.errors {
        o.push_str(&format!("  unreadable: {e}\n"));
    }
    o
}

fn problems_of(r: &RepoEntry) -> Vec<String> {
    let mut p = r.problems.clone();
    for v in &r.revisions {
        for x in &v.problems {
            p.push(format!("{}: {x}", &v.commit[..v.commit.len().min(10)]));
        }
    }
    p
}

fn paint(s: &str, code: &str, colour: bool) -> String {
    if colour {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

fn mark(s: State) -> &'static str {
    match s {
        State::Available => "✅",
        State::Missing => "❌",
        State::Broken => "⚠️",
    }
}

fn list_name(list: &WantedList) -> String {
    match &list.source {
        Some(p) => p.display().to_string(),
        None => "built-in list".into(),
    }
}

fn table(inv: &Inventory, list: &WantedList, statuses: &[WantedStatus], s: &Summary, colour: bool) -> String {
    let mut o = String::new();
    o.push_str(&paint("Cache roots", "1", colour));
    o.push('\n');
    for r in &inv.roots {
        let what = match (&r.error, r.exists) {
            (Some(e), _) => paint(&format!("unreadable: {e}"), "31", colour),
            (None, false) => paint("(not present)", "2", colour),
            (None, true) => format!("{} repos", r.repos),
        };
        o.push_str(&format!("  {}  {what}\n", r.path.display()));
    }
    o.push('\n');
    const HEAD: [&str; 10] = ["REPO", "REV", "TASK", "ARCH", "PARAMS", "FORMAT", "DTYPE", "SIZE", "STATE", "MODIFIED"];
    let rows = rows(inv);
    if rows.is_empty() {
        o.push_str("No models in the cache.\n");
    } else {
        let mut w = HEAD.map(|h| h.chars().count());
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String; 10], bold: bool| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                let pad = w[i] - c.chars().count();
                let cell = match (i, c.as_str()) {
                    _ if bold => paint(c, "1", colour),
                    (8, "broken") => paint(c, "33", colour),
                    (8, _) => paint(c, "32", colour),
                    _ => c.clone(),
                };
                l.push_str(&cell);
                if i + 1 < cells.len() {
                    l.push_str(&" ".repeat(pad + 2));
                }
            }
            l.trim_end().to_string() + "\n"
        };
        o.push_str(&line(&HEAD.map(String::from), true));
        for r in &rows {
            o.push_str(&line(r, false));
        }
        for r in &inv.repos {
            let p = problems_of(r);
            if !p.is_empty() {
                o.push_str(&paint(&format!("\n{} ({}):\n", r.repo_id, r.root.display()), "33", colour));
                for x in p {
                    o.push_str(&format!("  - {x}\n"));
                }
            }
        }
    }
    o.push_str(&format!("\n{} repos, {} revisions, {} on disk\n\n", s.repos, s.revisions, human_bytes(s.size_bytes)));
    o.push_str(&paint(&format!("Wanted ({})", list_name(list)), "1", colour));
    o.push('\n');
    let rw = statuses.iter().map(|w| w.entry.repo.chars().count()).max().unwrap_or(0);
    for w in statuses {
        let role = w.entry.role.map(|r| r.as_str()).unwrap_or("-");
        let detail = match w.state {
            State::Available => format!(
                "{} @ {} in {}",
                w.variant.as_deref().unwrap_or(""),
                w.commit.as_deref().map(|c| &c[..c.len().min(10)]).unwrap_or(""),
                w.root.as_ref().map(|r| r.display().to_string()).unwrap_or_default()
            ),
            State::Missing => paint("missing", "31", colour),
            State::Broken => paint(&format!("broken: {}", w.problems.join("; ")), "33", colour),
        };
        o.push_str(&format!(
            "{} {:<6} {:<10} {:<rw$}  {detail}\n",
            mark(w.state),
            w.entry.priority.as_str(),
            role,
            w.entry.repo,
        ));
        if let Some(n) = &w.entry.note {
            o.push_str(&format!("{:>23}note: {n}\n", ""));
        }
        if let Some(f) = &w.fix {
            o.push_str(&format!("{:>23}fix:  {}\n", "", paint(f, "36", colour)));
        }
    }
    o.push_str(&format!(
        "\n{} available, {} missing, {} broken\n",
        s.wanted_available, s.wanted_missing, s.wanted_broken
    ));
    o
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

fn markdown(inv: &Inventory, list: &WantedList, statuses: &[WantedStatus], s: &Summary) -> String {
    let mut o = format!("# embedrank status — {} UTC\n\n", format_utc(now_secs()));
    o.push_str("## Cache roots\n\n| Root | Repos |\n|---|---|\n");
    for r in &inv.roots {
        let n = match (&r.error, r.exists) {
            (Some(e), _) => format!("unreadable: {}", md_escape(e)),
            (None, false) => "not present".into(),
            (None, true) => r.repos.to_string(),
        };
        o.push_str(&format!("| `{}` | {n} |\n", r.path.display()));
    }
    o.push_str(&format!("\n## Models in the cache ({} repos, {} on disk)\n\n", s.repos, human_bytes(s.size_bytes)));
    o.push_str("| Repo | Revision | Task | Architecture | Params | Format | Dtype | Size | State | Modified |\n");
    o.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows(inv) {
        let cells: Vec<String> = r.iter().map(|c| md_escape(c)).collect();
        o.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    let broken: Vec<&RepoEntry> = inv.repos.iter().filter(|r| !problems_of(r).is_empty()).collect();
    if !broken.is_empty() {
        o.push_str("\n### Problems\n\n");
        for r in broken {
            o.push_str(&format!("- **{}** (`{}`)\n", r.repo_id, r.root.display()));
            for p in problems_of(r) {
                o.push_str(&format!("  - {}\n", md_escape(&p)));
            }
        }
    }
    o.push_str(&format!("\n## Wanted ({})\n\n", list_name(list)));
    o.push_str("| | Repo | Priority | Role | Variant / problem | Fix |\n|---|---|---|---|---|---|\n");
    for w in statuses {
        let detail = match w.state {
            State::Available => format!(
                "available: {} @ `{}`",
                w.variant.as_deref().unwrap_or(""),
                w.commit.as_deref().map(|c| &c[..c.len().min(10)]).unwrap_or("")
            ),
            State::Missing => "missing".into(),
            State::Broken => format!("broken: {}", w.problems.join("; ")),
        };
        let detail = match &w.entry.note {
            Some(n) => format!("{detail} — {n}"),
            None => detail,
        };
        o.push_str(&format!(
            "| {} | `{}` | {} | {} | {} | {} |\n",
            mark(w.state),
            w.entry.repo,
            w.entry.priority.as_str(),
            w.entry.role.map(|r| r.as_str()).unwrap_or(""),
            md_escape(&detail),
            w.fix.as_ref().map(|f| format!("`{f}`")).unwrap_or_default()
        ));
    }
    o.push_str(&format!(
        "\n**{} available, {} missing, {} broken.**\n",
        s.wanted_available, s.wanted_missing, s.wanted_broken
    ));
    o
}
