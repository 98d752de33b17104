//! Fully connected layer, PyTorch `nn.Linear` semantics: y = x·Wᵀ + b, W stored [out, in].
//! Any per-sample input shape is read as flattened (like Caffe's InnerProduct), so a linear
//! layer can follow a convolution directly.

use super::{check_input, Ctx, Layer, LayerError, ParamSpec};
use crate::tensor::backend::{self, Backend, LayerEngine};
use crate::tensor::gemm::{sgemm, MatRef};
use crate::tensor::{init::Init, Tensor};

/// Configuration of a linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearConfig {
    /// Output features.
    pub out_features: usize,
    /// Learn a bias.
    pub bias: bool,
}

/// A fully connected layer.
pub struct Linear {
    cfg: LinearConfig,
    in_shape: Vec<usize>,
    in_features: usize,
    /// The external library running this layer when `Ctx::backend` is not native (made on the
    /// first call that asks for it), and the backend of the last call (for `kernel`).
    engine: Option<Box<dyn LayerEngine>>,
    backend: Backend,
}

impl Linear {
    /// A linear layer for per-sample inputs of `in_shape` (flattened).
    pub fn new(cfg: LinearConfig, in_shape: &[usize]) -> Result<Linear, LayerError> {
        let in_features: usize = in_shape.iter().product();
        if in_shape.is_empty() || in_features == 0 {
            return Err(LayerError::Config { op: "linear", msg: format!("input shape {in_shape:?} has no elements") });
        }
        if cfg.out_features == 0 {
            return Err(LayerError::Config { op: "linear", msg: "out_features must be at least 1".into() });
        }
        Ok(Linear { cfg, in_shape: in_shape.to_vec(), in_features, engine: None, backend: Backend::Native })
    }

    /// The engine of `backend` (made on first use), or `None` for the native GEMM.
    fn engine(&mut self, backend: Backend) -> Result<Option<&mut Box<dyn LayerEngine>>, LayerError> {
        let backend = backend.resolve(false);
        self.backend = backend;
        if backend == Backend::Native {
            return Ok(None);
        }
        if self.engine.is_none() {
            self.engine = backend::linear_engine(backend, self.in_features, self.cfg.out_features, self.cfg.bias)
                .map_err(|msg| LayerError::Config { op: "linear", msg })?;
        }
        Ok(self.engine.as_mut())
    }
}

