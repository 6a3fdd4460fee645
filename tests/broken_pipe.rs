//! A closed stdout (`embedrank check --json | head -c1`) ends a printing command quietly, as other
//! command-line tools end: no panic, no error line.

mod common;

use std::process::{Command, Stdio};

fn closed_stdout(args: &[&str]) {
    let hub = common::test_hub();
    // The reader is gone before the command starts (closing it after spawning raced the child's
    // first write on a loaded machine: the write then succeeded into the pipe's buffer).
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = Command::new(env!("CARGO_BIN_EXE_embedrank"))
        .args(args)
        .env("HF_HUB_CACHE", &hub)
        .env_remove("EMBEDRANK_CACHE_DIRS")
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}: {err}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(
            out.status.success() || out.status.signal() == Some(libc_sigpipe()),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}

#[cfg(unix)]
fn libc_sigpipe() -> i32 {
    13
}

#[test]
fn printing_commands_end_quietly_on_a_closed_pipe() {
    closed_stdout(&["check", "--json", common::MINILM]);
    closed_stdout(&["check", common::MINILM]);
    closed_stdout(&["status", "--json"]);
    closed_stdout(&["embed", "-m", common::MINILM, "one", "two"]);
    let ce = common::tiny_dir().join("tiny-bert-cross-encoder");
    closed_stdout(&["rerank", "-m", ce.to_str().unwrap(), "--query", "q", "a", "b"]);
}
