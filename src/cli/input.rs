//! Reading inputs: positional texts, or a file / stdin of JSON lines (`{"text": ...}`) or plain lines.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Texts from positional arguments or `--input FILE|-`.
pub fn texts(positional: &[String], input: Option<&Path>) -> Result<Vec<String>> {
    match (positional.is_empty(), input) {
        (false, Some(_)) => bail!("give texts as arguments or with --input, not both"),
        (false, None) => Ok(positional.to_vec()),
        (true, None) => bail!("no input: give texts as arguments or use --input FILE (- for stdin)"),
        (true, Some(p)) => {
            let mut s = String::new();
            if p == Path::new("-") {
                std::io::stdin().read_to_string(&mut s).context("reading stdin")?;
            } else {
                s = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            }
            parse_lines(&s, &p.display().to_string())
        }
    }
}

/// Each non-empty line is a JSON object with a string "text", or plain text. A line that starts
/// with `{` must be valid JSON with "text", so a typo is an error rather than embedded as text.
pub fn parse_lines(s: &str, name: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (n, line) in s.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if line.trim_start().starts_with('{') {
            let v: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("{name}:{}: not valid JSON", n + 1))?;
            match v.get("text").and_then(|t| t.as_str()) {
                Some(t) => out.push(t.to_string()),
                None => bail!("{name}:{}: JSON line without a string \"text\" field", n + 1),
            }
        } else {
            out.push(line.to_string());
        }
    }
    if out.is_empty() {
        bail!("{name}: no texts found");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_and_plain_lines() {
        let t = parse_lines("{\"text\": \"a\"}\nplain line\n\n{\"text\":\"b\",\"id\":3}\n", "x").unwrap();
        assert_eq!(t, vec!["a", "plain line", "b"]);
        assert!(parse_lines("{\"txt\": 1}", "x").is_err());
        assert!(parse_lines("{broken", "x").is_err());
        assert!(parse_lines("\n\n", "x").is_err());
    }
}
