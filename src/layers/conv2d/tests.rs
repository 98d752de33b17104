//! Conv2d tests: gradient checks over the configuration space, a PyTorch golden case, thread
//! equivalence and configuration errors.

use super::*;

const GOLDEN_SHAPE: [usize; 4] = [2, 4, 3, 3];
const GOLDEN_Y: [f32; 12] = [
    -0.5185057520866394,
    0.22042416036128998,
    1.3093242645263672,
    3.501805305480957,
    7.396517753601074,
    6.133052349090576,
    4.167516708374023,
    5.230564117431641,
    2.560485601425171,
    2.0171988010406494,
    4.997027397155762,
    4.52473258972168,
];
const GOLDEN_DX: [f32; 20] = [
    0.9450393319129944,
    1.860905408859253,
    0.9424134492874146,
    1.812744379043579,
    0.8983795642852783,
    1.5205481052398682,
    2.8786520957946777,
    1.3977161645889282,
    2.573958158493042,
    1.2134711742401123,
    0.8148725032806396,
    1.4830918312072754,
    0.6955614686012268,
    1.2160850763320923,
    0.5456889271736145,
    0.9759083390235901,
    1.6436420679092407,
    0.6954658627510071,
    1.0588964223861694,
    0.3844660818576813,
];
const GOLDEN_DW: [f32; 12] = [
    4.671499252319336,
    7.056545257568359,
    4.810087203979492,
    4.966722011566162,
    7.250921249389648,
    4.687060356140137,
    4.456419944763184,
    6.261541843414307,
    3.979705333709717,
    -4.609320163726807,
    -6.930888652801514,
    -4.698933124542236,
];
const GOLDEN_DB: [f32; 4] = [12.367292404174805, -2.7930045127868652, -10.614346504211426, 9.454788208007812];
use crate::layers::{gradcheck::*, Mode};

fn cfg(out: usize, k: usize) -> Conv2dConfig {
    Conv2dConfig::new(out, k)
}

#[test]
fn gradcheck_configurations() {
    let cases: Vec<(usize, Conv2dConfig, [usize; 3], usize)> = vec![
        (1, cfg(2, 3), [1, 5, 5], 1),
        (3, Conv2dConfig { stride: [2, 2], padding: [1, 1], ..cfg(3, 3) }, [2, 7, 5], 1),
        (3, Conv2dConfig { groups: 2, padding: [1, 0], ..cfg(4, 3) }, [4, 5, 6], 1),
        (1, Conv2dConfig { dilation: [2, 2], padding: [2, 1], bias: false, ..cfg(2, 3) }, [3, 7, 6], 1),
        (3, Conv2dConfig { kernel: [2, 3], stride: [1, 2], ..cfg(3, 1) }, [2, 5, 7], 2),
        (3, cfg(3, 1), [4, 3, 2], 2),
        (2, Conv2dConfig { groups: 2, ..cfg(2, 1) }, [4, 3, 3], 1),
    ];
    for (n, c, s, threads) in cases {
        gradcheck(n, c, s, threads, None);
    }
}

/// The f64 finite-difference check of `c` on a batch of `n` inputs of shape `s`, with the
/// algorithm the layer picks or `algo`.
fn gradcheck(n: usize, c: Conv2dConfig, s: [usize; 3], threads: usize, algo: Option<ConvAlgo>) {
    gradcheck_on(Backend::Native, n, c, s, threads, algo)
}

/// `gradcheck` with the convolution run by `backend`.
fn gradcheck_on(backend: Backend, n: usize, c: Conv2dConfig, s: [usize; 3], threads: usize, algo: Option<ConvAlgo>) {
    let mut l = Conv2d::new(c, &s).unwrap();
    if let Some(a) = algo {
        l.set_algo(a).unwrap();
    }
    let p = init_params(&l, 3);
    let x = random_tensor(&[n, s[0], s[1], s[2]], 4);
    let ctx = Ctx { threads, backend, ..Ctx::simple(Mode::Train) };
    // A convolution is linear in x and in w: a central difference has no truncation error at any
    // step, only the forward's rounding divided by the step. Winograd F(4×4) rounds more than the
    // direct sum (tensor/winograd.rs), so its check takes a larger step.
    let tol = if matches!(l.algo(), ConvAlgo::Winograd(_)) {
        Tolerance { eps: 0.25, ..Tolerance::default() }
    } else {
        Tolerance::default()
    };
    check_layer(&mut l, &ctx, &x, &p, tol)
        .unwrap_or_else(|e| panic!("{} ({backend}), {threads} threads, {c:?} on {s:?}: {e}", l.kernel()));
}

