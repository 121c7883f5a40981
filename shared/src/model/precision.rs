//! The arithmetic of the convolutions, which hold nearly all of the network's FLOPs:
//! `f32` (the default, for fidelity: strict FP32, as the seed's model with TF32 off), `tf32`
//! (FP32 data, TensorFloat-32 tensor-core products in cuDNN) or `bf16` (bfloat16 inputs and
//! weights with FP32 accumulation; batch norm, the head, the loss, the gradients' sums and the
//! master weights stay FP32, as PyTorch's autocast). `tf32` and `bf16` need a CUDA device.
use std::fmt;

use serde::{Deserialize, Serialize};

/// See the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Strict FP32.
    #[default]
    F32,
    /// FP32 data, TF32 tensor-core convolutions.
    Tf32,
    /// bfloat16 convolutions, FP32 everything else.
    Bf16,
}

impl Precision {
    /// Whether this precision can run on `device` (`f32` everywhere, the others on CUDA).
    pub fn check_device(self, device: &candle_core::Device) -> crate::Result<()> {
        if self != Precision::F32 && !device.is_cuda() {
            return Err(crate::Error::Training(format!(
                "precision {self} needs a CUDA device (this worker computes on the CPU): use precision = \"f32\""
            )));
        }
        Ok(())
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("precision {other:?}: expected f32, tf32 or bf16")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_cpu_refuses_reduced_precision() {
        for p in [Precision::F32, Precision::Tf32, Precision::Bf16] {
            assert_eq!(p.to_string().parse::<Precision>(), Ok(p));
        }
        assert!("fp16".parse::<Precision>().unwrap_err().contains("fp16"));
        let cpu = candle_core::Device::Cpu;
        assert!(Precision::F32.check_device(&cpu).is_ok());
        let err = Precision::Bf16.check_device(&cpu).unwrap_err().to_string();
        assert!(err.contains("bf16") && err.contains("CUDA"), "{err}");
    }
}
