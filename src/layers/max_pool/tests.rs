use super::*;
use crate::layers::{gradcheck::*, Mode};
use crate::tensor::rng::Rng;

const GOLDEN_SHAPE: [usize; 4] = [1, 2, 3, 4];
const GOLDEN_Y: [f32; 24] = [
    0.7965654730796814,
    0.8956986665725708,
    0.9958808422088623,
    0.9612752199172974,
    0.7965654730796814,
    0.9964756369590759,
    0.9964756369590759,
    0.7924270033836365,
    0.6793047785758972,
    0.9964756369590759,
    0.9964756369590759,
    0.7924270033836365,
    0.9016759991645813,
    0.9970241189002991,
    0.957429826259613,
    0.5123879313468933,
    0.9016759991645813,
    0.9970241189002991,
    0.957429826259613,
    0.6892436742782593,
    0.9975263476371765,
    0.9975263476371765,
    0.7840402722358704,
    0.6892436742782593,
];
const GOLDEN_DX: [f32; 60] = [
    0.0,
    0.0,
    0.0,
    0.8775825500488281,
    0.5403023362159729,
    0.07073719799518585,
    0.5838531255722046,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    -0.6536436080932617,
    0.0,
    -1.7182697057724,
    0.0,
    -0.22778689861297607,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.814670205116272,
    0.37457573413848877,
    -0.1572279930114746,
    0.0,
    0.3466353118419647,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    -0.5138673782348633,
    0.0,
    -1.3146084547042847,
    0.0,
    0.004425697959959507,
    0.0,
    0.0,
];

/// Distinct values 0.05 apart, shuffled, so ±eps never changes a window's argmax.
fn separated(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f32> = (0..n).map(|i| i as f32 * 0.05 - n as f32 * 0.025).collect();
    Rng::new(seed).shuffle(&mut v);
    Tensor::from_vec(shape, v).unwrap()
}

#[test]
fn gradcheck_stride_padding_ceil() {
    let cases = [
        (1, PoolConfig::new(2, 2), [2, 4, 6]),
        (3, PoolConfig::new(3, 2), [2, 7, 5]),
        (3, PoolConfig { kernel: [3, 2], stride: [2, 1], padding: [1, 1], ceil_mode: true }, [1, 6, 5]),
        (1, PoolConfig { kernel: [3, 3], stride: [2, 2], padding: [0, 0], ceil_mode: true }, [2, 6, 6]),
    ];
    for (n, cfg, s) in cases {
        let mut l = MaxPool2d::new(cfg, &s).unwrap();
        let x = separated(&[n, s[0], s[1], s[2]], 3);
        check_layer(&mut l, &Ctx::simple(Mode::Train), &x, &[], Tolerance::default()).unwrap();
    }
}

