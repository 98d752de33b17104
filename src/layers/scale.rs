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

    fn backward(&mut self, _ctx: &Ctx, p: &[f32], dp: &mut [f32], x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) -> Result<(), LayerError> {
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
            return bad(format!("out_channels {out_channels} is fewer than the {} input channels; hint: it only adds channels", in_shape[0]));
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

    fn backward(&mut self, _ctx: &Ctx, _p: &[f32], _dp: &mut [f32], x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) -> Result<(), LayerError> {
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
            let p: Vec<f32> = (0..l.params().iter().map(|s| s.len()).sum::<usize>()).map(|i| 0.5 + 0.25 * i as f32).collect();
            check_layer(&mut l, &Ctx::simple(Mode::Train), &x, &p, Tolerance::default()).unwrap();
        }
        let mut l = Scale::new(true, &[2]).unwrap();
        let mut y = Tensor::default();
        l.forward(&Ctx::simple(Mode::Eval), &[2.0, 3.0, 1.0, -1.0], &Tensor::from_vec(&[1, 2], vec![1.0, 1.0]).unwrap(), &mut y).unwrap();
        assert_eq!(y.data(), &[3.0, 2.0]);
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
        check_layer(&mut l, &Ctx::simple(Mode::Train), &random_tensor(&[2, 2, 3, 3], 4), &[], Tolerance::default()).unwrap();
        let mut same = PadChannels::new(3, 1, &[3, 2, 2]).unwrap();
        check_layer(&mut same, &Ctx::simple(Mode::Train), &random_tensor(&[2, 3, 2, 2], 5), &[], Tolerance::default()).unwrap();
        assert!(PadChannels::new(1, 1, &[2, 3, 3]).is_err());
        assert!(PadChannels::new(4, 0, &[2, 3, 3]).is_err());
    }
}
