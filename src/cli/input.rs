//! Reading inputs: positional texts, or a file / stdin holding a JSON array of texts, JSON lines
//! (`{"text": ...}`) or plain lines. Output index i is input line i (or array element i), so blank
//! lines are an error unless the user says to skip or embed them.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// What a blank line in an input file means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Blank {
    /// Stop with the line number (the default: skipping would shift every later index).
    #[default]
    Error,
    /// Embed it as an empty text, keeping indexes equal to line numbers.
    Embed,
    /// Drop it (indexes then count only the non-blank lines).
    Skip,
}

/// Texts from positional arguments or `--input FILE|-`.
pub fn texts(positional: &[String], input: Option<&Path>, blank: Blank) -> Result<Vec<String>> {
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
            parse_lines(&s, &p.display().to_string(), blank)
        }
    }
}

/// A whole-file JSON array of strings (or of `{"text": ...}` objects) is its elements; otherwise
/// each line is a JSON object with a string "text", or plain text. A line that starts with `{` must
/// be valid JSON with "text", so a typo is an error rather than embedded as text. Blank lines at the
/// end of the file are ignored; others follow `blank`.
pub fn parse_lines(s: &str, name: &str, blank: Blank) -> Result<Vec<String>> {
    if s.trim_start().starts_with('[') {
        if let Ok(items) = serde_json::from_str::<Vec<serde_json::Value>>(s) {
            let mut out = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                match v.as_str().or_else(|| v.get("text").and_then(|t| t.as_str())) {
                    Some(t) => out.push(t.to_string()),
                    None => bail!("{name}: element {i} of the JSON array is not a string or an object with \"text\""),
                }
            }
            if out.is_empty() {
                bail!("{name}: the JSON array is empty");
            }
            return Ok(out);
        }
    }
    let lines: Vec<&str> = s.lines().map(|l| l.trim_end_matches('\r')).collect();
    let last = lines.iter().rposition(|l| !l.trim().is_empty()).map_or(0, |i| i + 1);
    let mut out = Vec::new();
    for (n, line) in lines[..last].iter().enumerate() {
        if line.trim().is_empty() {
            match blank {
                Blank::Error => bail!(
                    "{name}:{}: blank line (output index i is input line i+1: --blank skip drops blank lines, \
                     --blank embed embeds them as empty texts)",
                    n + 1
                ),
                Blank::Skip => continue,
                Blank::Embed => {
                    out.push(String::new());
                    continue;
                }
            }
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
        let s = "{\"text\": \"a\"}\nplain line\n\n{\"text\":\"b\",\"id\":3}\n\n";
        let t = parse_lines(s, "x", Blank::Skip).unwrap();
        assert_eq!(t, vec!["a", "plain line", "b"]);
        assert_eq!(parse_lines(s, "x", Blank::Embed).unwrap(), vec!["a", "plain line", "", "b"]);
        let e = parse_lines(s, "x", Blank::Error).unwrap_err().to_string();
        assert!(e.contains("x:3: blank line"), "{e}");
        // Trailing blank lines are no data.
        assert_eq!(parse_lines("a\nb\n\n\n", "x", Blank::Error).unwrap(), vec!["a", "b"]);
        assert!(parse_lines("{\"txt\": 1}", "x", Blank::Skip).is_err());
        assert!(parse_lines("{broken", "x", Blank::Skip).is_err());
        assert!(parse_lines("\n\n", "x", Blank::Skip).is_err());
    }

    #[test]
    fn a_json_array_file_is_its_elements() {
        let t = parse_lines("[\"first text\", {\"text\": \"second\"}]\n", "x", Blank::Error).unwrap();
        assert_eq!(t, vec!["first text", "second"]);
        assert!(parse_lines("[1, 2]", "x", Blank::Error).is_err());
        // A plain line that only starts with a bracket stays a line.
        assert_eq!(parse_lines("[1] Introduction\n", "x", Blank::Error).unwrap(), vec!["[1] Introduction"]);
    }
}
