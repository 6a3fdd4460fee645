//! A streaming safetensors writer: the header (all names, dtypes, shapes, offsets) first, then each
//! tensor's bytes in header order. Hand-written because `safetensors::serialize_to_file` needs every
//! tensor in memory at once, and a quantized 8B model should not.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::{Error, Result};

/// One tensor of the output file, declared before any data is written.
#[derive(Debug, Clone)]
pub struct Declared {
    pub name: String,
    /// safetensors dtype string: `U32`, `F32`, `F16`, `BF16`, ...
    pub dtype: &'static str,
    pub shape: Vec<usize>,
}

impl Declared {
    pub fn nbytes(&self) -> usize {
        self.shape.iter().product::<usize>() * dtype_size(self.dtype)
    }
}

pub fn dtype_size(dtype: &str) -> usize {
    match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        _ => 1,
    }
}

pub struct StreamWriter {
    out: BufWriter<File>,
    path: PathBuf,
    tensors: Vec<Declared>,
    next: usize,
}

impl StreamWriter {
    /// Create `path` and write the header for `tensors` (written later in this order).
    pub fn create(path: &Path, tensors: Vec<Declared>, metadata: &[(&str, &str)]) -> Result<Self> {
        let mut header = Map::new();
        if !metadata.is_empty() {
            let m: Map<String, Value> = metadata.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
            header.insert("__metadata__".into(), Value::Object(m));
        }
        let mut offset = 0usize;
        for t in &tensors {
            let end = offset + t.nbytes();
            header.insert(t.name.clone(), json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, end]}));
            offset = end;
        }
        let mut bytes = serde_json::to_vec(&Value::Object(header))
            .map_err(|e| Error::weights(path, format!("cannot encode header: {e}")))?;
        // Data must start 8-byte aligned; the format pads the header with spaces.
        while bytes.len() % 8 != 0 {
            bytes.push(b' ');
        }
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let io = |e| Error::io(path, e);
        out.write_all(&(bytes.len() as u64).to_le_bytes()).map_err(io)?;
        out.write_all(&bytes).map_err(io)?;
        Ok(StreamWriter { out, path: path.to_path_buf(), tensors, next: 0 })
    }

    /// Write the next declared tensor's bytes; name and size must match the declaration.
    pub fn write(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let t = self
            .tensors
            .get(self.next)
            .ok_or_else(|| Error::weights(&self.path, format!("tensor `{name}` was not declared")))?;
        if t.name != name || t.nbytes() != data.len() {
            return Err(Error::weights(
                &self.path,
                format!(
                    "writing `{name}` ({} bytes) where `{}` ({} bytes) was declared",
                    data.len(),
                    t.name,
                    t.nbytes()
                ),
            ));
        }
        self.out.write_all(data).map_err(|e| Error::io(&self.path, e))?;
        self.next += 1;
        Ok(())
    }

    /// Flush and fsync; errors if a declared tensor was never written.
    pub fn finish(self) -> Result<()> {
        if self.next != self.tensors.len() {
            return Err(Error::weights(
                &self.path,
                format!("only {} of {} declared tensors were written", self.next, self.tensors.len()),
            ));
        }
        let path = self.path;
        let file = self.out.into_inner().map_err(|e| Error::io(&path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_file_reads_back_with_the_safetensors_crate() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let decl = vec![
            Declared { name: "b".into(), dtype: "U32", shape: vec![2, 1] },
            Declared { name: "a".into(), dtype: "F16", shape: vec![3] },
        ];
        let mut w = StreamWriter::create(&p, decl, &[("format", "mlx")]).unwrap();
        assert!(w.write("a", &[0; 6]).is_err(), "out of order must fail");
        w.write("b", bytemuck::cast_slice(&[7u32, 9])).unwrap();
        w.write("a", &[1, 0, 2, 0, 3, 0]).unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("b").unwrap().data(), bytemuck::cast_slice::<u32, u8>(&[7, 9]));
        assert_eq!(st.tensor("a").unwrap().shape(), &[3]);
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap().get("format").map(String::as_str), Some("mlx"));
    }
}
