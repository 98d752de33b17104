//! Inverted dropout (PyTorch `nn.Dropout`): in training each element is zeroed with probability
//! p and the rest scaled by 1/(1 − p); in evaluation it is the identity.
//!
//! The mask of batch row i comes from `Rng::keyed([seed, layer, step, global sample id])`, one
//! uniform per element in order, so it depends on the sample and step only: every parallel
//! strategy (and every worker count) draws the same mask for the same sample.

use super::{check_input, Ctx, Layer, LayerError, Mode};
use crate::tensor::{rng::Rng, Tensor};

/// Dropout layer.
pub struct Dropout {
    p: f32,
    shape: Vec<usize>,
    /// Mask of the last training forward: 0 or 1/(1 − p) per element, (N, ...).
    mask: Vec<f32>,
    /// Mode of the last forward (backward of an eval forward is the identity).
    last_mode: Mode,
}

impl Dropout {
    /// Dropout with probability `p` ∈ [0, 1).
    pub fn new(p: f32, in_shape: &[usize]) -> Result<Dropout, LayerError> {
        if !(0.0..1.0).contains(&p) {
            return Err(LayerError::Config { op: "dropout", msg: format!("p = {p} must be in [0, 1)") });
        }
        if in_shape.is_empty() {
            return Err(LayerError::Config { op: "dropout", msg: "input shape is empty".into() });
        }
        Ok(Dropout { p, shape: in_shape.to_vec(), mask: Vec::new(), last_mode: Mode::Eval })
    }
}

impl Layer for Dropout {
    fn kind(&self) -> &'static str {
        "dropout"
    }

    fn out_shape(&self) -> Vec<usize> {
        self.shape.clone()
    }

    /// # Shapes
    /// x: (N, ...) → y: (N, ...)
    fn forward(&mut self, ctx: &Ctx, _p: &[f32], x: &Tensor, y: &mut Tensor) -> Result<(), LayerError> {
        let n = check_input("dropout", x, &self.shape)?;
        y.resize(x.shape());
        self.last_mode = ctx.mode;
        if ctx.mode == Mode::Eval || self.p == 0.0 {
            y.data_mut().copy_from_slice(x.data());
            return Ok(());
        }
        let per = x.sample_len();
        let scale = 1.0 / (1.0 - self.p);
        self.mask.resize(x.len(), 0.0);
        for i in 0..n {
            let mut rng = Rng::keyed(&[ctx.seed, ctx.layer as u64, ctx.step, ctx.sample_id(i)]);
            for m in &mut self.mask[i * per..(i + 1) * per] {
                *m = if rng.next_f32() < self.p { 0.0 } else { scale };
            }
        }
        for ((o, &v), &m) in y.data_mut().iter_mut().zip(x.data()).zip(&self.mask) {
            *o = v * m;
        }
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
            if self.last_mode == Mode::Eval || self.p == 0.0 {
                dx.data_mut().copy_from_slice(dy.data());
            } else {
                for ((d, &g), &m) in dx.data_mut().iter_mut().zip(dy.data()).zip(&self.mask) {
                    *d = g * m;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::*;

    fn ctx<'a>(ids: &'a [u64], step: u64) -> Ctx<'a> {
        Ctx {
            mode: Mode::Train,
            threads: 1,
            backend: crate::layers::Backend::Native,
            seed: 9,
            step,
            layer: 2,
            sample_ids: ids,
            sync: None,
        }
    }

    fn run(l: &mut Dropout, c: &Ctx, x: &Tensor) -> Tensor {
        let mut y = Tensor::default();
        l.forward(c, &[], x, &mut y).unwrap();
        y
    }

    #[test]
    fn mask_is_keyed_by_global_sample_and_step() {
        let mut l = Dropout::new(0.5, &[64]).unwrap();
        let x = Tensor::from_vec(&[2, 64], vec![1.0; 128]).unwrap();
        let a = run(&mut l, &ctx(&[10, 20], 0), &x);
        let b = run(&mut l, &ctx(&[20, 10], 0), &x);
        assert_eq!(&a.data()[..64], &b.data()[64..], "same sample, other position, same mask");
        assert_eq!(&a.data()[64..], &b.data()[..64]);
        let single = run(&mut l, &ctx(&[20], 0), &Tensor::from_vec(&[1, 64], vec![1.0; 64]).unwrap());
        assert_eq!(single.data(), &a.data()[64..], "same mask whatever the batch size (worker shard)");
        let c = run(&mut l, &ctx(&[10, 20], 1), &x);
        assert_ne!(a.data(), c.data(), "another step draws another mask");
        assert!(a.data().iter().all(|&v| v == 0.0 || v == 2.0));
    }

    #[test]
    fn drop_fraction_is_p_and_eval_is_identity() {
        let mut l = Dropout::new(0.3, &[1000]).unwrap();
        let x = Tensor::from_vec(&[4, 1000], vec![1.0; 4000]).unwrap();
        let ids = [0, 1, 2, 3];
        let y = run(&mut l, &ctx(&ids, 5), &x);
        let dropped = y.data().iter().filter(|&&v| v == 0.0).count() as f64 / 4000.0;
        assert!((dropped - 0.3).abs() < 0.03, "{dropped}");
        let mut e = Tensor::default();
        l.forward(&Ctx::simple(Mode::Eval), &[], &x, &mut e).unwrap();
        assert_eq!(e.data(), x.data());
    }

    #[test]
    fn gradcheck_train_and_eval() {
        let ids = [3, 1, 4];
        for mode in [Mode::Train, Mode::Eval] {
            let mut l = Dropout::new(0.4, &[2, 5]).unwrap();
            let x = random_tensor(&[3, 2, 5], 11);
            let c = Ctx { mode, ..ctx(&ids, 7) };
            check_layer(&mut l, &c, &x, &[], Tolerance::default()).unwrap();
        }
        assert!(Dropout::new(1.0, &[3]).is_err());
        assert!(Dropout::new(-0.1, &[3]).is_err());
    }
}