/// Golden values from PyTorch:
/// ```python
/// import torch
/// x = (torch.arange(2 * 5 * 6.).reshape(1, 2, 5, 6) * 0.37).sin().requires_grad_()
/// y = torch.nn.functional.max_pool2d(x, 3, 2, padding=1, ceil_mode=True)
/// y.backward((torch.arange(y.numel() * 1.).reshape(y.shape) * 0.5).cos())
/// print(list(y.shape), y.flatten().tolist(), x.grad.flatten().tolist())
/// ```
#[test]
fn golden_pytorch_ceil_mode_with_padding() {
    let x = Tensor::from_vec(&[1, 2, 5, 6], (0..60).map(|i| (i as f32 * 0.37).sin()).collect()).unwrap();
    let cfg = PoolConfig { kernel: [3, 3], stride: [2, 2], padding: [1, 1], ceil_mode: true };
    let mut l = MaxPool2d::new(cfg, &[2, 5, 6]).unwrap();
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

/// The scalar scan of each window that `forward_planes` vectorizes: maxima and argmax.
fn scan(g: &PoolGeom, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let [_, h, w] = g.input;
    let (mut y, mut arg) = (Vec::new(), Vec::new());
    for xp in x.chunks_exact(h * w) {
        for &(h0, h1, _) in &g.rows {
            for &(w0, w1, _) in &g.cols {
                let (mut best, mut a) = (f32::NEG_INFINITY, (h0 * w + w0) as u32);
                for iy in h0..h1 {
                    for ix in w0..w1 {
                        let v = xp[iy * w + ix];
                        if v > best || v.is_nan() {
                            (best, a) = (v, (iy * w + ix) as u32);
                        }
                    }
                }
                y.push(best);
                arg.push(a);
            }
        }
    }
    (y, arg)
}

/// The row-vectorized forward equals the scalar scan bit for bit, argmax included, on every
/// instruction set's build and on 1 and 3 threads: ReLU-like data (ties of zeros, which the
/// first cell must win), NaNs and infinities, strides 1 to 4, padding, ceil mode, widths that
/// are not a multiple of any vector.
#[test]
fn vectorized_rows_equal_the_scalar_scan() {
    let cases = [
        (PoolConfig::new(2, 2), [3, 8, 8]),
        (PoolConfig::new(3, 2), [2, 13, 27]),
        (PoolConfig::new(3, 1), [1, 5, 19]),
        (PoolConfig::new(3, 3), [2, 10, 11]),
        (PoolConfig { kernel: [3, 3], stride: [2, 2], padding: [1, 1], ceil_mode: true }, [2, 9, 37]),
        (PoolConfig { kernel: [2, 4], stride: [1, 4], padding: [1, 2], ceil_mode: false }, [1, 6, 18]),
        (PoolConfig { kernel: [3, 3], stride: [2, 2], padding: [0, 0], ceil_mode: true }, [4, 6, 6]),
    ];
    let mut rng = Rng::new(9);
    for (cfg, s) in cases {
        let n = 3;
        let len = n * s.iter().product::<usize>();
        let mut v: Vec<f32> = (0..len).map(|_| rng.normal().max(0.0)).collect();
        for (i, special) in [(7, f32::NAN), (len / 2, f32::INFINITY), (len / 3, f32::NEG_INFINITY), (len - 1, f32::NAN)]
        {
            v[i] = special;
        }
        let x = Tensor::from_vec(&[n, s[0], s[1], s[2]], v).unwrap();
        let mut l = MaxPool2d::new(cfg, &s).unwrap();
        let (want_y, want_arg) = scan(&l.g, x.data());
        let isas = crate::tensor::simd::Isa::available();
        for threads in [1, 3] {
            let ctx = Ctx { threads, ..Ctx::simple(Mode::Train) };
            let mut y = Tensor::default();
            l.forward(&ctx, &[], &x, &mut y).unwrap();
            let same = y.data().iter().zip(&want_y).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{cfg:?} {s:?} threads {threads}: maxima differ");
            assert_eq!(l.argmax, want_arg, "{cfg:?} {s:?} threads {threads}: argmax");
        }
        // Each instruction set's build of the row kernel, called directly.
        for isa in isas.into_iter().map(Some).chain([None]) {
            let (mut y, mut arg, mut rows, mut lanes) =
                (vec![0.0; want_y.len()], vec![0; want_y.len()], vec![0.0; l.phases.size()], vec![0; l.phases.flat]);
            match isa {
                #[cfg(target_arch = "x86_64")]
                Some(crate::tensor::simd::Isa::Avx512) => unsafe {
                    forward_planes_avx512(&l.g, &l.phases, x.data(), &mut y, &mut arg, &mut rows, &mut lanes)
                },
                #[cfg(target_arch = "x86_64")]
                Some(crate::tensor::simd::Isa::Avx2) => unsafe {
                    forward_planes_avx2(&l.g, &l.phases, x.data(), &mut y, &mut arg, &mut rows, &mut lanes)
                },
                _ => unsafe {
                    forward_planes::<Portable>(&l.g, &l.phases, x.data(), &mut y, &mut arg, &mut rows, &mut lanes)
                },
            }
            assert!(
                y.iter().zip(&want_y).all(|(a, b)| a.to_bits() == b.to_bits()) && arg == want_arg,
                "{cfg:?} {s:?} {isa:?}"
            );
        }
    }
}

#[test]
fn bad_configs_are_errors() {
    assert!(MaxPool2d::new(PoolConfig::new(5, 1), &[1, 3, 3]).is_err());
    assert!(MaxPool2d::new(
        PoolConfig { kernel: [2, 2], stride: [1, 1], padding: [2, 0], ceil_mode: false },
        &[1, 8, 8]
    )
    .is_err());
    assert!(MaxPool2d::new(PoolConfig::new(2, 0), &[1, 8, 8]).is_err());
    assert!(MaxPool2d::new(PoolConfig::new(2, 2), &[8, 8]).is_err());
    let mut l = MaxPool2d::new(PoolConfig::new(2, 2), &[1, 4, 4]).unwrap();
    let mut y = Tensor::default();
    assert!(l.forward(&Ctx::simple(Mode::Eval), &[], &Tensor::zeros(&[1, 1, 4, 5]), &mut y).is_err());
}
