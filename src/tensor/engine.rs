//! What an external library's engine for one layer is (the backend seam's trait, `LayerEngine`)
//! and the shape it is built for (`ConvDesc`); backend.rs chooses and builds engines, the
//! libraries (dnnl/) implement them.

use super::im2col::ConvShape;

/// The shape of a convolution (PyTorch's `nn.Conv2d` parameters for one sample).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvDesc {
    /// One group's geometry: its input channels, the input and output sizes, kernel, stride,
    /// padding (each side) and dilation.
    pub shape: ConvShape,
    /// Output channels, all groups.
    pub o: usize,
    /// Groups.
    pub groups: usize,
    /// With a bias.
    pub bias: bool,
}

/// A layer of one shape (a convolution, a linear layer) run by an external library. Buffers are
/// the native layer's: plain NCHW or (N, features) for `x`, `y`, `dy`, `dx` (any batch size N),
/// weights (O, C/groups, kh, kw) or (out, in), bias (O).
pub trait LayerEngine: Send {
    /// The implementation the library chose, for per-layer tables ("dnnl:jit:avx512_core").
    fn name(&self) -> &'static str;

    /// y = conv(x, w) + b on `threads` threads.
    fn forward(&mut self, threads: usize, w: &[f32], b: Option<&[f32]>, x: &[f32], y: &mut [f32])
        -> Result<(), String>;

    /// ACCUMULATES the weight and bias gradients into `dw` and `db` (as every layer's backward
    /// does) and, when given, writes the input gradient into `dx`.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &mut self,
        threads: usize,
        w: &[f32],
        x: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        dw: &mut [f32],
        db: Option<&mut [f32]>,
    ) -> Result<(), String>;
}
