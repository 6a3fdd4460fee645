//! The `embedrank` command line. Thin: parse, call the engine, print.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    if !args.is_serve() {
        restore_sigpipe();
    }
    cli::init_logging(args.verbose, args.quiet);
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            // One line, the whole cause chain.
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// Rust ignores SIGPIPE, so a closed pipe (`embedrank check --json | head`) turns every print into an
/// error or a panic. Commands that print end quietly on it, as other command-line tools do; the server
/// keeps ignoring it (its sockets report EPIPE as an error on the one connection).
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal disposition to its default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
