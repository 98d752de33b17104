//! Average pooling, PyTorch `nn.AvgPool2d` semantics with its default count_include_pad = True
//! (also Caffe's AVE pooling): each window's sum is divided by the window size clipped to the
//! padded input, so padding cells count as zeros but a ceil-mode window hanging past the padding
//! does not (torch/csrc/.../AvgPoolKernel.cpp, caffe pooling_layer.cpp).

use super::max_pool::{PoolConfig, PoolGeom};
use super::{check_input, Ctx, Layer, LayerError};
use crate::tensor::Tensor;

/// Average pooling layer.
pub struct AvgPool2d {
    g: PoolGeom,
}

impl AvgPool2d {
    /// Average pooling for per-sample inputs [C, H, W].
    pub fn new(cfg: PoolConfig, in_shape: &[usize]) -> Result<AvgPool2d, LayerError> {
        Ok(AvgPool2d { g: PoolGeom::new("avg_pool2d", cfg, in_shape)? })
    }

    /// Calls `f(out_index, in_index, 1/divisor)` for every (output, input cell) pair of a plane.
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, f32)) {
        let w = self.g.input[2];
        for (oy, &(h0, h1, hs)) in self.g.rows.iter().enumerate() {
            for (ox, &(w0, w1, ws)) in self.g.cols.iter().enumerate() {
                let inv = 1.0 / (hs * ws) as f32;
                for iy in h0..h1 {
                    for ix in w0..w1 {
                        f(oy * self.g.ow + ox, iy * w + ix, inv);
                    }
                }
            }
        }
    }
}

