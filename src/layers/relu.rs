//! ReLU: y = max(x, 0). Backward uses the output (dx = dy where y > 0), so it needs no cache.

use super::{check_input, Ctx, Layer, LayerError};
use crate::tensor::Tensor;

/// Rectified linear unit.
pub struct Relu {
    shape: Vec<usize>,
}

impl Relu {
    /// A ReLU for per-sample inputs of `in_shape`.
    pub fn new(in_shape: &[usize]) -> Result<Relu, LayerError> {
        if in_shape.is_empty() {
            return Err(LayerError::Config { op: "relu", msg: "input shape is empty".into() });
        }
        Ok(Relu { shape: in_shape.to_vec() })
    }
}

impl Layer for Relu {
    fn kind(&self) -> &'static str {
        "relu"
    }

    fn out_shape(&self) -> Vec<usize> {
        self.shape.clone()
    }

    /// # Shapes
    /// x: (N, ...) → y: (N, ...)
    fn forward(&mut self, ctx: &Ctx, _p: &[f32], x: &Tensor, y: &mut Tensor) -> Result<(), LayerError> {
        check_input("relu", x, &self.shape)?;
        y.resize(x.shape());
        super::par_zip2(ctx.threads, y.data_mut(), x.data(), |y, x| {
            for (o, &i) in y.iter_mut().zip(x) {
                *o = i.max(0.0);
            }
        });
        Ok(())
    }

    fn backward(
        &mut self,
        ctx: &Ctx,
        _p: &[f32],
        _dp: &mut [f32],
        x: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
    ) -> Result<(), LayerError> {
        if let Some(dx) = dx {
            dx.resize(x.shape());
            super::par_zip3(ctx.threads, dx.data_mut(), dy.data(), y.data(), |dx, dy, y| {
                for ((d, &g), &o) in dx.iter_mut().zip(dy).zip(y) {
                    *d = if o > 0.0 { g } else { 0.0 };
                }
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{gradcheck::*, Mode};

    #[test]
    fn gradcheck_away_from_the_kink() {
        let mut x = random_tensor(&[3, 2, 3, 5], 1);
        // Keep |x| ≥ 0.05 so ±eps never crosses zero.
        x.data_mut().iter_mut().for_each(|v| *v = if v.abs() < 0.05 { 0.05_f32.copysign(*v) } else { *v });
        let mut l = Relu::new(&[2, 3, 5]).unwrap();
        check_layer(&mut l, &Ctx::simple(Mode::Train), &x, &[], Tolerance::default()).unwrap();
    }

    #[test]
    fn hand_computed_values_and_shape_errors() {
        let mut l = Relu::new(&[4]).unwrap();
        let x = Tensor::from_vec(&[1, 4], vec![-1.0, 0.0, 2.0, -0.5]).unwrap();
        let mut y = Tensor::default();
        l.forward(&Ctx::simple(Mode::Eval), &[], &x, &mut y).unwrap();
        assert_eq!(y.data(), &[0.0, 0.0, 2.0, 0.0]);
        let dy = Tensor::from_vec(&[1, 4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let mut dx = Tensor::default();
        l.backward(&Ctx::simple(Mode::Train), &[], &mut [], &x, &y, &dy, Some(&mut dx)).unwrap();
        assert_eq!(dx.data(), &[0.0, 0.0, 3.0, 0.0]);
        let bad = Tensor::zeros(&[1, 5]);
        assert!(matches!(l.forward(&Ctx::simple(Mode::Eval), &[], &bad, &mut y), Err(LayerError::Shape { .. })));
        assert!(Relu::new(&[]).is_err());
    }
}
