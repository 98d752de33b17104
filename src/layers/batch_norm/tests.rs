use super::*;
use crate::layers::{gradcheck::*, StatSync};
use std::sync::{Arc, Barrier, Mutex};

fn golden_x() -> Tensor {
    Tensor::from_vec(&[2, 3, 2, 2], (0..24).map(|i| ((i as f64 * 0.7).sin() * 2.0 + i as f64 * 0.05) as f32).collect())
        .unwrap()
}

fn golden_dy() -> Tensor {
    Tensor::from_vec(&[2, 3, 2, 2], (0..24).map(|i| (i as f64 * 0.3).cos() as f32).collect()).unwrap()
}

// Golden values from PyTorch 2.15 (float64), produced by:
//   x = torch.tensor([math.sin(i*0.7)*2 + i*0.05 for i in range(24)], dtype=torch.float64).reshape(2,3,2,2).requires_grad_(True)
//   dy = torch.tensor([math.cos(i*0.3) for i in range(24)], dtype=torch.float64).reshape(2,3,2,2)
//   bn = torch.nn.BatchNorm2d(3).double()
//   with torch.no_grad(): bn.weight.copy_(torch.tensor([1.5,-0.5,0.8])); bn.bias.copy_(torch.tensor([0.1,0.2,-0.3]))
//   y = bn(x); gx, gw, gb = torch.autograd.grad(y, (x, bn.weight, bn.bias), dy)
//   print(y, gx, gw, gb, bn.running_mean, bn.running_var, bn.num_batches_tracked); bn.eval(); print(bn(x))
#[test]
fn golden_pytorch_train_then_eval() {
    let mut l = BatchNorm::new(BatchNormConfig::default(), &[3, 2, 2]).unwrap();
    let names: Vec<_> = l.params().iter().map(|p| (p.name, p.buffer)).collect();
    assert_eq!(
        names,
        [
            ("weight", false),
            ("bias", false),
            ("running_mean", true),
            ("running_var", true),
            ("num_batches_tracked", true)
        ]
    );
    let mut p = init_params(&l, 0);
    assert_eq!(&p[6..], &[0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]);
    p[..6].copy_from_slice(&[1.5, -0.5, 0.8, 0.1, 0.2, -0.3]);
    let (x, dy) = (golden_x(), golden_dy());
    let mut y = Tensor::default();
    l.forward(&Ctx::simple(Mode::Train), &p, &x, &mut y).unwrap();
    #[rustfmt::skip]
    assert_close("y", y.data(), &[-1.2196948, 0.5824954, 1.5687511, 1.3068847, -0.1836321, 0.3305722, 0.716392, 0.7832203, -1.777689, -0.9256192, -0.08356, 0.3673394, 1.8896175, 0.5148495, -1.2640727, -2.5788306, 0.6055795, 0.3051674, -0.2214792, -0.73582, 0.6552604, 0.5035259, -0.1517532, -0.9875043], 2e-6);
    let mut dp = vec![0.0; p.len()];
    let mut dx = Tensor::default();
    l.backward(&Ctx::simple(Mode::Train), &p, &mut dp, &x, &y, &dy, Some(&mut dx)).unwrap();
    #[rustfmt::skip]
    assert_close("dx", dx.data(), &[1.2075193, 1.0892618, 0.8824113, 0.6165416, 0.0516425, 0.0135595, 0.0157736, 0.104107, -0.0947511, -0.4196352, -0.6908251, -0.8053279, -1.4467191, -1.1723687, -0.7976712, -0.3789749, -0.0740151, -0.0984984, -0.0431668, 0.0305977, 0.3533309, 0.4175193, 0.554823, 0.684866], 2e-6);
    assert_close("dweight, dbias", &dp[..6], &[0.2874035, 3.0298992, 2.6033309, 1.0785347, 1.6359291, 0.1070485], 2e-6);
    assert!(dp[6..].iter().all(|&v| v == 0.0), "buffers get no gradient");
    // The running statistics change only when committed.
    assert_eq!(&p[6..], &[0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]);
    l.commit_buffers(&mut p);
    assert_close("running stats", &p[6..], &[0.09801, -0.0115986, 0.1472026, 1.0418288, 1.088721, 1.082563, 1.0], 2e-6);
    l.forward(&Ctx::simple(Mode::Eval), &p, &x, &mut y).unwrap();
    #[rustfmt::skip]
    assert_close("y (eval)", y.data(), &[-0.0440328, 1.9228949, 2.9993039, 2.7135004, -0.2224438, 0.4108291, 0.8859889, 0.9682919, -1.0763708, -0.0413277, 0.9815549, 1.5292804, 3.3495006, 1.8490656, -0.0924673, -1.5274067, 0.7495169, 0.3795416, -0.2690547, -0.9024957, 1.8790294, 1.6947115, 0.898718, -0.1165021], 2e-6);
    let mut again = p.clone();
    l.commit_buffers(&mut again);
    assert_eq!(again, p, "an eval forward leaves nothing pending");
}