impl Layer for AvgPool2d {
    fn kind(&self) -> &'static str {
        "avg_pool2d"
    }

    fn out_shape(&self) -> Vec<usize> {
        self.g.out_shape()
    }

    /// # Shapes
    /// x: (N, C, H, W) → y: (N, C, OH, OW)
    fn forward(&mut self, _ctx: &Ctx, _p: &[f32], x: &Tensor, y: &mut Tensor) -> Result<(), LayerError> {
        let n = check_input("avg_pool2d", x, &self.g.input)?;
        let [c, h, w] = self.g.input;
        y.resize(&[n, c, self.g.oh, self.g.ow]);
        y.fill(0.0);
        let plane_out = self.g.oh * self.g.ow;
        for plane in 0..n * c {
            let xp = &x.data()[plane * h * w..(plane + 1) * h * w];
            let yp = &mut y.data_mut()[plane * plane_out..(plane + 1) * plane_out];
            self.for_each_tap(|o, i, inv| yp[o] += xp[i] * inv);
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
        let [_, h, w] = self.g.input;
        let plane_out = self.g.oh * self.g.ow;
        dx.resize(x.shape());
        dx.fill(0.0);
        for plane in 0..x.len() / (h * w) {
            let dyp = &dy.data()[plane * plane_out..(plane + 1) * plane_out];
            let dxp = &mut dx.data_mut()[plane * h * w..(plane + 1) * h * w];
            self.for_each_tap(|o, i, inv| dxp[i] += dyp[o] * inv);
        }
        Ok(())
    }

    fn flops_per_sample(&self) -> u64 {
        (self.g.input[0] * self.g.oh * self.g.ow * self.g.cfg.kernel[0] * self.g.cfg.kernel[1]) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN_SHAPE: [usize; 4] = [1, 2, 3, 4];
    const GOLDEN_Y: [f32; 24] = [
        0.18691390752792358,
        0.27210533618927,
        0.14833968877792358,
        0.02676805853843689,
        0.04550044611096382,
        0.059411924332380295,
        0.02364457957446575,
        -0.00023754437279421836,
        0.19326476752758026,
        0.22431008517742157,
        0.04922231659293175,
        -0.028752505779266357,
        -0.03312687575817108,
        0.1059487909078598,
        0.25523462891578674,
        0.14777937531471252,
        0.0007782445754855871,
        0.03603045642375946,
        0.0643412172794342,
        0.03463539481163025,
        0.03962850570678711,
        0.19510218501091003,
        0.2823668420314789,
        0.14161595702171326,
    ];
    const GOLDEN_DX: [f32; 60] = [
        0.1111111119389534,
        0.20862028002738953,
        0.09750917553901672,
        0.15754276514053345,
        0.06003359332680702,
        0.0718231275677681,
        0.06487257778644562,
        0.07336578518152237,
        0.008493222296237946,
        -0.04147235304117203,
        -0.049965571612119675,
        -0.1942521631717682,
        -0.04623853787779808,
        -0.13525448739528656,
        -0.08901595324277878,
        -0.19901511073112488,
        -0.1099991649389267,
        -0.2660752832889557,
        -0.11886560916900635,
        -0.23130330443382263,
        -0.11243771016597748,
        -0.19091884791851044,
        -0.07848113775253296,
        -0.1164456233382225,
        -0.07262706756591797,
        -0.09604882448911667,
        -0.0234217569231987,
        0.00809626653790474,
        0.03151802346110344,
        0.1496296525001526,
        0.1066855862736702,
        0.21519532799720764,
        0.10850974172353745,
        0.19227665662765503,
        0.08376691490411758,
        0.14153946936130524,
        0.09051891416311264,
        0.1321384459733963,
        0.04161953181028366,
        0.024149753153324127,
        -0.017469778656959534,
        -0.12589257955551147,
        -0.016166670247912407,
        -0.08305688202381134,
        -0.06689020991325378,
        -0.1681269109249115,
        -0.10123669356107712,
        -0.2674320638179779,
        -0.10939683765172958,
        -0.22912448644638062,
        -0.11972764879465103,
        -0.22047260403633118,
        -0.10074494779109955,
        -0.18638953566551208,
        -0.09323016554117203,
        -0.14606760442256927,
        -0.05283743888139725,
        -0.05234569311141968,
        0.0004917441983707249,
        0.08104254305362701,
    ];
    use crate::layers::{gradcheck::*, Mode};

    #[test]
    fn gradcheck_stride_padding_ceil() {
        let cases = [
            (1, PoolConfig::new(2, 2), [2, 4, 6]),
            (3, PoolConfig { kernel: [3, 2], stride: [2, 1], padding: [1, 1], ceil_mode: true }, [1, 6, 5]),
            (3, PoolConfig { kernel: [3, 3], stride: [2, 2], padding: [0, 0], ceil_mode: true }, [2, 6, 7]),
        ];
        for (n, cfg, s) in cases {
            let mut l = AvgPool2d::new(cfg, &s).unwrap();
            let x = random_tensor(&[n, s[0], s[1], s[2]], 8);
            check_layer(&mut l, &Ctx::simple(Mode::Train), &x, &[], Tolerance::default()).unwrap();
        }
    }

    /// Golden values from PyTorch:
    /// ```python
    /// import torch
    /// x = (torch.arange(2 * 5 * 6.).reshape(1, 2, 5, 6) * 0.37).sin().requires_grad_()
    /// y = torch.nn.functional.avg_pool2d(x, 3, 2, padding=1, ceil_mode=True)
    /// y.backward((torch.arange(y.numel() * 1.).reshape(y.shape) * 0.5).cos())
    /// print(list(y.shape), y.flatten().tolist(), x.grad.flatten().tolist())
    /// ```
    #[test]
    fn golden_pytorch_ceil_mode_with_padding() {
        let x = Tensor::from_vec(&[1, 2, 5, 6], (0..60).map(|i| (i as f32 * 0.37).sin()).collect()).unwrap();
        let cfg = PoolConfig { kernel: [3, 3], stride: [2, 2], padding: [1, 1], ceil_mode: true };
        let mut l = AvgPool2d::new(cfg, &[2, 5, 6]).unwrap();
        let ctx = Ctx::simple(Mode::Train);
        let mut y = Tensor::default();
        l.forward(&ctx, &[], &x, &mut y).unwrap();
        assert_eq!(y.shape(), &GOLDEN_SHAPE);
        let dy = Tensor::from_vec(y.shape(), (0..y.len()).map(|i| (i as f32 * 0.5).cos()).collect()).unwrap();
        let mut dx = Tensor::default();
        l.backward(&ctx, &[], &mut [], &x, &y, &dy, Some(&mut dx)).unwrap();
        assert_close("y", y.data(), &GOLDEN_Y, 1e-6);
        assert_close("dx", dx.data(), &GOLDEN_DX, 1e-6);
    }

    #[test]
    fn bad_configs_are_errors() {
        assert!(AvgPool2d::new(PoolConfig::new(4, 1), &[1, 3, 3]).is_err());
        assert!(AvgPool2d::new(
            PoolConfig { kernel: [2, 2], stride: [1, 1], padding: [0, 2], ceil_mode: false },
            &[1, 8, 8]
        )
        .is_err());
    }
}
