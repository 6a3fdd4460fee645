//! Loading MLX affine-quantized tensors: `P.weight` (packed u32 codes), `P.scales` and `P.biases`
//! (kept in the checkpoint's float dtype, usually bf16/f16; the codes stay packed). Bits and group size
//! follow from the shapes (`packed_cols * 32 / bits == k == scales_cols * group_size`) and are
//! checked against the config entry when one is given.
//!
//! These tensors are read from the file with positioned reads instead of through the memory map:
//! the packed copy is the one kept, and mapped pages would otherwise stay resident next to it and
//! double the peak memory of a large model.

use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use super::qkernel::{AffineWeight, GroupParams};
use crate::spec::{QuantMode, QuantParams};
use crate::{Error, Result};

/// Where one tensor's bytes are in its file (from the safetensors header).
#[derive(Debug, Clone)]
pub struct RawEntry {
    pub file: PathBuf,
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Absolute byte offset in the file.
    pub offset: u64,
    pub len: u64,
}

impl RawEntry {
    /// The element count for `size`-byte elements, checked against the stored bytes before
    /// anything is allocated (the shape comes from an untrusted header).
    fn elements(&self, size: usize) -> Result<usize> {
        let n = self.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        match n.and_then(|n| n.checked_mul(size)) {
            Some(bytes) if bytes as u64 == self.len => Ok(n.unwrap_or(0)),
            _ => Err(Error::weights(
                &self.file,
                format!("tensor of shape {:?} does not match its {} stored bytes", self.shape, self.len),
            )),
        }
    }

    fn read_bytes_into(&self, buf: &mut [u8]) -> Result<()> {
        if buf.len() as u64 != self.len {
            return Err(Error::weights(&self.file, format!("tensor holds {} bytes, expected {}", self.len, buf.len())));
        }
        let f = File::open(&self.file).map_err(|e| Error::io(&self.file, e))?;
        read_exact_at(&f, buf, self.offset).map_err(|e| Error::io(&self.file, e))
    }

    /// u32 tensor, little-endian as stored.
    pub fn read_u32(&self) -> Result<Vec<u32>> {
        let n = self.elements(4)?;
        let mut v = vec![0u32; n];
        self.read_bytes_into(bytemuck::cast_slice_mut(&mut v))?;
        if cfg!(target_endian = "big") {
            for x in &mut v {
                *x = u32::from_le(*x);
            }
        }
        Ok(v)
    }

    /// A float tensor (F32, F16, BF16) as f32.
    pub fn read_f32(&self) -> Result<Vec<f32>> {
        Ok(self.read_params()?.to_f32().into_owned())
    }

    /// A float tensor (F32, F16, BF16) in its own type.
    pub fn read_params(&self) -> Result<GroupParams> {
        let bytes_per = match self.dtype.as_str() {
            "F32" => 4,
            "F16" | "BF16" => 2,
            d => return Err(Error::weights(&self.file, format!("expected a float tensor, found dtype {d}"))),
        };
        let n = self.elements(bytes_per)?;
        if bytes_per == 4 {
            let mut v = vec![0f32; n];
            self.read_bytes_into(bytemuck::cast_slice_mut(&mut v))?;
            if cfg!(target_endian = "big") {
                v.iter_mut().for_each(|x| *x = f32::from_bits(u32::from_le(x.to_bits())));
            }
            return Ok(GroupParams::F32(v));
        }
        let mut v = vec![0u16; n];
        self.read_bytes_into(bytemuck::cast_slice_mut(&mut v))?;
        if cfg!(target_endian = "big") {
            v.iter_mut().for_each(|x| *x = u16::from_le(*x));
        }
        Ok(match self.dtype.as_str() {
            "F16" => GroupParams::F16(v.into_iter().map(f16::from_bits).collect()),
            _ => GroupParams::Bf16(v.into_iter().map(bf16::from_bits).collect()),
        })
    }
}

#[cfg(unix)]
fn read_exact_at(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(mut f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

/// The three tensors of one quantized layer.
pub struct QuantTensors<'a> {
    pub weight: &'a RawEntry,
    pub scales: &'a RawEntry,
    pub biases: Option<&'a RawEntry>,
}

/// Load layer `prefix` as an [n, k] affine weight. `expected` are the config's parameters for
/// this layer, when the config has an entry.
pub fn load_affine(
    path: &Path,
    prefix: &str,
    t: QuantTensors<'_>,
    n: usize,
    k: usize,
    expected: Option<QuantParams>,
) -> Result<AffineWeight> {
    let bad = |m: String| Error::weights(path, format!("quantized layer `{prefix}`: {m}"));
    let (ws, ss) = (&t.weight.shape, &t.scales.shape);
    if t.scales.dtype == "U8" || t.biases.is_none() {
        // MX/NV floating-point modes: uint8 (E8M0/E4M3) scales and no biases.
        let mode = match expected.map(|p| p.mode) {
            Some(m) if m != QuantMode::Affine => m.as_str(),
            _ if ss.len() == 2 && ss[1] > 0 && k / ss[1] == 16 => "nvfp4",
            _ if ws.len() == 2 && ws[1] * 32 == k * 8 => "mxfp8",
            _ => "mxfp4",
        };
        return Err(bad(format!(
            "quantization mode `{mode}` (uint8 scales, no biases) is not supported; embedrank loads MLX `affine` quantization only"
        )));
    }
    if t.weight.dtype != "U32" {
        return Err(bad(format!("packed weight has dtype {}, expected U32", t.weight.dtype)));
    }
    if ws.len() != 2 || ss.len() != 2 || ws[0] != n || ss[0] != n || ws[1] == 0 || ss[1] == 0 {
        return Err(bad(format!("packed weight {ws:?} / scales {ss:?} do not fit a [{n}, {k}] weight")));
    }
    let biases =
        t.biases.filter(|b| &b.shape == ss).ok_or_else(|| bad(format!("biases must have the scales' shape {ss:?}")))?;
    if (ws[1] * 32) % k != 0 || !k.is_multiple_of(ss[1]) {
        return Err(bad(format!("packed weight {ws:?} / scales {ss:?} do not fit a [{n}, {k}] weight")));
    }
    let bits = (ws[1] * 32 / k) as u32;
    let group_size = k / ss[1];
    if let Some(p) = expected {
        if p.bits != bits || p.group_size != group_size {
            return Err(bad(format!(
                "config says {} bits, group size {}, but the tensors hold {bits} bits, group size {group_size}",
                p.bits, p.group_size
            )));
        }
    }
    let packed = t.weight.read_u32()?;
    let scales = t.scales.read_params()?;
    let biases = biases.read_params()?;
    AffineWeight::with_params(bits, group_size, n, k, packed, scales, biases).map_err(|e| bad(e.to_string()))
}