#[test]
fn forwards_before_a_commit_chain_their_running_updates() {
    let mut l = BatchNorm::new(BatchNormConfig { momentum: 0.5, ..Default::default() }, &[2]).unwrap();
    let mut p = init_params(&l, 0);
    let x = Tensor::from_vec(&[2, 2], vec![1.0, 10.0, 3.0, 20.0]).unwrap();
    let mut y = Tensor::default();
    l.forward(&Ctx::simple(Mode::Train), &p, &x, &mut y).unwrap();
    l.forward(&Ctx::simple(Mode::Train), &p, &x, &mut y).unwrap();
    l.commit_buffers(&mut p);
    // mean 2 and 15: 0 → 1 → 1.5 and 0 → 7.5 → 11.25; unbiased var 2 and 50: 1 → 1.5 → 1.75, 1 → 25.5 → 37.75.
    assert_eq!(&p[4..], &[1.5, 11.25, 1.75, 37.75, 2.0]);
}

#[test]
fn gradcheck_train_and_eval_with_and_without_affine() {
    for (affine, shape) in [(true, vec![4, 3, 2, 3]), (false, vec![3, 2, 3, 1]), (true, vec![5, 4])] {
        let x = random_tensor(&shape, 3);
        let mut l = BatchNorm::new(BatchNormConfig { affine, ..Default::default() }, &shape[1..]).unwrap();
        let mut p = init_params(&l, 1);
        if affine {
            let c = shape[1];
            p[..2 * c].iter_mut().enumerate().for_each(|(i, v)| *v = 0.5 + 0.3 * i as f32);
        }
        for mode in [Mode::Train, Mode::Eval] {
            check_layer(&mut l, &Ctx::simple(mode), &x, &p, Tolerance::default())
                .unwrap_or_else(|e| panic!("affine {affine} {shape:?} {mode:?}: {e}"));
        }
    }
}

#[test]
fn bad_configurations_and_a_single_value_per_channel_are_errors() {
    assert!(BatchNorm::new(BatchNormConfig::default(), &[3, 4]).is_err());
    assert!(BatchNorm::new(BatchNormConfig { eps: 0.0, ..Default::default() }, &[3]).is_err());
    assert!(BatchNorm::new(BatchNormConfig { momentum: 1.5, ..Default::default() }, &[3]).is_err());
    let mut l = BatchNorm::new(BatchNormConfig::default(), &[3]).unwrap();
    let p = init_params(&l, 0);
    let e = l.forward(&Ctx::simple(Mode::Train), &p, &Tensor::zeros(&[1, 3]), &mut Tensor::default()).unwrap_err();
    assert!(e.to_string().contains("more than 1 value per channel"), "{e}");
    l.forward(&Ctx::simple(Mode::Eval), &p, &Tensor::zeros(&[1, 3]), &mut Tensor::default()).unwrap();
}

/// Threads that sum their vectors: a `StatSync` for tests.
struct ThreadSum {
    barrier: Barrier,
    acc: Mutex<Vec<f64>>,
    out: Mutex<Vec<f64>>,
    workers: usize,
    arrived: Mutex<usize>,
}

