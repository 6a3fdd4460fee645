//! Device choice: CPU always; CUDA and Metal when built with their features.

use candle_core::Device;

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    Cuda(usize),
    Metal(usize),
    /// The first accelerator compiled in and present, else the CPU.
    Auto,
}

impl DeviceChoice {
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        let idx = |rest: &str| -> Result<usize> {
            if rest.is_empty() {
                return Ok(0);
            }
            rest.strip_prefix(':')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| Error::InvalidInput(format!("bad device `{s}` (use cpu, cuda[:N], metal[:N] or auto)")))
        };
        match s.as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "auto" => Ok(DeviceChoice::Auto),
            _ if s.starts_with("cuda") => Ok(DeviceChoice::Cuda(idx(&s[4..])?)),
            _ if s.starts_with("metal") => Ok(DeviceChoice::Metal(idx(&s[5..])?)),
            _ => Err(Error::InvalidInput(format!("bad device `{s}` (use cpu, cuda[:N], metal[:N] or auto)"))),
        }
    }

    pub fn open(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(i) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(Error::InvalidInput(
                        "this build has no CUDA support (build with --features cuda)".into(),
                    ));
                }
                Ok(Device::new_cuda(i)?)
            }
            DeviceChoice::Metal(i) => {
                if !candle_core::utils::metal_is_available() {
                    return Err(Error::InvalidInput(
                        "this build has no Metal support (build with --features metal)".into(),
                    ));
                }
                Ok(Device::new_metal(i)?)
            }
            DeviceChoice::Auto => {
                if candle_core::utils::cuda_is_available() {
                    if let Ok(d) = Device::new_cuda(0) {
                        return Ok(d);
                    }
                }
                if candle_core::utils::metal_is_available() {
                    if let Ok(d) = Device::new_metal(0) {
                        return Ok(d);
                    }
                }
                Ok(Device::Cpu)
            }
        }
    }
}
