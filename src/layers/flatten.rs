//! Flatten: (N, C, H, W) → (N, C·H·W). A copy into the net-owned output; the data order is
//! unchanged (row-major), which is PyTorch's `nn.Flatten` order.

use super::{check_input, Ctx, Layer, LayerError};
use crate::tensor::Tensor;

/// Flattens all but the batch dimension.
pub struct Flatten {
    shape: Vec<usize>,
}

impl Flatten {
    /// A flatten for per-sample inputs of `in_shape`.
    pub fn new(in_shape: &[usize]) -> Result<Flatten, LayerError> {
        if in_shape.is_empty() || in_shape.contains(&0) {
            return Err(LayerError::Config { op: "flatten", msg: format!("input shape {in_shape:?} has no elements") });
        }
        Ok(Flatten { shape: in_shape.to_vec() })
    }
}

impl Layer for Flatten {
    fn kind(&self) -> &'static str {
        "flatten"
    }

    fn out_shape(&self) -> Vec<usize> {
        vec![self.shape.iter().product()]
    }

    /// # Shapes
    /// x: (N, ...) → y: (N, prod(...))
    fn forward(&mut self, _ctx: &Ctx, _p: &[f32], x: &Tensor, y: &mut Tensor) -> Result<(), LayerError> {
        let n = check_input("flatten", x, &self.shape)?;
        y.resize(&[n, self.shape.iter().product()]);
        y.data_mut().copy_from_slice(x.data());
        Ok(())
    }

    fn backward(
        &mut self,
        _ctx: &Ctx,
        _p: &[f32],
        _dp: &mut [f32],
        x: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
    ) -> Result<(), LayerError> {
        if let Some(dx) = dx {
            dx.resize(x.shape());
            dx.data_mut().copy_from_slice(dy.data());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{gradcheck::*, Mode};

    #[test]
    fn flattens_and_checks() {
        let mut l = Flatten::new(&[2, 3, 1]).unwrap();
        assert_eq!(l.out_shape(), vec![6]);
        let x = random_tensor(&[3, 2, 3, 1], 2);
        check_layer(&mut l, &Ctx::simple(Mode::Train), &x, &[], Tolerance::default()).unwrap();
        let mut y = Tensor::default();
        l.forward(&Ctx::simple(Mode::Eval), &[], &x, &mut y).unwrap();
        assert_eq!(y.shape(), &[3, 6]);
        assert_eq!(y.data(), x.data());
        assert!(Flatten::new(&[2, 0]).is_err());
        assert!(l.forward(&Ctx::simple(Mode::Eval), &[], &Tensor::zeros(&[3, 6]), &mut y).is_err());
    }
}
