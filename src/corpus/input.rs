//! Streaming readers of corpus files: JSON lines (`{"id", "text"}`, BEIR's `_id`/`title`/`text`),
//! CSV/TSV with a header, plain lines, and Parquet. Each yields rows one at a time with a stable row
//! number (malformed rows count too, so row ranges never move), so memory stays flat.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Jsonl,
    Csv,
    Tsv,
    Lines,
    Parquet,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s.to_ascii_lowercase().as_str() {
            "jsonl" | "json" | "ndjson" => Format::Jsonl,
            "csv" => Format::Csv,
            "tsv" => Format::Tsv,
            "lines" | "txt" | "text" => Format::Lines,
            "parquet" => Format::Parquet,
            _ => return None,
        })
    }

    /// From the file name's extension; anything unknown is plain lines.
    pub fn detect(name: &str) -> Format {
        let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        match Format::parse(ext) {
            Some(f) if ext != "text" => f,
            _ => Format::Lines,
        }
    }
}

/// Which fields hold the text and the id, and which to copy to the output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputOptions {
    /// None: detect from the extension.
    pub format: Option<Format>,
    pub text_field: String,
    /// None: `id`, else `_id` (BEIR), else the row number.
    pub id_field: Option<String>,
    /// Passthrough columns, copied as strings.
    pub keep: Vec<String>,
}

impl Default for InputOptions {
    fn default() -> Self {
        InputOptions { format: None, text_field: "text".into(), id_field: None, keep: Vec::new() }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: String,
    pub text: String,
    pub keep: Vec<Option<String>>,
}

/// One row of a file: 0-based row number, 1-based line (or Parquet row) for messages.
#[derive(Debug)]
pub struct Row {
    pub row: u64,
    pub line: u64,
    pub data: std::result::Result<Record, String>,
}

/// A file's rows, in order. Rows for which `want(row)` is false are counted but not parsed.
pub trait RowReader {
    fn next_row(&mut self, want: &dyn Fn(u64) -> bool) -> Result<Option<Row>>;
    /// Rows seen so far (all of them once `next_row` returned None).
    fn rows(&self) -> u64;
}

/// Open `path` (a local file; `name` is what messages call it). `default_id` makes the id of a row
/// that has none.
pub fn open(path: &Path, name: &str, opts: &InputOptions) -> Result<Box<dyn RowReader>> {
    let fmt = opts.format.unwrap_or_else(|| Format::detect(name));
    let file = File::open(path).map_err(|e| Error::io(name, e))?;
    Ok(match fmt {
        Format::Jsonl | Format::Lines => Box::new(LineReader {
            r: BufReader::with_capacity(1 << 16, file),
            buf: Vec::new(),
            line: 0,
            row: 0,
            json: fmt == Format::Jsonl,
            opts: opts.clone(),
        }),
        Format::Csv | Format::Tsv => Box::new(CsvReader::new(file, name, fmt == Format::Tsv, opts)?),
        Format::Parquet => Box::new(ParquetReader::new(file, name, opts)?),
    })
}

fn bad_input(name: &str, msg: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("{name}: {msg}"))
}

struct LineReader {
    r: BufReader<File>,
    buf: Vec<u8>,
    line: u64,
    row: u64,
    json: bool,
    opts: InputOptions,
}

impl RowReader for LineReader {
    fn rows(&self) -> u64 {
        self.row
    }
    fn next_row(&mut self, want: &dyn Fn(u64) -> bool) -> Result<Option<Row>> {
        loop {
            self.buf.clear();
            let n = self.r.read_until(b'\n', &mut self.buf).map_err(|e| Error::io("input", e))?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            let trimmed = self.buf.trim_ascii();
            if trimmed.is_empty() {
                continue; // blank lines are not rows
            }
            let row = self.row;
            self.row += 1;
            if !want(row) {
                continue;
            }
            let data = match std::str::from_utf8(trimmed) {
                Err(_) => Err("not valid UTF-8".to_string()),
                Ok(s) if self.json => parse_json(s, row, &self.opts),
                Ok(s) => {
                    // Plain lines keep their text as written (only the line break is dropped).
                    let raw = std::str::from_utf8(&self.buf).unwrap_or(s);
                    Ok(Record {
                        id: row.to_string(),
                        text: raw.trim_end_matches(['\n', '\r']).to_string(),
                        keep: vec![None; self.opts.keep.len()],
                    })
                }
            };
            return Ok(Some(Row { row, line: self.line, data }));
        }
    }
}

