//! The element types the model's own operations accept (`f32` and `f64`), as one small trait
//! that the kernels are generic over: the arithmetic they need, and the conversion to Candle's CPU
//! storage so that each op dispatches on the dtype in one place.
use candle_core::CpuStorage;

/// A floating-point element type of the ops: `f32` or `f64`, the two types that both the `gemm`
/// crate and PyTorch's reference accept for these layers. Sealed: the `gemm` wrapper relies on
/// no other type implementing it.
pub(crate) trait Scalar:
    Copy
    + Send
    + Sync
    + PartialOrd
    + std::fmt::Debug
    + std::ops::Add<Output = Self>
    + std::ops::AddAssign
    + std::ops::Mul<Output = Self>
    + sealed::Sealed
    + 'static
{
    /// Additive identity.
    const ZERO: Self;
    /// Multiplicative identity.
    const ONE: Self;
    /// Negative infinity: the start value of a max reduction.
    const NEG_INFINITY: Self;
    /// Whether the value is a NaN.
    fn is_nan(self) -> bool;
    /// Wraps a vector of this type as Candle CPU storage.
    fn into_storage(data: Vec<Self>) -> CpuStorage;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

macro_rules! impl_scalar {
    ($t:ty, $variant:ident) => {
        impl Scalar for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn into_storage(data: Vec<Self>) -> CpuStorage {
                CpuStorage::$variant(data)
            }
        }
    };
}
impl_scalar!(f32, F32);
impl_scalar!(f64, F64);
