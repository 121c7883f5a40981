//! Choosing the device a process computes on: the CPU, or CUDA device `n` when the binary was
//! built with the `cuda` feature and the device exists. Errors say which of the two is missing.
use candle_core::Device;

use crate::{Error, Result};

/// Whether this binary can compute on CUDA devices.
pub const CUDA_BUILD: bool = cfg!(feature = "cuda");

/// CUDA device `n`, or an error saying that this binary has no CUDA, that no driver answers, or
/// how many devices this node has.
pub fn cuda_device(n: usize) -> Result<Device> {
    #[cfg(feature = "cuda")]
    {
        let count = cudarc::driver::CudaContext::device_count().map_err(|e| {
            Error::Training(format!(
                "CUDA device {n}: no usable CUDA driver on this node ({e})"
            ))
        })?;
        if n >= count.max(0) as usize {
            return Err(Error::Training(format!(
                "CUDA device {n} does not exist: this node has {count} CUDA device(s), numbered from 0"
            )));
        }
        Device::new_cuda(n).map_err(|e| Error::Training(format!("CUDA device {n}: {e}")))
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(Error::Training(format!(
            "CUDA device {n} asked for, but this binary was built without the `cuda` feature: use the CPU, or build with --features cuda (scripts/build-cuda.sh)"
        )))
    }
}

/// A short description of `device` for logs and the coordinator's worker list.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => match device.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            other => format!("{other:?}"),
        },
        Device::Metal(_) => "metal".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_build_refuses_cuda_by_name() {
        if CUDA_BUILD {
            return;
        }
        let err = cuda_device(0).unwrap_err().to_string();
        assert!(
            err.contains("CUDA device 0") && err.contains("without the `cuda` feature"),
            "{err}"
        );
        assert_eq!(describe(&Device::Cpu), "cpu");
    }
}