#[test]
fn threads_give_the_same_result() {
    let c = Conv2dConfig { padding: [2, 2], ..cfg(8, 5) };
    let mut l = Conv2d::new(c, &[3, 9, 9]).unwrap();
    let p = init_params(&l, 1);
    let x = random_tensor(&[7, 3, 9, 9], 2);
    let (y1, dp1, dx1) = forward_backward(&mut l, &p, &x, 1);
    for t in [2, 3, 16] {
        let (y, dp, dx) = forward_backward(&mut l, &p, &x, t);
        assert_eq!(y.data(), y1.data(), "forward is per sample: bitwise equal");
        assert_eq!(dx.data(), dx1.data());
        assert_close("dp", &dp, &dp1, 1e-4);
    }
}

/// Forward and backward of `l` on `x` with `threads`, against a fixed random dy: (y, dp, dx).
fn forward_backward(l: &mut Conv2d, p: &[f32], x: &Tensor, threads: usize) -> (Tensor, Vec<f32>, Tensor) {
    forward_backward_on(Backend::Native, l, p, x, threads)
}

/// `forward_backward` with the convolution run by `backend`.
fn forward_backward_on(
    backend: Backend,
    l: &mut Conv2d,
    p: &[f32],
    x: &Tensor,
    threads: usize,
) -> (Tensor, Vec<f32>, Tensor) {
    let ctx = Ctx { threads, backend, ..Ctx::simple(Mode::Train) };
    let mut y = Tensor::default();
    l.forward(&ctx, p, x, &mut y).unwrap();
    let dy = random_tensor(y.shape(), 5);
    let (mut dp, mut dx) = (vec![0.0; p.len()], Tensor::default());
    l.backward(&ctx, p, &mut dp, x, &y, &dy, Some(&mut dx)).unwrap();
    (y, dp, dx)
}

/// Golden values from PyTorch:
/// ```python
/// import torch
/// x = (torch.arange(2 * 4 * 5 * 5.).reshape(2, 4, 5, 5) * 0.13).sin().requires_grad_()
/// conv = torch.nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2)
/// with torch.no_grad():
///     conv.weight.copy_((torch.arange(conv.weight.numel() * 1.) * 0.29).cos().reshape(conv.weight.shape))
///     conv.bias.copy_(torch.tensor([0.1, -0.2, 0.3, -0.4]))
/// y = conv(x)
/// y.backward((torch.arange(y.numel() * 1.) * 0.21).sin().reshape(y.shape))
/// print(list(y.shape), y.flatten().tolist()[:12], x.grad.flatten().tolist()[:20],
///       conv.weight.grad.flatten().tolist()[:12], conv.bias.grad.tolist())
/// ```
/// On every backend of this build; the gradients start at 0.5: backward accumulates.
#[test]
fn golden_pytorch_groups_stride_padding() {
    let backends = if cfg!(feature = "dnnl") { vec![Backend::Native, Backend::Dnnl] } else { vec![Backend::Native] };
    for backend in backends {
        let x = Tensor::from_vec(&[2, 4, 5, 5], (0..200).map(|i| (i as f32 * 0.13).sin()).collect()).unwrap();
        let c = Conv2dConfig { stride: [2, 2], padding: [1, 1], groups: 2, ..cfg(4, 3) };
        let mut l = Conv2d::new(c, &[4, 5, 5]).unwrap();
        let mut p: Vec<f32> = (0..72).map(|i| (i as f32 * 0.29).cos()).collect();
        p.extend([0.1, -0.2, 0.3, -0.4]);
        let ctx = Ctx { backend, ..Ctx::simple(Mode::Train) };
        let mut y = Tensor::default();
        l.forward(&ctx, &p, &x, &mut y).unwrap();
        assert_eq!(y.shape(), &GOLDEN_SHAPE);
        let dy = Tensor::from_vec(y.shape(), (0..y.len()).map(|i| (i as f32 * 0.21).sin()).collect()).unwrap();
        let (mut dp, mut dx) = (vec![0.5; p.len()], Tensor::default());
        l.backward(&ctx, &p, &mut dp, &x, &y, &dy, Some(&mut dx)).unwrap();
        dp.iter_mut().for_each(|v| *v -= 0.5);
        assert_close(&format!("y, {backend}"), &y.data()[..12], &GOLDEN_Y, 1e-5);
        assert_close(&format!("dx, {backend}"), &dx.data()[..20], &GOLDEN_DX, 1e-5);
        assert_close(&format!("dw, {backend}"), &dp[..12], &GOLDEN_DW, 1e-4);
        assert_close(&format!("db, {backend}"), &dp[72..], &GOLDEN_DB, 1e-4);
    }
}

