//! A state dict on the host: named tensors in a fixed order, the currency between the model,
//! PyTorch checkpoints (`model.pth`) and our safetensors files. Names are PyTorch's
//! (`conv1.weight`, `resblock1d_1.skip_connection.1.weight`, `bn1.num_batches_tracked`, ...).
use crate::{Error, Result};

/// The values of one tensor, in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// 32-bit floats (every weight and running statistic of the model).
    F32(Vec<f32>),
    /// 64-bit floats (accepted on load and converted).
    F64(Vec<f64>),
    /// 64-bit integers (`num_batches_tracked`).
    I64(Vec<i64>),
}

impl TensorData {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dtype's name as PyTorch spells it (`float32`, `float64`, `int64`).
    pub fn dtype_name(&self) -> &'static str {
        match self {
            TensorData::F32(_) => "float32",
            TensorData::F64(_) => "float64",
            TensorData::I64(_) => "int64",
        }
    }
}

/// One named tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    /// PyTorch's key.
    pub name: String,
    /// Shape; empty for a scalar.
    pub shape: Vec<usize>,
    /// Values; `data.len()` is the product of `shape` (1 for a scalar).
    pub data: TensorData,
}

impl NamedTensor {
    /// A tensor, checked: the number of values must match the shape.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: TensorData) -> Result<Self> {
        let name = name.into();
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::Training(format!(
                "tensor {name:?}: shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        Ok(Self { name, shape, data })
    }

    /// The values as `f32` (float64 rounded); an error naming the tensor for integers.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        match &self.data {
            TensorData::F32(v) => Ok(v.clone()),
            TensorData::F64(v) => Ok(v.iter().map(|&x| x as f32).collect()),
            TensorData::I64(_) => Err(Error::Training(format!(
                "tensor {:?} holds int64 values where floats are expected",
                self.name
            ))),
        }
    }
}

/// Named tensors in order (file order on load, registration order from the model).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateDict {
    tensors: Vec<NamedTensor>,
}

impl StateDict {
    /// An empty state dict.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a tensor; refuses a name already present.
    pub fn push(&mut self, t: NamedTensor) -> Result<()> {
        if self.get(&t.name).is_some() {
            return Err(Error::Training(format!(
                "duplicate tensor name {:?}",
                t.name
            )));
        }
        self.tensors.push(t);
        Ok(())
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// All tensors in order.
    pub fn tensors(&self) -> &[NamedTensor] {
        &self.tensors
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}
