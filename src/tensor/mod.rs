//! Dense f32 tensors in NCHW layout, the GEMM wrapper, im2col/col2im, the seeded RNG and the
//! PyTorch-default initialisers.
//!
//! A `Tensor` is a shape plus one contiguous `Vec<f32>`; it deliberately has no strides, no views
//! and no autograd: layers own the math, and the flat parameter buffers live in `net::ParamLayout`.

pub mod backend;
pub mod direct_conv;
pub mod direct_oc;
#[cfg(feature = "dnnl")]
pub mod dnnl;
pub mod engine;
pub mod gemm;
pub mod im2col;
pub mod init;
pub mod rng;
pub mod simd;
pub mod winograd;

use thiserror::Error;

/// Errors from building tensors out of outside data.
#[derive(Debug, Error)]
pub enum TensorError {
    /// The data length does not match the product of the shape.
    #[error("tensor data has {got} elements but shape {shape:?} needs {expected}")]
    LenMismatch {
        /// The requested shape.
        shape: Vec<usize>,
        /// Product of the shape.
        expected: usize,
        /// Length of the data given.
        got: usize,
    },
}

/// A dense, contiguous, row-major f32 tensor (NCHW for images).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor { shape: shape.to_vec(), data: vec![0.0; shape.iter().product()] }
    }

    /// Wraps `data` as a tensor of `shape`; the lengths must agree.
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<Self, TensorError> {
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(TensorError::LenMismatch { shape: shape.to_vec(), expected, got: data.len() });
        }
        Ok(Tensor { shape: shape.to_vec(), data })
    }

    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Size of dimension `i`.
    pub fn dim(&self, i: usize) -> usize {
        self.shape[i]
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The elements, row-major, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Takes the data out, consuming the tensor.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// Sets a new shape, reusing the allocation (no allocation once the buffer has been as large
    /// before). Element values are unspecified afterwards: callers overwrite or `fill`.
    pub fn resize(&mut self, shape: &[usize]) {
        if self.shape != shape {
            self.shape.clear();
            self.shape.extend_from_slice(shape);
        }
        let n: usize = shape.iter().product();
        self.data.resize(n, 0.0);
    }

    /// Sets every element to `v`.
    pub fn fill(&mut self, v: f32) {
        self.data.fill(v);
    }

    /// Element count of one sample (all dimensions but the first).
    pub fn sample_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }
}