#[test]
fn configuration_errors_name_the_problem() {
    let e = Conv2d::new(cfg(2, 7), &[1, 5, 5]).err().unwrap().to_string();
    assert!(e.contains("conv2d") && e.contains("larger than the padded input"), "{e}");
    let e = Conv2d::new(Conv2dConfig { groups: 2, ..cfg(4, 1) }, &[3, 5, 5]).err().unwrap().to_string();
    assert!(e.contains("groups"), "{e}");
    assert!(Conv2d::new(cfg(0, 1), &[3, 5, 5]).is_err());
    assert!(Conv2d::new(Conv2dConfig { stride: [0, 1], ..cfg(2, 1) }, &[3, 5, 5]).is_err());
    assert!(Conv2d::new(cfg(2, 1), &[75]).is_err());
    let mut l = Conv2d::new(cfg(2, 3), &[1, 5, 5]).unwrap();
    let mut y = Tensor::default();
    let r = l.forward(&Ctx::simple(Mode::Eval), &[0.0; 20], &Tensor::zeros(&[1, 2, 5, 5]), &mut y);
    assert!(matches!(r, Err(LayerError::Shape { .. })));
}

/// Every algorithm that applies to `c` on `s` on this CPU.
fn algorithms(c: Conv2dConfig, s: &[usize; 3]) -> Vec<ConvAlgo> {
    let mut all = vec![ConvAlgo::Im2col, ConvAlgo::Gemm1x1];
    all.extend(Isa::available().into_iter().map(ConvAlgo::Direct));
    all.extend(Isa::available().into_iter().map(ConvAlgo::DirectOc));
    all.extend([ConvAlgo::Winograd(Tile::F2), ConvAlgo::Winograd(Tile::F3), ConvAlgo::Winograd(Tile::F4)]);
    all.into_iter().filter(|&a| Conv2d::new(c, s).unwrap().set_algo(a).is_ok()).collect()
}

/// Shapes for the algorithm tests: channel counts off the SIMD width and the kernels' blocks,
/// kernels 1/3/5/7 and 3×5, padding 0 to k−1, groups, maps narrower than a vector, and small
/// maps where the im2col path puts several samples in one GEMM.
fn algorithm_cases() -> Vec<(usize, Conv2dConfig, [usize; 3])> {
    vec![
        (1, Conv2dConfig { padding: [1, 1], ..cfg(5, 3) }, [3, 6, 7]),
        (3, Conv2dConfig { padding: [2, 2], bias: false, ..cfg(9, 5) }, [2, 5, 5]),
        (2, Conv2dConfig { kernel: [3, 5], padding: [0, 2], ..cfg(17, 1) }, [4, 4, 9]),
        (2, Conv2dConfig { padding: [3, 3], ..cfg(3, 7) }, [2, 4, 4]),
        (3, Conv2dConfig { groups: 2, padding: [1, 1], ..cfg(4, 3) }, [4, 3, 3]),
        (2, cfg(16, 1), [3, 3, 2]),
        (4, Conv2dConfig { padding: [1, 1], ..cfg(8, 3) }, [3, 2, 2]),
        // The channel-vectorised kernels: channels in and off multiples of 16, 1 to 3 samples,
        // pixel counts off the tile of 12, padding 0, 1 and 2.
        (3, Conv2dConfig { padding: [1, 1], ..cfg(32, 3) }, [16, 3, 3]),
        (1, Conv2dConfig { bias: false, ..cfg(16, 3) }, [48, 5, 4]),
        (2, Conv2dConfig { padding: [2, 2], ..cfg(16, 3) }, [16, 2, 2]),
        (2, Conv2dConfig { padding: [1, 1], ..cfg(21, 3) }, [11, 4, 4]),
    ]
}

