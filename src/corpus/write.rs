//! Output parts: Parquet files with `id` (utf8), `embedding` (a fixed-size list of float32, or
//! float16 / int8 / binary on request) and optional passthrough utf8 columns.

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{FixedSizeListBuilder, Float16Builder, Float32Builder, Int8Builder, UInt8Builder};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorType {
    Float32,
    Float16,
    /// Each component × 127, rounded and clamped (for L2-normalized vectors).
    Int8,
    /// One bit per component (x > 0), packed most significant bit first, ⌈dim/8⌉ bytes.
    Binary,
}

impl VectorType {
    pub fn parse(s: &str) -> Option<VectorType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "float32" | "f32" => VectorType::Float32,
            "float16" | "f16" => VectorType::Float16,
            "int8" => VectorType::Int8,
            "binary" | "ubinary" => VectorType::Binary,
            _ => return None,
        })
    }
}

fn parquet_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Storage { location: path.display().to_string(), message: e.to_string() }
}

/// Write one part to `path`; `keep` is the passthrough column names and each row's values.
pub fn write_part(
    path: &Path,
    ids: &[String],
    vectors: &[Vec<f32>],
    dim: usize,
    ty: VectorType,
    (keep_names, keep): (&[String], &[Vec<Option<String>>]),
    metadata: &[(String, String)],
) -> Result<()> {
    let width = if ty == VectorType::Binary { dim.div_ceil(8) } else { dim };
    let (item, emb): (DataType, ArrayRef) = match ty {
        VectorType::Float32 => {
            let mut b = FixedSizeListBuilder::with_capacity(
                Float32Builder::with_capacity(ids.len() * dim),
                dim as i32,
                ids.len(),
            );
            for v in vectors {
                b.values().append_slice(v);
                b.append(true);
            }
            (DataType::Float32, Arc::new(b.finish()))
        }
        VectorType::Float16 => {
            let mut b = FixedSizeListBuilder::with_capacity(
                Float16Builder::with_capacity(ids.len() * dim),
                dim as i32,
                ids.len(),
            );
            for v in vectors {
                v.iter().for_each(|x| b.values().append_value(half::f16::from_f32(*x)));
                b.append(true);
            }
            (DataType::Float16, Arc::new(b.finish()))
        }
        VectorType::Int8 => {
            let mut b =
                FixedSizeListBuilder::with_capacity(Int8Builder::with_capacity(ids.len() * dim), dim as i32, ids.len());
            for v in vectors {
                v.iter().for_each(|x| b.values().append_value((x * 127.0).round().clamp(-127.0, 127.0) as i8));
                b.append(true);
            }
            (DataType::Int8, Arc::new(b.finish()))
        }
        VectorType::Binary => {
            let mut b = FixedSizeListBuilder::with_capacity(
                UInt8Builder::with_capacity(ids.len() * width),
                width as i32,
                ids.len(),
            );
            for v in vectors {
                for chunk in v.chunks(8) {
                    let byte = chunk
                        .iter()
                        .enumerate()
                        .fold(0u8, |acc, (j, x)| if *x > 0.0 { acc | (0x80 >> j) } else { acc });
                    b.values().append_value(byte);
                }
                b.append(true);
            }
            (DataType::UInt8, Arc::new(b.finish()))
        }
    };
    let mut fields = vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("embedding", DataType::FixedSizeList(Arc::new(Field::new("item", item, true)), width as i32), false),
    ];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(ids)), emb];
    for (k, name) in keep_names.iter().enumerate() {
        fields.push(Field::new(name, DataType::Utf8, true));
        cols.push(Arc::new(keep.iter().map(|r| r.get(k).cloned().flatten()).collect::<StringArray>()));
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), cols).map_err(|e| parquet_err(path, e))?;
    let kv = metadata.iter().map(|(k, v)| parquet::file::metadata::KeyValue::new(k.clone(), v.clone())).collect();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_key_value_metadata(Some(kv))
        .build();
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| parquet_err(path, e))?;
    w.write(&batch).map_err(|e| parquet_err(path, e))?;
    let file = w.into_inner().map_err(|e| parquet_err(path, e))?;
    // Durable before the rename publishes it.
    file.sync_all().map_err(|e| Error::io(path, e))?;
    Ok(())
}

/// The ids and float32 vectors of a part (float32 parts only; for checks and tests).
pub fn read_part(path: &Path) -> Result<(Vec<String>, Vec<Vec<f32>>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| parquet_err(path, e))?;
    let (mut ids, mut vecs) = (Vec::new(), Vec::new());
    for b in r {
        let b = b.map_err(|e| parquet_err(path, e))?;
        let id = b.column_by_name("id").ok_or_else(|| parquet_err(path, "no id column"))?;
        ids.extend(id.as_string::<i32>().iter().map(|s| s.unwrap_or_default().to_string()));
        let emb = b.column_by_name("embedding").ok_or_else(|| parquet_err(path, "no embedding column"))?;
        let list = emb.as_fixed_size_list();
        if list.value_type() == DataType::Float32 {
            for i in 0..list.len() {
                vecs.push(list.value(i).as_primitive::<arrow_array::types::Float32Type>().values().to_vec());
            }
        }
    }
    Ok((ids, vecs))
}

/// The ids of a part, any vector type (for `--verify`).
pub fn read_ids(path: &Path) -> Result<Vec<String>> {
    use parquet::arrow::ProjectionMask;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| parquet_err(path, e))?;
    let mask = ProjectionMask::roots(b.parquet_schema(), [0]);
    let r = b.with_projection(mask).build().map_err(|e| parquet_err(path, e))?;
    let mut ids = Vec::new();
    for b in r {
        let b = b.map_err(|e| parquet_err(path, e))?;
        ids.extend(b.column(0).as_string::<i32>().iter().map(|s| s.unwrap_or_default().to_string()));
    }
    Ok(ids)
}