fn json_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn parse_json(s: &str, row: u64, o: &InputOptions) -> std::result::Result<Record, String> {
    let v: serde_json::Value = serde_json::from_str(s).map_err(|e| format!("not valid JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let text = match obj.get(&o.text_field) {
        Some(serde_json::Value::String(t)) => t.as_str(),
        Some(_) => return Err(format!("\"{}\" is not a string", o.text_field)),
        None => return Err(format!("no \"{}\" field", o.text_field)),
    };
    // BEIR corpora: the title goes in front, as `embedrank eval` does.
    let text = match obj.get("title").and_then(|t| t.as_str()) {
        Some(title) if o.text_field == "text" => crate::eval::beir::join_title(Some(title), text),
        _ => text.to_string(),
    };
    let id = match &o.id_field {
        Some(f) => match obj.get(f).and_then(json_string) {
            Some(id) => id,
            None => return Err(format!("no \"{f}\" field")),
        },
        None => obj.get("id").or_else(|| obj.get("_id")).and_then(json_string).unwrap_or_else(|| row.to_string()),
    };
    let keep = o.keep.iter().map(|k| obj.get(k).and_then(json_string)).collect();
    Ok(Record { id, text, keep })
}

struct CsvReader {
    r: csv::Reader<File>,
    rec: csv::StringRecord,
    text: usize,
    id: Option<usize>,
    keep: Vec<Option<usize>>,
    row: u64,
}

impl CsvReader {
    fn new(file: File, name: &str, tsv: bool, o: &InputOptions) -> Result<CsvReader> {
        let mut r =
            csv::ReaderBuilder::new().delimiter(if tsv { b'\t' } else { b',' }).flexible(true).from_reader(file);
        let headers = r.headers().map_err(|e| bad_input(name, format!("reading the header: {e}")))?.clone();
        let col = |n: &str| headers.iter().position(|h| h == n);
        let text = col(&o.text_field).ok_or_else(|| {
            bad_input(name, format!("no \"{}\" column in the header (use --text-field)", o.text_field))
        })?;
        let id = match &o.id_field {
            Some(f) => Some(col(f).ok_or_else(|| bad_input(name, format!("no \"{f}\" column in the header")))?),
            None => col("id").or_else(|| col("_id")),
        };
        let keep = o.keep.iter().map(|k| col(k)).collect();
        Ok(CsvReader { r, rec: csv::StringRecord::new(), text, id, keep, row: 0 })
    }
}

impl RowReader for CsvReader {
    fn rows(&self) -> u64 {
        self.row
    }
    fn next_row(&mut self, want: &dyn Fn(u64) -> bool) -> Result<Option<Row>> {
        let res = self.r.read_record(&mut self.rec);
        let line = self.rec.position().map(|p| p.line()).unwrap_or(0);
        let row = self.row;
        let data = match res {
            Ok(false) => return Ok(None),
            Ok(true) => {
                self.row += 1;
                if !want(row) {
                    return Ok(Some(Row { row, line, data: Err(String::new()) }));
                }
                match self.rec.get(self.text) {
                    None => Err(format!("no value in the text column (field {})", self.text + 1)),
                    Some(t) => Ok(Record {
                        id: self
                            .id
                            .and_then(|i| self.rec.get(i))
                            .map(str::to_string)
                            .unwrap_or_else(|| row.to_string()),
                        text: t.to_string(),
                        keep: self.keep.iter().map(|k| k.and_then(|i| self.rec.get(i)).map(str::to_string)).collect(),
                    }),
                }
            }
            Err(e) => {
                self.row += 1;
                let line = e.position().map(|p| p.line()).unwrap_or(line);
                return Ok(Some(Row { row, line, data: Err(format!("bad CSV record: {e}")) }));
            }
        };
        Ok(Some(Row { row, line, data }))
    }
}

struct ParquetReader {
    batches: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    name: String,
    batch: Option<RecordBatch>,
    pos: usize,
    row: u64,
    text: usize,
    id: Option<usize>,
    keep: Vec<Option<usize>>,
}

impl ParquetReader {
    fn new(file: File, name: &str, o: &InputOptions) -> Result<ParquetReader> {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        use parquet::arrow::ProjectionMask;
        let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad_input(name, e))?;
        let fields = b.schema().fields().clone();
        let col = |n: &str| fields.iter().position(|f| f.name() == n);
        let text = col(&o.text_field)
            .ok_or_else(|| bad_input(name, format!("no \"{}\" column (use --text-field)", o.text_field)))?;
        let id = match &o.id_field {
            Some(f) => Some(col(f).ok_or_else(|| bad_input(name, format!("no \"{f}\" column")))?),
            None => col("id").or_else(|| col("_id")),
        };
        let keep_cols: Vec<Option<usize>> = o.keep.iter().map(|k| col(k)).collect();
        // Read only the columns we use; positions below are in the projected batch.
        let mut wanted: Vec<usize> =
            [Some(text), id].into_iter().flatten().chain(keep_cols.iter().flatten().copied()).collect();
        wanted.sort();
        wanted.dedup();
        let at = |c: usize| wanted.iter().position(|&w| w == c).unwrap_or(0);
        let mask = ProjectionMask::roots(b.parquet_schema(), wanted.clone());
        let batches = b.with_projection(mask).with_batch_size(1024).build().map_err(|e| bad_input(name, e))?;
        Ok(ParquetReader {
            batches,
            name: name.to_string(),
            batch: None,
            pos: 0,
            row: 0,
            text: at(text),
            id: id.map(at),
            keep: keep_cols.iter().map(|k| k.map(at)).collect(),
        })
    }
}

