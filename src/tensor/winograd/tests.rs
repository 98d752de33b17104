//! Winograd against an f64 direct sum: every tile, forward, input and weight gradients, and
//! the rounding the docs state.

use super::*;

/// The shape of a test convolution: n images of c channels of h×w, k filters of r×r,
/// padding (ph, pw).
#[derive(Clone, Copy)]
struct Shape {
    n: usize,
    c: usize,
    k: usize,
    h: usize,
    w: usize,
    r: usize,
    ph: usize,
    pw: usize,
}

impl Shape {
    fn out(&self) -> (usize, usize) {
        (self.h + 2 * self.ph + 1 - self.r, self.w + 2 * self.pw + 1 - self.r)
    }

    /// Calls `f(input, weight, output)` with the indices of every multiply-add of the
    /// direct convolution, output by output, each output's terms by channel, row, column.
    fn taps(&self, mut f: impl FnMut(usize, usize, usize)) {
        let Shape { n, c, k, h, w, r, ph, pw } = *self;
        let (oh, ow) = self.out();
        for i in 0..n {
            for o in 0..k {
                for y in 0..oh {
                    for s in 0..ow {
                        for ci in 0..c {
                            for a in 0..r {
                                for b in 0..r {
                                    let (yy, xx) = ((y + a) as isize - ph as isize, (s + b) as isize - pw as isize);
                                    if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
                                        f(
                                            ((i * c + ci) * h + yy as usize) * w + xx as usize,
                                            ((o * c + ci) * r + a) * r + b,
                                            ((i * k + o) * oh + y) * ow + s,
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The direct convolution of x with w, in f64.
    fn reference(&self, x: &[f32], w: &[f32]) -> Vec<f64> {
        let (oh, ow) = self.out();
        let mut y = vec![0.0f64; self.n * self.k * oh * ow];
        self.taps(|xi, wi, yi| y[yi] += x[xi] as f64 * w[wi] as f64);
        y
    }
}

fn data(len: usize, seed: u32) -> Vec<f32> {
    (0..len).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0 - 1.0).collect()
}

/// Largest error relative to the largest magnitude of the reference.
fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max) / scale
}

#[test]
fn forward_and_backward_data_match_the_direct_sum_in_f64() {
    // Maps off the tile size, padding 0, 1 and 2 (rectangular too), channels off 16.
    let cases = [
        (2, 3, 5, 7, 6, 1, 1),
        (1, 17, 4, 5, 5, 0, 0),
        (3, 5, 19, 8, 8, 1, 1),
        (2, 4, 3, 2, 2, 1, 1),
        (1, 2, 3, 4, 9, 2, 1),
        (2, 33, 18, 3, 3, 1, 0),
    ];
    let cases5 = [
        (2, 3, 5, 7, 6, 2, 2),
        (1, 17, 4, 5, 5, 0, 0),
        (3, 5, 19, 15, 15, 2, 2),
        (2, 4, 3, 2, 2, 2, 2),
        (1, 2, 3, 4, 9, 3, 1),
        (2, 33, 18, 6, 5, 4, 0),
    ];
    let runs = cases
        .iter()
        .flat_map(|&cs| [(Tile::F2, 3, cs), (Tile::F4, 3, cs)])
        .chain(cases5.iter().flat_map(|&cs| [(Tile::F2, 5, cs), (Tile::F3, 5, cs)]));
    for (tile, r, (n, c, k, h, w, ph, pw)) in runs {
        let sh = Shape { n, c, k, h, w, r, ph, pw };
        let x = data(n * c * h * w, 1);
        let wt = data(k * c * r * r, 2);
        let b: Vec<f32> = (0..k).map(|i| i as f32 * 0.1).collect();
        let mut win = Winograd::new(tile, r, c, k, h, w, ph, pw).unwrap();
        let (oh, ow) = (win.plan().oh, win.plan().ow);
        assert_eq!((oh, ow), sh.out());
        for threads in [1, 3] {
            let what = format!("{tile:?} {n} {c}->{k} {h}x{w} pad {ph},{pw}, {threads} threads");
            let mut y = vec![f32::NAN; n * k * oh * ow];
            win.forward(threads, &wt, Some(&b), &x, &mut y);
            let mut want = sh.reference(&x, &wt);
            for (i, v) in want.iter_mut().enumerate() {
                *v += b[(i / (oh * ow)) % k] as f64;
            }
            let e = rel_err(&y, &want);
            assert!(e < 1e-5, "{what}: forward {e}");
            // Backward data: the input gradient of sum(y * dy) is the transposed convolution.
            let dy = data(n * k * oh * ow, 3);
            let mut dx = vec![f32::NAN; n * c * h * w];
            win.backward_data(threads, &wt, &dy, &mut dx);
            let mut want = vec![0.0f64; dx.len()];
            sh.taps(|xi, wi, yi| want[xi] += dy[yi] as f64 * wt[wi] as f64);
            let e = rel_err(&dx, &want);
            assert!(e < 1e-5, "{what}: backward data {e}");
            // Weight gradient, accumulated onto 1.0.
            let mut dw = vec![1.0f32; k * c * r * r];
            win.backward_weights(threads, &x, &dy, &mut dw);
            let mut want = vec![1.0f64; dw.len()];
            sh.taps(|xi, wi, yi| want[wi] += dy[yi] as f64 * x[xi] as f64);
            let e = rel_err(&dw, &want);
            assert!(e < 1e-5, "{what}: weight gradient {e}");
        }
    }
}

#[test]
fn a_padding_or_map_the_kernel_does_not_fit_is_refused() {
    assert!(Plan::new(Tile::F4, 3, 1, 1, 5, 5, 3, 1).is_none());
    assert!(Plan::new(Tile::F2, 3, 1, 1, 2, 2, 0, 0).is_none());
    assert_eq!(Plan::new(Tile::F2, 3, 1, 1, 2, 2, 1, 1).map(|p| (p.oh, p.ow)), Some((2, 2)));
    assert!(Plan::new(Tile::F4, 5, 1, 1, 9, 9, 2, 2).is_none(), "F(4×4, 5×5) is not offered");
    assert!(Plan::new(Tile::F3, 3, 1, 1, 9, 9, 1, 1).is_none(), "F(3×3, 3×3) is not offered");
    assert_eq!(Plan::new(Tile::F3, 5, 1, 1, 15, 15, 2, 2).map(|p| (p.th, p.tw)), Some((5, 5)));
    assert!(Plan::new(Tile::F2, 5, 1, 1, 9, 9, 5, 2).is_none());
    assert!(Plan::new(Tile::F2, 7, 1, 1, 9, 9, 3, 3).is_none());
    assert_eq!(Plan::new(Tile::F2, 5, 1, 1, 15, 15, 2, 2).map(|p| (p.oh, p.ow)), Some((15, 15)));
}

/// Largest error relative to the largest output, and RMS error relative to it, of the f32
/// direct sum and of each tile, against the f64 sum, on a 64→64 layer of `h`×`h` maps with
/// weights of Kaiming scale (r×r, padding r / 2).
fn rounding(r: usize, h: usize, tiles: &[Tile]) -> Vec<(f64, f64)> {
    let (n, c, k, p) = (4, 64, 64, r / 2);
    let sh = Shape { n, c, k, h, w: h, r, ph: p, pw: p };
    let x = data(n * c * h * h, 5);
    let scale = (2.0 / (c * r * r) as f32).sqrt();
    let wt: Vec<f32> = data(k * c * r * r, 6).iter().map(|v| v * scale).collect();
    let want = sh.reference(&x, &wt);
    // The direct sum in f32, each output's terms added in order.
    let mut direct = vec![0.0f32; want.len()];
    sh.taps(|xi, wi, yi| direct[yi] += x[xi] * wt[wi]);
    let top = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let rms = |y: &[f32]| {
        (y.iter().zip(&want).map(|(&g, &w)| (g as f64 - w).powi(2)).sum::<f64>() / want.len() as f64).sqrt() / top
    };
    let mut out = vec![(rel_err(&direct, &want), rms(&direct))];
    for &tile in tiles {
        let mut win = Winograd::new(tile, r, c, k, h, h, p, p).unwrap();
        let mut y = vec![0.0; want.len()];
        win.forward(1, &wt, None, &x, &mut y);
        out.push((rel_err(&y, &want), rms(&y)));
    }
    eprintln!("{r}×{r} on {h}×{h}, max / rms error: direct, then {tiles:?}: {out:?}");
    out
}

/// The rounding the docs state. 3×3 on 8×8: the largest error is below 1e-6 for F(2×2) and
/// 1e-5 for F(4×4) (measured 3.2e-7 and 7.9e-6; the sequential f32 direct sum: 8.2e-7), and
/// the RMS error of F(4×4) is within 8× that of the direct sum (measured 5.8e-7 against
/// 1.0e-7; F(2×2) 6.6e-8). 5×5 on 15×15 (AlexNet-CIFAR's conv2): F(2×2) and F(3×3) below
/// 1e-5, and F(3×3)'s RMS error within 8× the direct sum's (measured: largest 5.3e-6 and
/// 6.1e-6 against the direct sum's 1.3e-6; RMS 5.1e-7 and 6.8e-7 against 1.7e-7).
#[test]
fn rounding_stays_within_the_stated_bounds() {
    let e = rounding(3, 8, &[Tile::F2, Tile::F4]);
    assert!(e[1].0 < 1e-6);
    assert!(e[2].0 < 1e-5);
    assert!(e[2].1 < 8.0 * e[0].1);
    let e = rounding(5, 15, &[Tile::F2, Tile::F3]);
    assert!(e[1].0 < 1e-5 && e[2].0 < 1e-5);
    assert!(e[2].1 < 8.0 * e[0].1);
}