#[test]
fn every_algorithm_passes_the_gradient_check() {
    for (n, c, s) in algorithm_cases() {
        let algos = algorithms(c, &s);
        assert!(algos.len() >= 2 || Isa::best().is_none(), "{c:?} on {s:?}: only {algos:?}");
        for algo in algos {
            for threads in [1, 2] {
                gradcheck(n, c, s, threads, Some(algo));
            }
        }
    }
}

#[test]
fn algorithms_agree_with_im2col_on_larger_shapes() {
    // ResNet-20's and VGG-11's kinds of layers at a batch of 5 (odd: uneven thread chunks).
    let cases = [
        (Conv2dConfig { padding: [1, 1], bias: false, ..cfg(16, 3) }, [16, 12, 12]),
        (Conv2dConfig { padding: [1, 1], ..cfg(40, 3) }, [24, 8, 8]),
        (Conv2dConfig { padding: [1, 1], ..cfg(32, 3) }, [32, 2, 2]),
        (Conv2dConfig { padding: [1, 1], bias: false, ..cfg(64, 3) }, [32, 8, 8]),
        (Conv2dConfig { padding: [1, 1], ..cfg(22, 3) }, [64, 8, 8]),
        (Conv2dConfig { padding: [2, 2], ..cfg(20, 5) }, [6, 14, 14]),
    ];
    for (c, s) in cases {
        let x = random_tensor(&[5, s[0], s[1], s[2]], 7);
        let run = |algo: ConvAlgo, threads: usize| {
            let mut l = Conv2d::new(c, &s).unwrap();
            l.set_algo(algo).unwrap();
            let p = init_params(&l, 1);
            forward_backward(&mut l, &p, &x, threads)
        };
        let (y0, dp0, dx0) = run(ConvAlgo::Im2col, 1);
        for algo in algorithms(c, &s) {
            for threads in [1, 3] {
                let (y, dp, dx) = run(algo, threads);
                let what = format!("{algo:?}, {threads} threads, {c:?} on {s:?}");
                assert_close(&format!("y, {what}"), y.data(), y0.data(), 1e-4);
                assert_close(&format!("dx, {what}"), dx.data(), dx0.data(), 1e-4);
                assert_close(&format!("dp, {what}"), &dp, &dp0, 1e-3);
            }
        }
    }
}

#[test]
fn an_algorithm_that_does_not_apply_is_refused() {
    let mut l = Conv2d::new(Conv2dConfig { stride: [2, 2], ..cfg(4, 3) }, &[2, 9, 9]).unwrap();
    assert_eq!(l.algo(), ConvAlgo::Im2col);
    for isa in Isa::available() {
        let e = l.set_algo(ConvAlgo::Direct(isa)).unwrap_err().to_string();
        assert!(e.contains("stride 1"), "{e}");
    }
    assert!(l.set_algo(ConvAlgo::Gemm1x1).unwrap_err().to_string().contains("1×1"));
    assert_eq!(l.algo(), ConvAlgo::Im2col, "a refused algorithm leaves the layer as it was");
}

