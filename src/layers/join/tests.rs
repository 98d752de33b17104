use super::*;
use crate::layers::gradcheck::{assert_close, random_tensor};

/// Finite differences of L = Σ y·r through a join, for each input.
fn gradcheck(j: &mut dyn Join, xs: &mut [Tensor]) {
    let refs: Vec<&Tensor> = xs.iter().collect();
    let mut y = Tensor::default();
    j.forward(&refs, &mut y).unwrap();
    let r = random_tensor(y.shape(), 11);
    let objective = |j: &mut dyn Join, xs: &[Tensor]| -> f64 {
        let refs: Vec<&Tensor> = xs.iter().collect();
        let mut y = Tensor::default();
        j.forward(&refs, &mut y).unwrap();
        y.data().iter().zip(r.data()).map(|(&a, &b)| a as f64 * b as f64).sum()
    };
    // Every input's gradient from the unperturbed forward (Mul and Max keep its state).
    let mut grads = Vec::new();
    for (k, x) in xs.iter().enumerate() {
        let mut dx = Tensor::default();
        j.backward_input(k, x.shape(), &y, &r, &mut dx, false);
        // Accumulating adds the same gradient again.
        let mut twice = dx.clone();
        j.backward_input(k, x.shape(), &y, &r, &mut twice, true);
        grads.push((dx, twice));
    }
    for (k, (dx, twice)) in grads.into_iter().enumerate() {
        for i in 0..xs[k].len() {
            let orig = xs[k].data()[i];
            xs[k].data_mut()[i] = orig + 1e-2;
            let lp = objective(j, xs);
            xs[k].data_mut()[i] = orig - 1e-2;
            let lm = objective(j, xs);
            xs[k].data_mut()[i] = orig;
            let num = (lp - lm) / 2e-2;
            assert!((num - dx.data()[i] as f64).abs() < 1e-4, "input {k}[{i}]: {num} vs {}", dx.data()[i]);
            assert!((twice.data()[i] - 2.0 * dx.data()[i]).abs() < 1e-6);
        }
    }
}

