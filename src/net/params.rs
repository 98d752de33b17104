//! Where a net reads its parameters and writes its gradients, layer by layer: the seam through
//! which a strategy hands the net slices of its flat buffers (whole, or bucket by bucket).

use std::ops::Range;

/// Where forward reads each layer's parameters from.
pub trait ParamSource {
    /// The parameters of layer `i`, whose range in the flat buffer is `range`.
    fn params(&self, i: usize, range: Range<usize>) -> &[f32];
}

impl ParamSource for [f32] {
    fn params(&self, _i: usize, range: Range<usize>) -> &[f32] {
        &self[range]
    }
}

/// Where backward reads parameters and writes gradients, per layer: the whole flat buffers
/// (`Flat`), or pieces of them handed out per layer (a data-parallel strategy gives each bucket
/// away once it is complete).
pub trait GradSink: ParamSource {
    /// The parameters and gradient slice of layer `i` (range `range` of the flat buffers).
    fn layer(&mut self, i: usize, range: Range<usize>) -> (&[f32], &mut [f32]);
    /// Layer `i`'s gradients are final for this pass.
    fn done(&mut self, _i: usize) {}
}

/// Whole flat parameter and gradient buffers.
pub struct Flat<'a> {
    /// Parameters.
    pub params: &'a [f32],
    /// Gradients (accumulated into).
    pub grads: &'a mut [f32],
}

impl ParamSource for Flat<'_> {
    fn params(&self, _i: usize, range: Range<usize>) -> &[f32] {
        &self.params[range]
    }
}

impl GradSink for Flat<'_> {
    fn layer(&mut self, _i: usize, range: Range<usize>) -> (&[f32], &mut [f32]) {
        (&self.params[range.clone()], &mut self.grads[range])
    }
}