impl Layer for Linear {
    fn kind(&self) -> &'static str {
        "linear"
    }

    fn out_shape(&self) -> Vec<usize> {
        vec![self.cfg.out_features]
    }

    fn params(&self) -> Vec<ParamSpec> {
        let fan_in = self.in_features;
        let mut v =
            vec![ParamSpec::param("weight", vec![self.cfg.out_features, fan_in], Init::KaimingUniform { fan_in })];
        if self.cfg.bias {
            v.push(ParamSpec::param("bias", vec![self.cfg.out_features], Init::UniformFanIn { fan_in }));
        }
        v
    }

    /// # Shapes
    /// p: weight (out, in) then bias (out); x: (N, in...) → y: (N, out)
    fn forward(&mut self, ctx: &Ctx, p: &[f32], x: &Tensor, y: &mut Tensor) -> Result<(), LayerError> {
        let n = check_input("linear", x, &self.in_shape)?;
        let (inf, outf) = (self.in_features, self.cfg.out_features);
        let (w, b) = p.split_at(inf * outf);
        y.resize(&[n, outf]);
        let bias = self.cfg.bias;
        if let Some(e) = self.engine(ctx.backend)? {
            return e
                .forward(ctx.threads, w, bias.then_some(b), x.data(), y.data_mut())
                .map_err(|msg| LayerError::Config { op: "linear", msg });
        }
        if self.cfg.bias {
            for row in y.data_mut().chunks_exact_mut(outf) {
                row.copy_from_slice(b);
            }
        }
        sgemm(
            n,
            outf,
            inf,
            MatRef::n(x.data(), inf),
            MatRef::t(w, inf),
            y.data_mut(),
            outf,
            self.cfg.bias,
            ctx.threads,
        );
        Ok(())
    }

    fn backward(
        &mut self,
        ctx: &Ctx,
        p: &[f32],
        dp: &mut [f32],
        x: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
    ) -> Result<(), LayerError> {
        let n = check_input("linear", x, &self.in_shape)?;
        let (inf, outf) = (self.in_features, self.cfg.out_features);
        let (dw, db) = dp.split_at_mut(inf * outf);
        let bias = self.cfg.bias;
        if let Some(e) = self.engine(ctx.backend)? {
            let dx = dx.map(|d| {
                d.resize(x.shape());
                d.data_mut()
            });
            return e
                .backward(ctx.threads, &p[..inf * outf], x.data(), dy.data(), dx, dw, bias.then_some(db))
                .map_err(|msg| LayerError::Config { op: "linear", msg });
        }
        // dW (out × in) += dyᵀ (out × N) · x (N × in)
        sgemm(outf, inf, n, MatRef::t(dy.data(), outf), MatRef::n(x.data(), inf), dw, inf, true, ctx.threads);
        if self.cfg.bias {
            for row in dy.data().chunks_exact(outf) {
                for (d, &g) in db.iter_mut().zip(row) {
                    *d += g;
                }
            }
        }
        if let Some(dx) = dx {
            dx.resize(x.shape());
            // dx (N × in) = dy (N × out) · W (out × in)
            sgemm(
                n,
                inf,
                outf,
                MatRef::n(dy.data(), outf),
                MatRef::n(&p[..inf * outf], inf),
                dx.data_mut(),
                inf,
                false,
                ctx.threads,
            );
        }
        Ok(())
    }

    fn flops_per_sample(&self) -> u64 {
        (self.in_features * self.cfg.out_features) as u64
    }

    fn kernel(&self) -> &'static str {
        match (&self.engine, self.backend) {
            (Some(e), b) if b != Backend::Native => e.name(),
            _ => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN_Y: [f32; 4] = [0.4219970107078552, -1.007209062576294, 1.7657312154769897, -2.4077584743499756];
    const GOLDEN_DX: [f32; 6] = [
        2.0096921920776367,
        2.649286985397339,
        2.0428805351257324,
        -1.014538049697876,
        -2.4442460536956787,
        -2.72438645362854,
    ];
    const GOLDEN_DP: [f32; 8] = [
        0.39166346192359924,
        0.7615397572517395,
        1.0633900165557861,
        2.3499808311462402,
        2.2050769329071045,
        1.863200068473816,
        1.5,
        1.0,
    ];
    use crate::layers::{gradcheck::*, Mode};

    /// The backends of this build: native, and oneDNN with `--features dnnl`.
    fn backends() -> Vec<Backend> {
        if cfg!(feature = "dnnl") {
            vec![Backend::Native, Backend::Dnnl]
        } else {
            vec![Backend::Native]
        }
    }

    #[test]
    fn gradcheck_batch_1_and_3_with_and_without_bias_on_every_backend() {
        for backend in backends() {
            for (n, bias, threads) in [(1, true, 1), (3, true, 2), (3, false, 1), (5, true, 2)] {
                let mut l = Linear::new(LinearConfig { out_features: 5, bias }, &[2, 1, 3]).unwrap();
                let p = init_params(&l, 4);
                let x = random_tensor(&[n, 2, 1, 3], 5);
                let ctx = Ctx { threads, backend, ..Ctx::simple(Mode::Train) };
                check_layer(&mut l, &ctx, &x, &p, Tolerance::default())
                    .unwrap_or_else(|e| panic!("{backend}, batch {n}, bias {bias}: {e}"));
                assert_eq!(l.kernel().starts_with("dnnl"), backend == Backend::Dnnl, "{}", l.kernel());
            }
        }
    }

    /// Golden values from PyTorch:
    /// ```python
    /// import torch
    /// x = (torch.arange(6.).reshape(2, 3) * 0.3).sin().requires_grad_()
    /// l = torch.nn.Linear(3, 2)
    /// with torch.no_grad():
    ///     l.weight.copy_((torch.arange(6.).reshape(2, 3) * 0.7).cos()); l.bias.copy_(torch.tensor([0.1, -0.2]))
    /// y = l(x); y.backward(torch.tensor([[1., -2.], [0.5, 3.]]))
    /// print(y.flatten().tolist(), x.grad.flatten().tolist(), l.weight.grad.flatten().tolist(), l.bias.grad.tolist())
    /// ```
    #[test]
    fn golden_pytorch() {
        for backend in backends() {
            golden_on(backend);
        }
    }

    fn golden_on(backend: Backend) {
        let x = Tensor::from_vec(&[2, 3], (0..6).map(|i| (i as f32 * 0.3).sin()).collect()).unwrap();
        let mut p: Vec<f32> = (0..6).map(|i| (i as f32 * 0.7).cos()).collect();
        p.extend([0.1, -0.2]);
        let mut l = Linear::new(LinearConfig { out_features: 2, bias: true }, &[3]).unwrap();
        let ctx = Ctx { backend, ..Ctx::simple(Mode::Train) };
        let mut y = Tensor::default();
        l.forward(&ctx, &p, &x, &mut y).unwrap();
        let dy = Tensor::from_vec(&[2, 2], vec![1.0, -2.0, 0.5, 3.0]).unwrap();
        let (mut dp, mut dx) = (vec![0.0; 8], Tensor::default());
        l.backward(&ctx, &p, &mut dp, &x, &y, &dy, Some(&mut dx)).unwrap();
        assert_close("y", y.data(), &GOLDEN_Y, 1e-5);
        assert_close("dx", dx.data(), &GOLDEN_DX, 1e-5);
        assert_close("dp", &dp, &GOLDEN_DP, 1e-5);
    }

    #[test]
    fn bad_config() {
        assert!(Linear::new(LinearConfig { out_features: 0, bias: true }, &[3]).is_err());
        assert!(Linear::new(LinearConfig { out_features: 2, bias: true }, &[0]).is_err());
        let mut l = Linear::new(LinearConfig { out_features: 2, bias: true }, &[3]).unwrap();
        let mut y = Tensor::default();
        assert!(l.forward(&Ctx::simple(Mode::Eval), &[0.0; 8], &Tensor::zeros(&[2, 4]), &mut y).is_err());
    }
}