/// Row `i` of a column as a string (strings and integers; null is None).
fn cell(a: &ArrayRef, i: usize) -> std::result::Result<Option<String>, String> {
    if a.is_null(i) {
        return Ok(None);
    }
    Ok(Some(match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().value(i).to_string(),
        DataType::LargeUtf8 => a.as_string::<i64>().value(i).to_string(),
        DataType::Utf8View => a.as_string_view().value(i).to_string(),
        DataType::Int64 => a.as_primitive::<arrow_array::types::Int64Type>().value(i).to_string(),
        DataType::Int32 => a.as_primitive::<arrow_array::types::Int32Type>().value(i).to_string(),
        DataType::UInt64 => a.as_primitive::<arrow_array::types::UInt64Type>().value(i).to_string(),
        DataType::UInt32 => a.as_primitive::<arrow_array::types::UInt32Type>().value(i).to_string(),
        t => return Err(format!("column type {t} is not a string or integer")),
    }))
}

impl RowReader for ParquetReader {
    fn rows(&self) -> u64 {
        self.row
    }
    fn next_row(&mut self, want: &dyn Fn(u64) -> bool) -> Result<Option<Row>> {
        loop {
            if let Some(b) = &self.batch {
                if self.pos < b.num_rows() {
                    let i = self.pos;
                    self.pos += 1;
                    let row = self.row;
                    self.row += 1;
                    if !want(row) {
                        return Ok(Some(Row { row, line: row + 1, data: Err(String::new()) }));
                    }
                    let data = (|| {
                        let text = cell(b.column(self.text), i)?.ok_or("the text is null")?;
                        let id = match self.id {
                            Some(c) => cell(b.column(c), i)?.ok_or("the id is null")?,
                            None => row.to_string(),
                        };
                        let keep = self
                            .keep
                            .iter()
                            .map(|k| match k {
                                Some(c) => cell(b.column(*c), i),
                                None => Ok(None),
                            })
                            .collect::<std::result::Result<Vec<_>, String>>()?;
                        Ok::<_, String>(Record { id, text, keep })
                    })();
                    return Ok(Some(Row { row, line: row + 1, data }));
                }
            }
            match self.batches.next() {
                None => return Ok(None),
                Some(Ok(b)) => {
                    self.batch = Some(b);
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(bad_input(&self.name, e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(content: &str, ext: &str, o: &InputOptions) -> Vec<Row> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(format!("f.{ext}"));
        std::fs::write(&p, content).unwrap();
        let mut r = open(&p, &format!("f.{ext}"), o).unwrap();
        let mut out = Vec::new();
        while let Some(row) = r.next_row(&|_| true).unwrap() {
            out.push(row);
        }
        out
    }

    #[test]
    fn jsonl_beir_and_bad_rows() {
        let o = InputOptions::default();
        let r = rows("{\"_id\":\"d1\",\"title\":\"T\",\"text\":\"body\"}\n\n{\"id\":7,\"text\":\"x\"}\n{oops\n{\"text\":\"y\"}\n", "jsonl", &o);
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].data.as_ref().unwrap().text, "T body");
        assert_eq!(r[0].data.as_ref().unwrap().id, "d1");
        assert_eq!(r[1].data.as_ref().unwrap().id, "7");
        assert_eq!((r[2].row, r[2].line), (2, 4));
        assert!(r[2].data.as_ref().unwrap_err().contains("not valid JSON"));
        assert_eq!(r[3].data.as_ref().unwrap().id, "3");
    }

    #[test]
    fn csv_tsv_and_lines() {
        let o = InputOptions { keep: vec!["lang".into()], ..Default::default() };
        let r = rows("id,text,lang\na,\"hello, world\",en\nb,bye,fr\n", "csv", &o);
        assert_eq!(r[0].data.as_ref().unwrap().text, "hello, world");
        assert_eq!(r[1].data.as_ref().unwrap().keep, vec![Some("fr".to_string())]);
        let r = rows("text\tid\nx\t1\n", "tsv", &InputOptions::default());
        assert_eq!(r[0].data.as_ref().unwrap().id, "1");
        let r = rows("one\n\ntwo\n", "txt", &InputOptions::default());
        assert_eq!(r.iter().map(|r| r.data.as_ref().unwrap().text.clone()).collect::<Vec<_>>(), vec!["one", "two"]);
        assert!(open(Path::new("/nonexistent"), "x.csv", &InputOptions::default()).is_err());
    }
}
