//! Two per-channel layers of residual nets: `Scale` (Caffe's Scale layer, y = γ_c·x + β_c, which
//! follows Caffe's BatchNorm) and `PadChannels` (the "option A" shortcut of He et al. 2016's
//! CIFAR ResNets: subsample by a stride, then pad channels with zeros on both sides).

use super::{check_input, Ctx, Layer, LayerError, ParamSpec};
use crate::tensor::{init::Init, Tensor};

/// y = γ_c·x + β_c over (C, H, W) or (C) inputs; γ starts at 1, β at 0.
pub struct Scale {
    shape: Vec<usize>,
    bias: bool,
}

impl Scale {
    /// The layer for per-sample inputs of `in_shape`, with a learnt β when `bias`.
    pub fn new(bias: bool, in_shape: &[usize]) -> Result<Scale, LayerError> {
        if in_shape.is_empty() || in_shape.contains(&0) {
            return Err(LayerError::Config { op: "scale", msg: format!("input shape {in_shape:?} is empty") });
        }
        Ok(Scale { shape: in_shape.to_vec(), bias })
    }

    fn inner(&self) -> usize {
        self.shape[1..].iter().product()
    }
}

impl Layer for Scale {
    fn kind(&self) -> &'static str {
        "scale"
    }

    fn out_shape(&self) -> Vec<usize> {
        self.shape.clone()
    }

    fn params(&self) -> Vec<ParamSpec> {
        let c = self.shape[0];
        let mut v = vec![ParamSpec::param("weight", vec![c], Init::Constant(1.0))];
        if self.bias {
            v.push(ParamSpec::param("bias", vec![c], Init::Constant(0.0)));
        }
        v
    }

    fn forward(&mut self, _ctx: &Ctx, p: &[f32], x: &Tensor, y: &mut Tensor) -> Result<(), LayerError> {
        check_input("scale", x, &self.shape)?;
        let (c_n, inner) = (self.shape[0], self.inner());
        y.resize(x.shape());
        for (i, (o, xi)) in y.data_mut().chunks_mut(inner).zip(x.data().chunks(inner)).enumerate() {
            let c = i % c_n;
            let (g, b) = (p[c], if self.bias { p[c_n + c] } else { 0.0 });
            o.iter_mut().zip(xi).for_each(|(o, &v)| *o = g * v + b);
        }
        Ok(())
    }

    fn backward(
        &mut self,
        _ctx: &Ctx,
        p: &[f32],
        dp: &mut [f32],
        x: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
    ) -> Result<(), LayerError> {
        let (c_n, inner) = (self.shape[0], self.inner());
        for (i, (xi, gi)) in x.data().chunks(inner).zip(dy.data().chunks(inner)).enumerate() {
            let c = i % c_n;
            dp[c] += xi.iter().zip(gi).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32;
            if self.bias {
                dp[c_n + c] += gi.iter().map(|&g| g as f64).sum::<f64>() as f32;
            }
        }
        if let Some(dx) = dx {
            dx.resize(x.shape());
            for (i, (d, gi)) in dx.data_mut().chunks_mut(inner).zip(dy.data().chunks(inner)).enumerate() {
                let g = p[i % c_n];
                d.iter_mut().zip(gi).for_each(|(d, &v)| *d = g * v);
            }
        }
        Ok(())
    }

    fn flops_per_sample(&self) -> u64 {
        self.shape.iter().product::<usize>() as u64
    }
}

/// (C, H, W) → (out_channels, ⌈H/s⌉, ⌈W/s⌉): `x[:, :, ::s, ::s]` with (out − C)/2 zero channels
/// before and the rest after — the parameter-free shortcut of ResNet-20's option A.
pub struct PadChannels {
    shape: Vec<usize>,
    out: usize,
    stride: usize,
}

impl PadChannels {
    /// The layer for per-sample inputs (C, H, W).
    pub fn new(out_channels: usize, stride: usize, in_shape: &[usize]) -> Result<PadChannels, LayerError> {
        let bad = |msg: String| Err(LayerError::Config { op: "pad_channels", msg });
        if in_shape.len() != 3 || in_shape.contains(&0) {
            return bad(format!("needs (C, H, W) input, got {in_shape:?}"));
        }
        if out_channels < in_shape[0] {
            return bad(format!(
                "out_channels {out_channels} is fewer than the {} input channels; hint: it only adds channels",
                in_shape[0]
            ));
        }
        if stride == 0 {
            return bad("stride must be at least 1".into());
        }
        Ok(PadChannels { shape: in_shape.to_vec(), out: out_channels, stride })
    }

