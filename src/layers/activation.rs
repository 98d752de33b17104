//! Elementwise activations Sigmoid and Tanh, a per-sample Softmax over the features, and global
//! average pooling (PyTorch's `AdaptiveAvgPool2d(1)`). None has parameters; backward uses the
//! saved output (y) or the input size only.

use super::{check_input, Ctx, Layer, LayerError};
use crate::tensor::Tensor;

/// Which function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 1 / (1 + e^−x); dx = dy · y(1 − y).
    Sigmoid,
    /// tanh x; dx = dy · (1 − y²).
    Tanh,
    /// Per sample over all its values: e^x / Σ e^x; dx = y ⊙ (dy − Σ dy ⊙ y).
    Softmax,
    /// (N, C, H, W) → (N, C, 1, 1), the mean of each channel; dx = dy / (H·W).
    GlobalAvgPool,
}

/// A parameter-free activation layer.
pub struct Activation {
    kind: Kind,
    shape: Vec<usize>,
}

impl Activation {
    /// The layer for per-sample inputs of `in_shape`.
    pub fn new(kind: Kind, in_shape: &[usize]) -> Result<Activation, LayerError> {
        let op = Activation::op(kind);
        if in_shape.is_empty() || in_shape.contains(&0) {
            return Err(LayerError::Config { op, msg: format!("input shape {in_shape:?} is empty") });
        }
        if kind == Kind::GlobalAvgPool && in_shape.len() != 3 {
            return Err(LayerError::Config {
                op,
                msg: format!("needs (C, H, W) input, got {in_shape:?}; hint: put it after a convolution"),
            });
        }
        Ok(Activation { kind, shape: in_shape.to_vec() })
    }

    fn op(kind: Kind) -> &'static str {
        match kind {
            Kind::Sigmoid => "sigmoid",
            Kind::Tanh => "tanh",
            Kind::Softmax => "softmax",
            Kind::GlobalAvgPool => "global_avg_pool",
        }
    }
}