impl StatSync for ThreadSum {
    fn all_reduce_sum(&self, buf: &mut [f64]) -> Result<(), String> {
        {
            let mut acc = self.acc.lock().unwrap();
            if acc.len() != buf.len() {
                *acc = vec![0.0; buf.len()];
            }
            acc.iter_mut().zip(buf.iter()).for_each(|(a, b)| *a += b);
            let mut n = self.arrived.lock().unwrap();
            *n += 1;
            if *n == self.workers {
                *self.out.lock().unwrap() = std::mem::take(&mut *acc);
                *n = 0;
            }
        }
        self.barrier.wait();
        buf.copy_from_slice(&self.out.lock().unwrap());
        self.barrier.wait();
        Ok(())
    }
}

/// SyncBatchNorm over shards of a batch = BatchNorm over the whole batch: outputs, input and
/// parameter gradients (summed over the workers) and running statistics.
#[test]
fn sync_over_shards_equals_the_whole_batch() {
    let (n, shape) = (6, [3usize, 2, 2]);
    let x = random_tensor(&[n, 3, 2, 2], 7);
    let dy = random_tensor(&[n, 3, 2, 2], 8);
    let mut whole = BatchNorm::new(BatchNormConfig::default(), &shape).unwrap();
    let mut p = init_params(&whole, 0);
    p[..6].copy_from_slice(&[1.2, 0.7, -0.4, 0.3, 0.0, 0.5]);
    let (mut y, mut dx) = (Tensor::default(), Tensor::default());
    let mut dp = vec![0.0; p.len()];
    whole.forward(&Ctx::simple(Mode::Train), &p, &x, &mut y).unwrap();
    whole.backward(&Ctx::simple(Mode::Train), &p, &mut dp, &x, &y, &dy, Some(&mut dx)).unwrap();
    let mut pw = p.clone();
    whole.commit_buffers(&mut pw);
    for workers in [2usize, 3] {
        let sync = Arc::new(ThreadSum {
            barrier: Barrier::new(workers),
            acc: Mutex::new(vec![]),
            out: Mutex::new(vec![]),
            workers,
            arrived: Mutex::new(0),
        });
        let per = x.sample_len();
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..workers)
                .map(|w| {
                    let (sync, p, x, dy) = (sync.clone(), p.clone(), &x, &dy);
                    s.spawn(move || {
                        let rows = crate::ranges::even_range(n, w, workers);
                        let part = |t: &Tensor| {
                            Tensor::from_vec(
                                &[rows.len(), 3, 2, 2],
                                t.data()[rows.start * per..rows.end * per].to_vec(),
                            )
                            .unwrap()
                        };
                        let mut l = BatchNorm::new(BatchNormConfig::default(), &shape).unwrap();
                        let ctx = Ctx { sync: Some(&*sync), ..Ctx::simple(Mode::Train) };
                        let (mut y, mut dx) = (Tensor::default(), Tensor::default());
                        let mut dp = vec![0.0; p.len()];
                        l.forward(&ctx, &p, &part(x), &mut y).unwrap();
                        l.backward(&ctx, &p, &mut dp, &part(x), &y, &part(dy), Some(&mut dx)).unwrap();
                        let mut pc = p.clone();
                        l.commit_buffers(&mut pc);
                        (y.into_vec(), dx.into_vec(), dp, pc)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let cat = |k: usize| -> Vec<f32> {
            results.iter().flat_map(|r| if k == 0 { r.0.clone() } else { r.1.clone() }).collect()
        };
        assert_close(&format!("y, {workers} workers"), &cat(0), y.data(), 1e-5);
        assert_close(&format!("dx, {workers} workers"), &cat(1), dx.data(), 1e-5);
        let mut dsum = vec![0.0f32; p.len()];
        results.iter().for_each(|r| dsum.iter_mut().zip(&r.2).for_each(|(a, b)| *a += b));
        assert_close(&format!("dparams, {workers} workers"), &dsum, &dp, 1e-5);
        for r in &results {
            assert_close(&format!("running stats, {workers} workers"), &r.3, &pw, 1e-6);
        }
    }
}

#[test]
fn threads_split_the_passes_without_changing_a_bit() {
    // Large enough (2·16·24·24 values) for the element-wise passes to go to the thread pool.
    let x = random_tensor(&[2, 16, 24, 24], 5);
    let run = |threads: usize| {
        let mut l = BatchNorm::new(BatchNormConfig::default(), &[16, 24, 24]).unwrap();
        let mut p = init_params(&l, 3);
        p[..16].iter_mut().enumerate().for_each(|(i, v)| *v = 0.5 + i as f32 / 10.0);
        let ctx = Ctx { threads, ..Ctx::simple(Mode::Train) };
        let mut y = Tensor::default();
        l.forward(&ctx, &p, &x, &mut y).unwrap();
        let dy = random_tensor(y.shape(), 6);
        let (mut dp, mut dx) = (vec![0.0; p.len()], Tensor::default());
        l.backward(&ctx, &p, &mut dp, &x, &y, &dy, Some(&mut dx)).unwrap();
        (y, dp, dx)
    };
    let (y1, dp1, dx1) = run(1);
    for t in [2, 3] {
        let (y, dp, dx) = run(t);
        assert_eq!(y.data(), y1.data(), "{t} threads: y");
        assert_eq!(dx.data(), dx1.data(), "{t} threads: dx");
        assert_eq!(dp, dp1, "{t} threads: dparams");
    }
}

/// With a fused ReLU the layer computes bitwise what it computes followed by `Relu`: output,
/// input gradient and parameter gradients, training and evaluation, with and without affine,
/// on 1 and 2 threads (the net fuses them, tests/net: `fused_relus_change_no_bit`).
#[test]
fn a_fused_relu_is_bitwise_the_relu_layer_after_it() {
    use crate::layers::relu::Relu;
    let x = random_tensor(&[4, 5, 6, 7], 3);
    let dy = random_tensor(&[4, 5, 6, 7], 4);
    for affine in [true, false] {
        let cfg = BatchNormConfig { affine, ..Default::default() };
        let plain = BatchNorm::new(cfg, &[5, 6, 7]).unwrap();
        let mut p = init_params(&plain, 0);
        if affine {
            // γ of both signs and a β that puts outputs on both sides of 0.
            for c in 0..5 {
                (p[c], p[5 + c]) = (0.5 - 0.3 * c as f32, 0.2 * c as f32 - 0.3);
            }
        }
        for (mode, threads) in [(Mode::Train, 1), (Mode::Train, 2), (Mode::Eval, 1)] {
            let ctx = Ctx { threads, ..Ctx::simple(mode) };
            let (mut bn, mut relu) = (BatchNorm::new(cfg, &[5, 6, 7]).unwrap(), Relu::new(&[5, 6, 7]).unwrap());
            let (mut z, mut y, mut dz, mut dx, mut dp) =
                (Tensor::default(), Tensor::default(), Tensor::default(), Tensor::default(), vec![0.0; p.len()]);
            bn.forward(&ctx, &p, &x, &mut z).unwrap();
            relu.forward(&ctx, &[], &z, &mut y).unwrap();
            relu.backward(&ctx, &[], &mut [], &z, &y, &dy, Some(&mut dz)).unwrap();
            bn.backward(&ctx, &p, &mut dp, &x, &z, &dz, Some(&mut dx)).unwrap();
            let mut fused = BatchNorm::new(cfg, &[5, 6, 7]).unwrap();
            assert!(fused.fuse_relu(true));
            let (mut fy, mut fdx, mut fdp) = (Tensor::default(), Tensor::default(), vec![0.0; p.len()]);
            fused.forward(&ctx, &p, &x, &mut fy).unwrap();
            fused.backward(&ctx, &p, &mut fdp, &x, &fy, &dy, Some(&mut fdx)).unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let what = format!("affine {affine}, {mode:?}, {threads} threads");
            assert!(y.data().contains(&0.0) && y.data().iter().any(|&v| v > 0.0), "{what}: the ReLU must cut");
            assert_eq!(bits(fy.data()), bits(y.data()), "y, {what}");
            assert_eq!(bits(fdx.data()), bits(dx.data()), "dx, {what}");
            assert_eq!(bits(&fdp), bits(&dp), "dγ, dβ, {what}");
        }
    }
}
