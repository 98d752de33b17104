//! Output-size arithmetic of convolution and pooling windows, in one place.
//!
//! PyTorch: out = floor((in + 2p − d(k−1) − 1)/s) + 1, or ceil(...) + 1 in ceil mode, where a
//! window that would start inside the right padding is dropped (torch/nn/functional.py,
//! `pooling_output_shape`). Caffe's pooling always rounds up and applies the same drop rule.

use super::LayerError;

/// Window geometry along one spatial axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Axis {
    /// Input size.
    pub input: usize,
    /// Kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub pad: usize,
    /// Dilation (1 = dense).
    pub dilation: usize,
}

impl Axis {
    /// Output size, or a config error naming `op` when the window does not fit.
    pub fn out(&self, op: &'static str, ceil_mode: bool) -> Result<usize, LayerError> {
        let err = |msg: String| Err(LayerError::Config { op, msg });
        if self.kernel == 0 || self.stride == 0 || self.dilation == 0 {
            return err(format!(
                "kernel, stride and dilation must be ≥ 1 (got k={} s={} d={})",
                self.kernel, self.stride, self.dilation
            ));
        }
        let span = self.dilation * (self.kernel - 1) + 1;
        let padded = self.input + 2 * self.pad;
        if padded < span {
            return err(format!(
                "kernel span {span} is larger than the padded input {padded} (input {} + 2×pad {}); hint: use a smaller kernel or more padding",
                self.input, self.pad
            ));
        }
        let num = padded - span;
        let mut out = if ceil_mode { num.div_ceil(self.stride) + 1 } else { num / self.stride + 1 };
        // In ceil mode the last window must start inside the input or left padding.
        if ceil_mode && (out - 1) * self.stride >= self.input + self.pad {
            out -= 1;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ax(input: usize, kernel: usize, stride: usize, pad: usize) -> Axis {
        Axis { input, kernel, stride, pad, dilation: 1 }
    }

    #[test]
    fn matches_pytorch_formula() {
        assert_eq!(ax(28, 5, 1, 2).out("t", false).unwrap(), 28);
        assert_eq!(ax(28, 2, 2, 0).out("t", false).unwrap(), 14);
        // AlexNet pool: 55 → 27 with k3 s2.
        assert_eq!(ax(55, 3, 2, 0).out("t", false).unwrap(), 27);
        // ceil mode: 6 with k3 s2 → floor 2, ceil 3 (PyTorch MaxPool2d(3, 2, ceil_mode=True)).
        assert_eq!(ax(6, 3, 2, 0).out("t", false).unwrap(), 2);
        assert_eq!(ax(6, 3, 2, 0).out("t", true).unwrap(), 3);
        // ceil mode drop rule: in 5, k2 s2 p1 → ceil gives 4 but the last window starts in padding.
        assert_eq!(ax(5, 2, 2, 1).out("t", true).unwrap(), 3);
        let dil = Axis { input: 10, kernel: 3, stride: 1, pad: 0, dilation: 2 };
        assert_eq!(dil.out("t", false).unwrap(), 6);
        assert!(ax(2, 5, 1, 0).out("t", false).is_err());
        assert!(ax(2, 1, 0, 0).out("t", false).is_err());
    }
}