#[test]
fn a_layer_reused_after_backward_computes_what_a_fresh_one_does() {
    // Pipeline slots reuse a net after its backward for another micro-batch's forward.
    for (c, s) in [
        (Conv2dConfig { padding: [2, 2], ..cfg(32, 5) }, [1, 28, 28]),
        (Conv2dConfig { padding: [2, 2], ..cfg(64, 5) }, [32, 14, 14]),
    ] {
        for algo in algorithms(c, &s) {
            let step = |l: &mut Conv2d, n: usize, seed: u64| {
                let p = init_params(l, 1);
                let x = random_tensor(&[n, s[0], s[1], s[2]], seed);
                let ctx = Ctx::simple(Mode::Train);
                let mut y = Tensor::default();
                l.forward(&ctx, &p, &x, &mut y).unwrap();
                let dy = random_tensor(y.shape(), seed + 1);
                let (mut dp, mut dx) = (vec![0.0; p.len()], Tensor::default());
                l.backward(&ctx, &p, &mut dp, &x, &y, &dy, Some(&mut dx)).unwrap();
                (y, dp, dx)
            };
            let mut fresh = Conv2d::new(c, &s).unwrap();
            fresh.set_algo(algo).unwrap();
            let want = step(&mut fresh, 16, 5);
            let mut used = Conv2d::new(c, &s).unwrap();
            used.set_algo(algo).unwrap();
            step(&mut used, 16, 3);
            let got = step(&mut used, 16, 5);
            assert_eq!(got.0.data(), want.0.data(), "{algo:?} y");
            assert_eq!(got.2.data(), want.2.data(), "{algo:?} dx");
            assert_eq!(got.1, want.1, "{algo:?} dp");
        }
    }
}

#[test]
fn micro_batches_accumulate_what_the_whole_batch_gives() {
    let (c, s) = (Conv2dConfig { padding: [2, 2], ..cfg(32, 5) }, [1, 28, 28]);
    for algo in algorithms(c, &s) {
        let mut l = Conv2d::new(c, &s).unwrap();
        l.set_algo(algo).unwrap();
        let p = init_params(&l, 1);
        let x = random_tensor(&[24, s[0], s[1], s[2]], 2);
        let ctx = Ctx::simple(Mode::Train);
        let mut y = Tensor::default();
        l.forward(&ctx, &p, &x, &mut y).unwrap();
        let dy = random_tensor(y.shape(), 3);
        let mut want = vec![0.0; p.len()];
        l.backward(&ctx, &p, &mut want, &x, &y, &dy, None).unwrap();
        let mut got = vec![0.0; p.len()];
        let (xs, ys) = (x.sample_len(), dy.sample_len());
        for m in 0..4 {
            let xm = Tensor::from_vec(&[6, s[0], s[1], s[2]], x.data()[m * 6 * xs..(m + 1) * 6 * xs].to_vec()).unwrap();
            let dym = Tensor::from_vec(&[6, 32, 28, 28], dy.data()[m * 6 * ys..(m + 1) * 6 * ys].to_vec()).unwrap();
            let mut ym = Tensor::default();
            l.forward(&ctx, &p, &xm, &mut ym).unwrap();
            l.backward(&ctx, &p, &mut got, &xm, &ym, &dym, None).unwrap();
        }
        // Sub-batches of the weight gradient may fall differently: equal up to rounding.
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max) / scale;
        assert!(diff < 1e-5, "{algo:?}: {diff}");
        eprintln!("{algo:?}: max relative diff {diff:e}");
    }
}