impl Layer for Activation {
    fn kind(&self) -> &'static str {
        Activation::op(self.kind)
    }

    fn out_shape(&self) -> Vec<usize> {
        match self.kind {
            Kind::GlobalAvgPool => vec![self.shape[0], 1, 1],
            _ => self.shape.clone(),
        }
    }

    fn forward(&mut self, _ctx: &Ctx, _p: &[f32], x: &Tensor, y: &mut Tensor) -> Result<(), LayerError> {
        let n = check_input(self.kind(), x, &self.shape)?;
        // The shape on the stack: a step allocates nothing.
        match self.kind {
            Kind::GlobalAvgPool => y.resize(&[n, self.shape[0], 1, 1]),
            _ => y.resize(x.shape()),
        }
        let per = x.sample_len();
        match self.kind {
            Kind::Sigmoid => y.data_mut().iter_mut().zip(x.data()).for_each(|(o, &i)| *o = 1.0 / (1.0 + (-i).exp())),
            Kind::Tanh => y.data_mut().iter_mut().zip(x.data()).for_each(|(o, &i)| *o = i.tanh()),
            Kind::Softmax => {
                for (o, i) in y.data_mut().chunks_mut(per).zip(x.data().chunks(per)) {
                    let m = i.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0f64;
                    for (o, &v) in o.iter_mut().zip(i) {
                        *o = (v - m).exp();
                        sum += *o as f64;
                    }
                    o.iter_mut().for_each(|v| *v = (*v as f64 / sum) as f32);
                }
            }
            Kind::GlobalAvgPool => {
                let hw = self.shape[1] * self.shape[2];
                for (o, i) in y.data_mut().iter_mut().zip(x.data().chunks(hw)) {
                    *o = (i.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32;
                }
            }
        }
        Ok(())
    }

    fn backward(
        &mut self,
        _ctx: &Ctx,
        _p: &[f32],
        _dp: &mut [f32],
        x: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
    ) -> Result<(), LayerError> {
        let Some(dx) = dx else { return Ok(()) };
        dx.resize(x.shape());
        let (yd, g) = (y.data(), dy.data());
        match self.kind {
            Kind::Sigmoid => dx.data_mut().iter_mut().enumerate().for_each(|(k, d)| *d = g[k] * yd[k] * (1.0 - yd[k])),
            Kind::Tanh => dx.data_mut().iter_mut().enumerate().for_each(|(k, d)| *d = g[k] * (1.0 - yd[k] * yd[k])),
            Kind::Softmax => {
                let per = x.sample_len();
                for ((d, yv), gv) in dx.data_mut().chunks_mut(per).zip(yd.chunks(per)).zip(g.chunks(per)) {
                    let dot: f64 = yv.iter().zip(gv).map(|(&a, &b)| a as f64 * b as f64).sum();
                    for ((d, &a), &b) in d.iter_mut().zip(yv).zip(gv) {
                        *d = (a as f64 * (b as f64 - dot)) as f32;
                    }
                }
            }
            Kind::GlobalAvgPool => {
                let hw = self.shape[1] * self.shape[2];
                for (d, &gv) in dx.data_mut().chunks_mut(hw).zip(g) {
                    d.fill(gv / hw as f32);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{gradcheck::*, Mode};

    fn run(kind: Kind, shape: &[usize], x: Vec<f32>, dy: Vec<f32>) -> (Vec<f32>, Vec<f32>) {
        let mut l = Activation::new(kind, &shape[1..]).unwrap();
        let x = Tensor::from_vec(shape, x).unwrap();
        let mut y = Tensor::default();
        l.forward(&Ctx::simple(Mode::Train), &[], &x, &mut y).unwrap();
        let dy = Tensor::from_vec(y.shape(), dy).unwrap();
        let mut dx = Tensor::default();
        l.backward(&Ctx::simple(Mode::Train), &[], &mut [], &x, &y, &dy, Some(&mut dx)).unwrap();
        (y.data().to_vec(), dx.data().to_vec())
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 2e-6, "{a:?}\n{b:?}");
        }
    }

    // Golden values from PyTorch 2.15 (float64), produced by:
    //   x = torch.tensor([[-2.0, -0.5, 0.0, 0.7, 3.0], [1.5, -1.2, 0.3, 2.2, -0.1]], dtype=torch.float64, requires_grad=True)
    //   dy = torch.tensor([[0.3, -1.0, 0.5, 2.0, -0.7], [1.1, 0.2, -0.4, 0.6, 0.9]], dtype=torch.float64)
    //   for f in (torch.sigmoid, torch.tanh, lambda t: torch.softmax(t, dim=1)):
    //       y = f(x); (g,) = torch.autograd.grad(y, x, dy); print(y.flatten().tolist(), g.flatten().tolist())
    //   x4 = torch.arange(24, dtype=torch.float64).reshape(2, 3, 2, 2).requires_grad_(True)
    //   y = torch.nn.AdaptiveAvgPool2d(1)(x4); dy4 = torch.tensor([1.0, -2.0, 0.5, 4.0, 0.0, -1.0]).reshape(2, 3, 1, 1)
    //   (g,) = torch.autograd.grad(y, x4, dy4.double()); print(y.flatten().tolist(), g.flatten().tolist())
    #[test]
    fn golden_pytorch() {
        let x = vec![-2.0, -0.5, 0.0, 0.7, 3.0, 1.5, -1.2, 0.3, 2.2, -0.1];
        let dy = vec![0.3, -1.0, 0.5, 2.0, -0.7, 1.1, 0.2, -0.4, 0.6, 0.9];
        let (y, dx) = run(Kind::Sigmoid, &[2, 5], x.clone(), dy.clone());
        close(
            &y,
            &[0.1192029, 0.3775407, 0.5, 0.6681878, 0.9525741, 0.8175745, 0.2314752, 0.5744425, 0.9002495, 0.4750208],
        );
        close(
            &dx,
            &[
                0.0314981, -0.2350037, 0.125, 0.4434257, -0.0316237, 0.1640611, 0.0355789, -0.0977833, 0.0538802,
                0.2244384,
            ],
        );
        let (y, dx) = run(Kind::Tanh, &[2, 5], x.clone(), dy.clone());
        close(
            &y,
            &[
                -0.9640276, -0.4621172, 0.0, 0.6043678, 0.9950548, 0.9051483, -0.8336546, 0.2913126, 0.9757431,
                -0.099668,
            ],
        );
        close(
            &dx,
            &[0.0211952, -0.7864477, 0.5, 1.2694792, -0.0069062, 0.1987773, 0.061004, -0.3660548, 0.0287552, 0.8910597],
        );
        let (y, dx) = run(Kind::Softmax, &[2, 5], x, dy);
        close(
            &y,
            &[
                0.0056765, 0.0254405, 0.0419443, 0.0844654, 0.8424733, 0.279014, 0.0187513, 0.0840374, 0.5618653,
                0.056332,
            ],
        );
        close(
            &dx,
            &[
                0.0041074, -0.0146648, 0.0387383, 0.2047075, -0.2328883, 0.1214077, -0.0087169, -0.0894888, -0.0364475,
                0.0132454,
            ],
        );
        let (y, dx) = run(
            Kind::GlobalAvgPool,
            &[2, 3, 2, 2],
            (0..24).map(|v| v as f32).collect(),
            vec![1.0, -2.0, 0.5, 4.0, 0.0, -1.0],
        );
        close(&y, &[1.5, 5.5, 9.5, 13.5, 17.5, 21.5]);
        let want: Vec<f32> = [0.25f32, -0.5, 0.125, 1.0, 0.0, -0.25].iter().flat_map(|&v| [v; 4]).collect();
        close(&dx, &want);
    }

    #[test]
    fn gradcheck_every_kind() {
        for (kind, shape) in [
            (Kind::Sigmoid, vec![3, 2, 4]),
            (Kind::Tanh, vec![3, 7]),
            (Kind::Softmax, vec![2, 6]),
            (Kind::GlobalAvgPool, vec![2, 3, 3, 4]),
        ] {
            let x = random_tensor(&shape, 5);
            let mut l = Activation::new(kind, &shape[1..]).unwrap();
            check_layer(&mut l, &Ctx::simple(Mode::Train), &x, &[], Tolerance::default())
                .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(Activation::new(Kind::GlobalAvgPool, &[10]).is_err());
        assert!(Activation::new(Kind::Tanh, &[]).is_err());
        let mut l = Activation::new(Kind::Sigmoid, &[4]).unwrap();
        assert!(matches!(
            l.forward(&Ctx::simple(Mode::Eval), &[], &Tensor::zeros(&[1, 5]), &mut Tensor::default()),
            Err(LayerError::Shape { .. })
        ));
    }
}