    fn out_hw(&self) -> (usize, usize) {
        (self.shape[1].div_ceil(self.stride), self.shape[2].div_ceil(self.stride))
    }
}

impl Layer for PadChannels {
    fn kind(&self) -> &'static str {
        "pad_channels"
    }

    fn out_shape(&self) -> Vec<usize> {
        let (oh, ow) = self.out_hw();
        vec![self.out, oh, ow]
    }

    fn forward(&mut self, _ctx: &Ctx, _p: &[f32], x: &Tensor, y: &mut Tensor) -> Result<(), LayerError> {
        let n = check_input("pad_channels", x, &self.shape)?;
        let ([c, h, w], (oh, ow), s) = ([self.shape[0], self.shape[1], self.shape[2]], self.out_hw(), self.stride);
        let lo = (self.out - c) / 2;
        y.resize(&[n, self.out, oh, ow]);
        y.fill(0.0);
        let yd = y.data_mut();
        for b in 0..n {
            for ch in 0..c {
                let (src, dst) = ((b * c + ch) * h * w, (b * self.out + lo + ch) * oh * ow);
                for i in 0..oh {
                    for j in 0..ow {
                        yd[dst + i * ow + j] = x.data()[src + i * s * w + j * s];
                    }
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
        _y: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
    ) -> Result<(), LayerError> {
        let Some(dx) = dx else { return Ok(()) };
        let n = x.dim(0);
        let ([c, h, w], (oh, ow), s) = ([self.shape[0], self.shape[1], self.shape[2]], self.out_hw(), self.stride);
        let lo = (self.out - c) / 2;
        dx.resize(x.shape());
        dx.fill(0.0);
        let d = dx.data_mut();
        for b in 0..n {
            for ch in 0..c {
                let (dst, src) = ((b * c + ch) * h * w, (b * self.out + lo + ch) * oh * ow);
                for i in 0..oh {
                    for j in 0..ow {
                        d[dst + i * s * w + j * s] = dy.data()[src + i * ow + j];
                    }
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

    #[test]
    fn scale_gradcheck_and_values() {
        for (bias, shape) in [(true, vec![2, 3, 2, 2]), (false, vec![3, 4])] {
            let x = random_tensor(&shape, 2);
            let mut l = Scale::new(bias, &shape[1..]).unwrap();
            let p: Vec<f32> =
                (0..l.params().iter().map(|s| s.len()).sum::<usize>()).map(|i| 0.5 + 0.25 * i as f32).collect();
            check_layer(&mut l, &Ctx::simple(Mode::Train), &x, &p, Tolerance::default()).unwrap();
        }
        let mut l = Scale::new(true, &[2]).unwrap();
        let mut y = Tensor::default();
        l.forward(
            &Ctx::simple(Mode::Eval),
            &[2.0, 3.0, 1.0, -1.0],
            &Tensor::from_vec(&[1, 2], vec![1.0, 1.0]).unwrap(),
            &mut y,
        )
        .unwrap();
        assert_eq!(y.data(), &[3.0, 2.0]);
    }

    // Golden values from PyTorch 2.15 (float64), produced by:
    //   x = torch.tensor([math.sin(i*0.7)*2 + i*0.05 for i in range(24)], dtype=torch.float64).reshape(2,3,2,2).requires_grad_(True)
    //   dy = torch.tensor([math.cos(i*0.3) for i in range(24)], dtype=torch.float64).reshape(2,3,2,2)
    //   g = torch.tensor([1.5, -0.5, 0.8], dtype=torch.float64, requires_grad=True)
    //   b = torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64, requires_grad=True)
    //   r = lambda v: [round(x, 7) for x in v.flatten().tolist()]
    //   y = x * g.view(1, 3, 1, 1) + b.view(1, 3, 1, 1)
    //   print(r(y), *map(r, torch.autograd.grad(y, (x, g, b), dy)))
    //   x2, dy2 = x.detach()[:, :, 0, 0].clone().requires_grad_(True), dy[:, :, 0, 0]
    //   y2 = x2 * g
    //   print(r(y2), *map(r, torch.autograd.grad(y2, (x2, g), dy2)))
    #[test]
    fn golden_pytorch_scale_with_and_without_bias() {
        let seq = |shape: &[usize], f: fn(f64) -> f64| {
            Tensor::from_vec(shape, (0..shape.iter().product::<usize>()).map(|i| f(i as f64) as f32).collect()).unwrap()
        };
        let x = seq(&[2, 3, 2, 2], |i| (i * 0.7).sin() * 2.0 + i * 0.05);
        let dy = seq(&[2, 3, 2, 2], |i| (i * 0.3).cos());
        let mut l = Scale::new(true, &[3, 2, 2]).unwrap();
        let p = [1.5, -0.5, 0.8, 0.1, 0.2, -0.3];
        let ctx = Ctx::simple(Mode::Train);
        let mut y = Tensor::default();
        l.forward(&ctx, &p, &x, &mut y).unwrap();
        #[rustfmt::skip]
        assert_close("y", y.data(), &[0.1, 2.1076531, 3.2063492, 2.9146281, -0.2349882, 0.4257832, 0.9215758, 1.0074526, -0.9900266, 0.0869022, 1.1511786, 1.7210692, 3.5637967, 2.0322951, 0.0505626, -1.4140873, 0.7791777, 0.3931371, -0.283623, -0.9445698, 2.0849718, 1.8931949, 1.0649894, 0.0086857], 1e-5);
        let (mut dp, mut dx) = (vec![0.0; 6], Tensor::default());
        l.backward(&ctx, &p, &mut dp, &x, &y, &dy, Some(&mut dx)).unwrap();
        #[rustfmt::skip]
        assert_close("dx", dx.data(), &[1.5, 1.4330047, 1.2380034, 0.932415, -0.1811789, -0.0353686, 0.113601, 0.2524231, -0.589915, -0.7232577, -0.791994, -0.7899838, -1.3451376, -1.0888985, -0.7353912, -0.3161937, -0.0437495, -0.1889889, -0.3173464, -0.4173564, 0.7681362, 0.7998869, 0.7601861, 0.6525801], 1e-5);
        assert_close("dweight, dbias", &dp, &[1.3772413, 3.703786, 3.4479212, 1.0785347, 1.6359291, 0.1070485], 1e-5);
        // (C) inputs, no bias: x2 = x[:, :, 0, 0].
        let x2 = Tensor::from_vec(&[2, 3], (0..6).map(|i| x.data()[4 * i]).collect()).unwrap();
        let dy2 = Tensor::from_vec(&[2, 3], (0..6).map(|i| dy.data()[4 * i]).collect()).unwrap();
        let mut l = Scale::new(false, &[3]).unwrap();
        l.forward(&ctx, &p[..3], &x2, &mut y).unwrap();
        assert_close("y2", y.data(), &[0.0, -0.4349882, -0.6900266, 3.4637967, 0.5791777, 2.3849718], 1e-5);
        let mut dp = vec![0.0; 3];
        l.backward(&ctx, &p[..3], &mut dp, &x2, &y, &dy2, Some(&mut dx)).unwrap();
        assert_close("dx2", dx.data(), &[1.5, -0.1811789, -0.589915, -1.3451376, -0.0437495, 0.7681362], 1e-5);
        assert_close("dweight2", &dp, &[-2.0707926, 0.2138877, 3.4985004], 1e-5);
    }

    // PyTorch (akamaster/pytorch_resnet_cifar10's LambdaLayer):
    //   F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0)
    #[test]
    fn pad_channels_is_option_a_and_passes_gradcheck() {
        let mut l = PadChannels::new(4, 2, &[2, 3, 3]).unwrap();
        assert_eq!(l.out_shape(), vec![4, 2, 2]);
        let x = Tensor::from_vec(&[1, 2, 3, 3], (0..18).map(|v| v as f32).collect()).unwrap();
        let mut y = Tensor::default();
        l.forward(&Ctx::simple(Mode::Eval), &[], &x, &mut y).unwrap();
        assert_eq!(y.data(), &[0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 6.0, 8.0, 9.0, 11.0, 15.0, 17.0, 0.0, 0.0, 0.0, 0.0]);
        check_layer(&mut l, &Ctx::simple(Mode::Train), &random_tensor(&[2, 2, 3, 3], 4), &[], Tolerance::default())
            .unwrap();
        let mut same = PadChannels::new(3, 1, &[3, 2, 2]).unwrap();
        check_layer(&mut same, &Ctx::simple(Mode::Train), &random_tensor(&[2, 3, 2, 2], 5), &[], Tolerance::default())
            .unwrap();
        assert!(PadChannels::new(1, 1, &[2, 3, 3]).is_err());
        assert!(PadChannels::new(4, 0, &[2, 3, 3]).is_err());
    }
}