#[test]
fn each_shape_gets_the_algorithm_measured_best_for_it() {
    let pick = |c: Conv2dConfig, s: [usize; 3]| Conv2d::new(c, &s).unwrap().algo();
    let three = Conv2dConfig { padding: [1, 1], bias: false, ..cfg(64, 3) };
    assert_eq!(pick(Conv2dConfig { stride: [2, 2], ..three }, [32, 16, 16]), ConvAlgo::Im2col);
    assert_eq!(pick(cfg(64, 1), [32, 8, 8]), ConvAlgo::Gemm1x1);
    let wino = |t: Tile| ConvAlgo::Winograd(t);
    assert_eq!(
        pick(Conv2dConfig { out_channels: 128, ..three }, [64, 32, 32]),
        wino(Tile::F4),
        "64 channels and more: Winograd"
    );
    assert_eq!(pick(Conv2dConfig { out_channels: 256, ..three }, [128, 8, 8]), wino(Tile::F4));
    assert_eq!(
        pick(Conv2dConfig { out_channels: 512, ..three }, [512, 2, 2]),
        wino(Tile::F2),
        "a 2×2 map: one F(2×2) tile"
    );
    assert_eq!(
        pick(Conv2dConfig { out_channels: 128, ..three }, [64, 6, 6]),
        wino(Tile::F2),
        "as many transform points as F(4×4): the cheaper tile"
    );
    assert_ne!(pick(three, [64, 8, 8]), wino(Tile::F4), "64×64 channel pairs: direct");
    assert_eq!(
        pick(Conv2dConfig { padding: [2, 2], ..cfg(128, 5) }, [64, 15, 15]),
        wino(Tile::F3),
        "5×5 on 15×15: 5×5 tiles of F(3×3), 1225 points against F(2×2)'s 2304"
    );
    assert_eq!(
        pick(Conv2dConfig { padding: [2, 2], ..cfg(128, 5) }, [64, 4, 4]),
        wino(Tile::F2),
        "5×5 on 4×4: F(2×2), 144 points against 196"
    );
    assert!(
        !matches!(pick(Conv2dConfig { padding: [2, 2], ..cfg(64, 5) }, [32, 14, 14]), ConvAlgo::Winograd(_)),
        "LeNet's conv2: direct"
    );
    assert_eq!(pick(Conv2dConfig { groups: 2, ..three }, [128, 8, 8]), ConvAlgo::Im2col, "groups: no Winograd");
    match Isa::best() {
        Some(isa) => {
            assert_eq!(pick(three, [32, 32, 32]), ConvAlgo::Direct(isa), "large maps: vectors along the plane");
            assert_eq!(pick(three, [32, 8, 8]), ConvAlgo::DirectOc(isa), "small maps: vectors across channels");
            assert_eq!(
                pick(Conv2dConfig { out_channels: 22, ..three }, [32, 8, 8]),
                ConvAlgo::DirectOc(isa),
                "a tensor split's slice: the whole layer's kernel"
            );
            assert_eq!(
                pick(Conv2dConfig { out_channels: 256, groups: 2, ..three }, [128, 8, 8]),
                ConvAlgo::Im2col,
                "large weights: the GEMM's blocking wins"
            );
        }
        None => assert_eq!(pick(three, [32, 32, 32]), ConvAlgo::Im2col),
    }
}