#[test]
fn add_sums_and_routes_the_gradient_to_every_input() {
    let mut a = Add::new(&[vec![2, 3], vec![2, 3], vec![2, 3]]).unwrap();
    let x = Tensor::from_vec(&[1, 2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let mut y = Tensor::default();
    a.forward(&[&x, &x, &x], &mut y).unwrap();
    assert_eq!(y.data(), &[3.0, 6.0, 9.0, 12.0, 15.0, 18.0]);
    gradcheck(&mut a, &mut [random_tensor(&[2, 2, 3], 1), random_tensor(&[2, 2, 3], 2), random_tensor(&[2, 2, 3], 3)]);
    assert!(Add::new(&[vec![2, 3], vec![3, 2]]).is_err());
    assert!(Add::new(&[vec![2, 3]]).is_err());
}

/// K inputs whose values at each element are K levels 0.1 apart (plus noise of ±0.01) in a
/// rotating order: no two within the finite-difference step, and every input wins somewhere.
fn separated(k: usize, shape: &[usize]) -> Vec<Tensor> {
    (0..k)
        .map(|j| {
            let mut t = random_tensor(shape, 20 + j as u64);
            t.data_mut().iter_mut().enumerate().for_each(|(i, v)| *v = 0.1 * ((i + j) % k) as f32 - 0.1 + 0.01 * *v);
            t
        })
        .collect()
}

#[test]
fn weighted_add_mul_and_max_forward_and_gradients() {
    let x = Tensor::from_vec(&[1, 4], vec![1.0, -2.0, 3.0, 0.0]).unwrap();
    let z = Tensor::from_vec(&[1, 4], vec![2.0, -2.0, -1.0, 5.0]).unwrap();
    let mut y = Tensor::default();
    let mut a = Add::weighted(&[vec![4], vec![4]], vec![1.0, -0.5]).unwrap();
    a.forward(&[&x, &z], &mut y).unwrap();
    assert_eq!(y.data(), &[0.0, -1.0, 3.5, -2.5]);
    let mut a = Add::weighted(&[vec![2, 3], vec![2, 3]], vec![0.5, -2.0]).unwrap();
    gradcheck(&mut a, &mut [random_tensor(&[2, 2, 3], 1), random_tensor(&[2, 2, 3], 2)]);
    let mut m = Mul::new(&[vec![4], vec![4]]).unwrap();
    m.forward(&[&x, &z], &mut y).unwrap();
    assert_eq!(y.data(), &[2.0, 4.0, -3.0, 0.0]);
    let mut m3 = Mul::new(&[vec![2, 3], vec![2, 3], vec![2, 3]]).unwrap();
    gradcheck(&mut m3, &mut [random_tensor(&[2, 2, 3], 4), random_tensor(&[2, 2, 3], 5), random_tensor(&[2, 2, 3], 6)]);
    let mut mx = Max::new(&[vec![4], vec![4]]).unwrap();
    mx.forward(&[&x, &z], &mut y).unwrap();
    assert_eq!(y.data(), &[2.0, -2.0, 3.0, 5.0]);
    // The tie at element 1 goes to the first input.
    let (mut d0, mut d1) = (Tensor::default(), Tensor::default());
    let ones = Tensor::from_vec(&[1, 4], vec![1.0; 4]).unwrap();
    mx.backward_input(0, &[1, 4], &y, &ones, &mut d0, false);
    mx.backward_input(1, &[1, 4], &y, &ones, &mut d1, false);
    assert_eq!((d0.data(), d1.data()), (&[0.0, 1.0, 1.0, 0.0][..], &[1.0, 0.0, 0.0, 1.0][..]));
    let mut m3 = Max::new(&[vec![2, 3], vec![2, 3], vec![2, 3]]).unwrap();
    gradcheck(&mut m3, &mut separated(3, &[2, 2, 3]));
    // Batch 1 and odd sizes.
    gradcheck(&mut Max::new(&[vec![5], vec![5]]).unwrap(), &mut separated(2, &[1, 5]));
    gradcheck(&mut Mul::new(&[vec![5], vec![5]]).unwrap(), &mut [random_tensor(&[1, 5], 7), random_tensor(&[1, 5], 8)]);
    assert!(Mul::new(&[vec![2, 3], vec![3, 2]]).is_err() && Max::new(&[vec![2]]).is_err());
    assert!(Add::weighted(&[vec![2], vec![2]], vec![1.0]).is_err());
}

/// A tensor of `shape` with element i = f(i), computed in f64 like the Python scripts below.
fn seq(shape: &[usize], f: impl Fn(f64) -> f64) -> Tensor {
    let n = shape.iter().product::<usize>();
    Tensor::from_vec(shape, (0..n).map(|i| f(i as f64) as f32).collect()).unwrap()
}

/// Forward of `j` on `xs`, then every input's gradient for upstream gradient `dy`: compared
/// with PyTorch's `y` and `dxs` (tolerance 1e-5).
fn golden(what: &str, j: &mut dyn Join, xs: &[&Tensor], dy: &Tensor, y_want: &[f32], dxs_want: &[&[f32]]) {
    let mut y = Tensor::default();
    j.forward(xs, &mut y).unwrap();
    assert_eq!(y.shape(), dy.shape(), "{what}");
    assert_close(&format!("{what} y"), y.data(), y_want, 1e-5);
    for (k, (x, want)) in xs.iter().zip(dxs_want).enumerate() {
        let mut dx = Tensor::default();
        j.backward_input(k, x.shape(), &y, dy, &mut dx, false);
        assert_eq!(dx.shape(), x.shape(), "{what} dx{k}");
        assert_close(&format!("{what} dx{k}"), dx.data(), want, 1e-5);
    }
}

// Golden values from PyTorch 2.15 (float64), produced by:
//   def t(f, n, shape): return torch.tensor([f(i) for i in range(n)], dtype=torch.float64).reshape(shape).requires_grad_(True)
//   a = t(lambda i: math.sin(i*0.7)*2 + i*0.05, 24, (2,3,2,2))
//   b = t(lambda i: math.cos(i*1.3)*1.5 - i*0.02, 24, (2,3,2,2))
//   c = t(lambda i: math.sin(i*0.4 + 1)*1.2, 24, (2,3,2,2))
//   d = t(lambda i: math.cos(i*0.9)*0.8, 16, (2,2,2,2))
//   dy = torch.tensor([math.cos(i*0.3) for i in range(24)], dtype=torch.float64).reshape(2,3,2,2)
//   dyc = torch.tensor([math.cos(i*0.3) for i in range(40)], dtype=torch.float64).reshape(2,5,2,2)
//   r = lambda v: [round(x, 7) for x in v.flatten().tolist()]
//   for name, f, ins, g in [("add", lambda: a + b, (a, b), dy),
//                           ("sum coeff", lambda: 0.5*a - 2.0*b + 1.5*c, (a, b, c), dy),
//                           ("prod", lambda: a*b*c, (a, b, c), dy),
//                           ("max", lambda: torch.stack((a, b, c)).max(dim=0).values, (a, b, c), dy),
//                           ("concat", lambda: torch.cat((a, d), dim=1), (a, d), dyc)]:
//       y = f(); gs = torch.autograd.grad(y, ins, g)
//       print(name, r(y), *map(r, gs))
//   s = torch.stack((a, b, c)).detach(); top = s.sort(dim=0).values
//   print(s.argmax(dim=0).flatten().tolist(), (top[2]-top[1]).min().item())
// The last line shows every input of MAX winning somewhere, with the runner-up at least 0.105
// below (no ties, where PyTorch and Caffe route differently, and no flip in f32); a[0] = 0
// makes the PROD gradients of b and c there 0 (Caffe's stable_prod_grad divides by nothing).
#[test]
fn golden_pytorch_add_eltwise_and_concat() {
    let a = seq(&[2, 3, 2, 2], |i| (i * 0.7).sin() * 2.0 + i * 0.05);
    let b = seq(&[2, 3, 2, 2], |i| (i * 1.3).cos() * 1.5 - i * 0.02);
    let c = seq(&[2, 3, 2, 2], |i| (i * 0.4 + 1.0).sin() * 1.2);
    let d = seq(&[2, 2, 2, 2], |i| (i * 0.9).cos() * 0.8);
    let dy = seq(&[2, 3, 2, 2], |i| (i * 0.3).cos());
    let dyc = seq(&[2, 5, 2, 2], |i| (i * 0.3).cos());
    let s3 = vec![vec![3, 2, 2]; 3];
    #[rustfmt::skip]
    golden("add", &mut Add::new(&s3[..2]).unwrap(), &[&a, &b], &dy,
        &[1.5, 1.7196836, 0.7455663, 0.7275203, 1.4927513, 0.913315, -1.4822184, -3.1764876, -1.8640097, 1.2750223, 2.9751434, 2.0631648, 0.5779314, 0.4735443, 0.8815704, -0.1156691, -2.0342454, -2.2173965, 0.3653891, 3.2708689, 3.5515937, 1.4789147, -0.15492, 0.0081206],
        &[dy.data(), dy.data()]);
    #[rustfmt::skip]
    golden("sum coeff", &mut Add::weighted(&s3, vec![0.5, -2.0, 1.5]).unwrap(), &[&a, &b, &c], &dy,
        &[-1.4853522, 1.6805307, 5.4390417, 4.6912998, 0.1173406, -2.7015301, -1.103416, 1.214368, 0.0028497, -3.1296189, -3.1414174, 0.7985355, 3.7808479, 2.1238422, -1.2847621, -1.1095648, 2.7902768, 5.2664855, 3.3806519, 0.5030257, 1.0916627, 3.9405004, 3.9157694, -0.3113726],
        &[
            &[0.5, 0.4776682, 0.4126678, 0.310805, 0.1811789, 0.0353686, -0.113601, -0.2524231, -0.3686969, -0.4520361, -0.4949962, -0.4937399, -0.4483792, -0.3629662, -0.2451304, -0.1053979, 0.0437495, 0.1889889, 0.3173464, 0.4173564, 0.4800851, 0.4999293, 0.4751163, 0.4078626],
            &[-2.0, -1.910673, -1.6506712, -1.2432199, -0.7247155, -0.1414744, 0.4544042, 1.0096922, 1.4747874, 1.8081443, 1.979985, 1.9749595, 1.7935168, 1.4518646, 0.9805216, 0.4215916, -0.174998, -0.7559555, -1.2693858, -1.6694256, -1.9203406, -1.9997173, -1.9004652, -1.6314502],
            &[1.5, 1.4330047, 1.2380034, 0.932415, 0.5435366, 0.1061058, -0.3408031, -0.7572692, -1.1060906, -1.3561082, -1.4849887, -1.4812197, -1.3451376, -1.0888985, -0.7353912, -0.3161937, 0.1312485, 0.5669666, 0.9520393, 1.2520692, 1.4402554, 1.499788, 1.4253489, 1.2235877],
        ]);
    #[rustfmt::skip]
    golden("prod", &mut Mul::new(&s3).unwrap(), &[&a, &b, &c], &dy,
        &[0.0, 0.6034218, -3.2074237, -2.091562, 0.3351581, -0.1043726, -0.0172887, -1.8515854, -0.9034476, -0.4563908, -2.423775, 1.0850795, 2.2288844, 0.1046361, -0.0112683, -0.7112136, 1.0941864, 0.847542, -0.6571685, 1.9805064, 0.8409305, -0.1029078, 1.3965379, 0.1224101],
        &[
            &[1.5146478, 0.430705, -1.2782856, -0.6928815, 0.1395982, 0.0163498, -0.0027218, -0.5788363, -0.772372, 0.8531565, 1.3227974, -0.4241296, -0.8655693, -0.0589651, -0.1676183, -0.148526, -0.0826518, -0.8293383, -0.4312245, 0.7221727, 0.2708414, -0.0375318, 0.777756, 0.2587822],
            &[0.0, 1.5120616, 1.9973853, 1.1316368, 0.1950096, -0.0054093, -0.1005463, -0.5986016, -0.6652145, 0.5213711, 2.0664663, 2.3133844, 1.1545137, 0.0932406, 0.0060407, 0.1677488, -0.1093062, -0.1749485, 0.6930221, 1.6839203, 1.415614, 0.0814945, -0.7130167, -0.2643455],
            &[0.0, 0.4874854, -2.2652423, -1.3400758, 0.1963252, -0.0435978, -0.0128095, -1.2731247, -0.6369656, -0.3460249, -2.0852524, 1.1554772, 3.5850937, 0.761817, 0.0147771, 0.1901622, 0.0887758, 0.2673495, -0.3694825, 1.875863, 1.6326949, -3.4608628, -3.0175339, -0.1188939],
        ]);
    #[rustfmt::skip]
    golden("max", &mut Max::new(&s3).unwrap(), &[&a, &b, &c], &dy,
        &[1.5, 1.3384354, 2.0708995, 1.8764187, 0.8699763, 1.3648814, -0.0390669, -0.7342295, -0.8625333, 0.7913945, 1.8139732, 2.5263365, 2.3091978, 1.2881967, 0.9145287, 0.8937225, 1.0784497, 1.198252, 1.1288767, 2.2891395, 2.9812147, 2.7414937, 1.7062367, 0.3858572],
        &[
            &[0.0, 0.9553365, 0.8253356, 0.62161, 0.3623578, 0.0, 0.0, 0.0, -0.7373937, 0.0, -0.9899925, -0.9874798, -0.8967584, -0.7259323, 0.0, 0.0, 0.0, 0.0, 0.0, 0.8347128, 0.9601703, 0.9998586, 0.9502326, 0.8157251],
            &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0707372, -0.2272021, 0.0, 0.0, -0.9040721, 0.0, 0.0, 0.0, 0.0, -0.4902608, -0.2107958, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.5048461, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.087499, 0.3779777, 0.6346929, 0.0, 0.0, 0.0, 0.0, 0.0],
        ]);
    #[rustfmt::skip]
    golden("concat", &mut Concat::new(&[vec![3, 2, 2], vec![2, 2, 2]]).unwrap(), &[&a, &d], &dyc,
        &[0.0, 1.3384354, 2.0708995, 1.8764187, 0.8699763, -0.4515665, -1.4431515, -1.6149052, -0.8625333, 0.4836278, 1.8139732, 2.5263365, 0.8, 0.497288, -0.1817617, -0.7232577, -0.7174067, -0.1686366, 0.5077543, 0.7998869, 2.3091978, 1.2881967, -0.0329583, -1.0093915, -1.1583555, -0.3862742, 0.9672461, 2.2891395, 2.9812147, 2.7414937, 1.7062367, 0.3858572, 0.4866811, -0.1948353, -0.7289042, -0.7113529, -0.1554639, 0.5180771, 0.7995477, 0.4759365],
        &[
            &[1.0, 0.9553365, 0.8253356, 0.62161, 0.3623578, 0.0707372, -0.2272021, -0.5048461, -0.7373937, -0.9040721, -0.9899925, -0.9874798, 0.9601703, 0.9998586, 0.9502326, 0.8157251, 0.6083513, 0.3466353, 0.0539554, -0.2435442, -0.5192887, -0.7486466, -0.9111303, -0.9922253],
            &[-0.8967584, -0.7259323, -0.4902608, -0.2107958, 0.087499, 0.3779777, 0.6346929, 0.8347128, -0.9846879, -0.8891912, -0.7142657, -0.4755369, -0.1943299, 0.104236, 0.3934909, 0.6475963],
        ]);
}

#[test]
fn concat_stacks_channels() {
    let mut c = Concat::new(&[vec![1, 2], vec![2, 2]]).unwrap();
    assert_eq!(c.out_shape(), vec![3, 2]);
    let a = Tensor::from_vec(&[2, 1, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let b = Tensor::from_vec(&[2, 2, 2], vec![10.0, 11.0, 12.0, 13.0, 20.0, 21.0, 22.0, 23.0]).unwrap();
    let mut y = Tensor::default();
    c.forward(&[&a, &b], &mut y).unwrap();
    assert_eq!(y.shape(), &[2, 3, 2]);
    assert_eq!(y.data(), &[1.0, 2.0, 10.0, 11.0, 12.0, 13.0, 3.0, 4.0, 20.0, 21.0, 22.0, 23.0]);
    let mut c3 = Concat::new(&[vec![1, 2, 3], vec![3, 2, 3]]).unwrap();
    gradcheck(&mut c3, &mut [random_tensor(&[2, 1, 2, 3], 4), random_tensor(&[2, 3, 2, 3], 5)]);
    assert!(Concat::new(&[vec![1, 2, 2], vec![1, 2, 3]]).is_err());
    let mut c = Concat::new(&[vec![1, 2], vec![2, 2]]).unwrap();
    assert!(c.forward(&[&a, &a], &mut y).is_err(), "wrong input shape");
}
/// Add with a fused ReLU is bitwise Add followed by `Relu`, for the residual pair, a
/// weighted sum and three inputs, writing and accumulating the input gradients.
#[test]
fn a_fused_relu_is_bitwise_the_relu_layer_after_it() {
    use crate::layers::{relu::Relu, Ctx, Layer, Mode};
    let shapes = vec![vec![3, 4, 5]; 3];
    let xs: Vec<Tensor> = (0..3).map(|k| random_tensor(&[2, 3, 4, 5], 20 + k)).collect();
    let dy = random_tensor(&[2, 3, 4, 5], 30);
    let ctx = Ctx::simple(Mode::Train);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for (inputs, coeffs) in [(2, vec![]), (2, vec![0.5, -2.0]), (3, vec![])] {
        let make = || Add::weighted(&shapes[..inputs], coeffs.clone()).unwrap();
        let refs: Vec<&Tensor> = xs[..inputs].iter().collect();
        let (mut add, mut relu) = (make(), Relu::new(&[3, 4, 5]).unwrap());
        let (mut z, mut y, mut dz) = (Tensor::default(), Tensor::default(), Tensor::default());
        add.forward(&refs, &mut z).unwrap();
        relu.forward(&ctx, &[], &z, &mut y).unwrap();
        relu.backward(&ctx, &[], &mut [], &z, &y, &dy, Some(&mut dz)).unwrap();
        let mut fused = make();
        assert!(fused.fuse_relu(true));
        let mut fy = Tensor::default();
        fused.forward(&refs, &mut fy).unwrap();
        assert_eq!(bits(fy.data()), bits(y.data()), "y, {inputs} inputs {coeffs:?}");
        for (k, xk) in xs.iter().enumerate().take(inputs) {
            for acc in [false, true] {
                let (mut want, mut got) = (xk.clone(), xk.clone());
                add.backward_input(k, xk.shape(), &z, &dz, &mut want, acc);
                fused.backward_input(k, xk.shape(), &fy, &dy, &mut got, acc);
                assert_eq!(bits(got.data()), bits(want.data()), "dx{k}, {inputs} inputs {coeffs:?}, accumulate {acc}");
            }
        }
    }
}