/// The oneDNN backend on the awkward shapes: the gradient check (every configuration and
/// algorithm case above, and AlexNet's 11×11 stride 4), and agreement with the im2col path on
/// larger layers, a batch of 1 included, on 1 and 2 threads.
#[cfg(feature = "dnnl")]
#[test]
fn dnnl_backend_passes_the_gradient_check_and_agrees_with_im2col() {
    let mut cases: Vec<(usize, Conv2dConfig, [usize; 3])> = algorithm_cases();
    cases.extend([
        (1, cfg(2, 3), [1, 5, 5]),
        (3, Conv2dConfig { stride: [2, 2], padding: [1, 1], ..cfg(3, 3) }, [2, 7, 5]),
        (1, Conv2dConfig { dilation: [2, 2], padding: [2, 1], bias: false, ..cfg(2, 3) }, [3, 7, 6]),
        (3, Conv2dConfig { kernel: [2, 3], stride: [1, 2], ..cfg(3, 1) }, [2, 5, 7]),
        (2, Conv2dConfig { groups: 2, ..cfg(2, 1) }, [4, 3, 3]),
        (2, Conv2dConfig { stride: [4, 4], padding: [2, 2], ..cfg(5, 11) }, [3, 19, 21]),
    ]);
    for (n, c, s) in cases {
        for threads in [1, 2] {
            gradcheck_on(Backend::Dnnl, n, c, s, threads, None);
        }
    }
    let larger = [
        (1, Conv2dConfig { padding: [1, 1], bias: false, ..cfg(16, 3) }, [16, 12, 12]),
        (5, Conv2dConfig { padding: [1, 1], ..cfg(40, 3) }, [24, 8, 8]),
        (3, Conv2dConfig { stride: [2, 2], padding: [1, 1], ..cfg(32, 3) }, [16, 9, 9]),
        (2, Conv2dConfig { stride: [4, 4], padding: [2, 2], ..cfg(24, 11) }, [3, 35, 35]),
        (3, Conv2dConfig { groups: 2, padding: [2, 2], ..cfg(24, 5) }, [12, 7, 7]),
        (4, cfg(20, 1), [33, 5, 5]),
    ];
    for (n, c, s) in larger {
        let x = random_tensor(&[n, s[0], s[1], s[2]], 7);
        let mut l = Conv2d::new(c, &s).unwrap();
        let p = init_params(&l, 1);
        l.set_algo(ConvAlgo::Im2col).unwrap();
        let (y0, dp0, dx0) = forward_backward(&mut l, &p, &x, 1);
        for threads in [1, 2] {
            let (y, dp, dx) = forward_backward_on(Backend::Dnnl, &mut l, &p, &x, threads);
            assert!(l.kernel().starts_with("dnnl"), "{}", l.kernel());
            let what = format!("dnnl, {threads} threads, {c:?} on {s:?}");
            assert_close(&format!("y, {what}"), y.data(), y0.data(), 1e-4);
            assert_close(&format!("dx, {what}"), dx.data(), dx0.data(), 1e-4);
            assert_close(&format!("dp, {what}"), &dp, &dp0, 1e-3);
        }
    }
}

/// `Backend::Auto` keeps ResNet's small 3×3 plane-kernel layers native and sends the rest to
/// oneDNN, and computes what each of them does.
#[cfg(feature = "dnnl")]
#[test]
fn auto_backend_picks_per_shape() {
    let cases = [
        (Conv2dConfig { padding: [1, 1], bias: false, ..cfg(16, 3) }, [16, 16, 16], true),
        (Conv2dConfig { stride: [2, 2], padding: [1, 1], bias: false, ..cfg(32, 3) }, [16, 16, 16], false),
        (Conv2dConfig { padding: [2, 2], ..cfg(50, 5) }, [20, 12, 12], false),
        (Conv2dConfig { padding: [1, 1], ..cfg(128, 3) }, [64, 8, 8], true),
    ];
    for (c, s, native) in cases {
        let x = random_tensor(&[2, s[0], s[1], s[2]], 7);
        let mut l = Conv2d::new(c, &s).unwrap();
        let p = init_params(&l, 1);
        let direct = matches!(l.algo(), ConvAlgo::Direct(_) | ConvAlgo::Winograd(_));
        let (y0, dp0, dx0) = forward_backward(&mut l, &p, &x, 1);
        let (y, dp, dx) = forward_backward_on(Backend::Auto, &mut l, &p, &x, 1);
        assert_eq!(l.kernel().starts_with("dnnl"), !(native && direct), "{c:?} on {s:?}: {}", l.kernel());
        assert_close("y", y.data(), y0.data(), 1e-4);
        assert_close("dx", dx.data(), dx0.data(), 1e-4);
        assert_close("dp", &dp, &dp0, 1e-3);
    }
}

#[cfg(not(feature = "dnnl"))]
#[test]
fn dnnl_backend_in_a_build_without_it_says_how_to_build() {
    let mut l = Conv2d::new(cfg(2, 3), &[1, 5, 5]).unwrap();
    let ctx = Ctx { backend: Backend::Dnnl, ..Ctx::simple(Mode::Train) };
    let e = l.forward(&ctx, &[0.0; 20], &Tensor::zeros(&[1, 1, 5, 5]), &mut Tensor::default()).unwrap_err().to_string();
    assert!(e.contains("--features dnnl"), "{e}");
    assert!(Backend::parse("dnnl").unwrap_err().contains("libdnnl-dev"));
}
