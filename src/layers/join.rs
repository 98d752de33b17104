//! Layers with several inputs, where the net stops being a chain: `Add` (a residual connection,
//! Caffe's Eltwise SUM, with optional coefficients), `Mul` and `Max` (Eltwise PROD and MAX) and
//! `Concat` (along channels, Caffe's Concat with axis 1). None has parameters; the net routes
//! their inputs and sums the gradients of an output read twice.

use super::LayerError;
use crate::tensor::Tensor;

/// A parameter-free layer over several inputs.
pub trait Join: Send {
    /// Kind name.
    fn kind(&self) -> &'static str;
    /// Per-sample output shape.
    fn out_shape(&self) -> Vec<usize>;
    /// Forward over the inputs, in the order the spec lists them.
    fn forward(&mut self, xs: &[&Tensor], y: &mut Tensor) -> Result<(), LayerError>;
    /// The gradient of input `k` (of batch shape `x_shape`) from `dy`, the gradient of the last
    /// forward's output `y`: written into `dx`, or added to it with `accumulate` (the input also
    /// feeds another layer).
    fn backward_input(&self, k: usize, x_shape: &[usize], y: &Tensor, dy: &Tensor, dx: &mut Tensor, accumulate: bool);
    /// Intra-op threads for the calls that follow (the net sets the step's before forward).
    fn set_threads(&mut self, _threads: usize) {}
    /// A ReLU fused into the output, as `Layer::fuse_relu` (`y` in `backward_input` is then the
    /// output after the ReLU).
    fn fuse_relu(&mut self, _on: bool) -> bool {
        false
    }
}

fn check(op: &'static str, xs: &[&Tensor], shapes: &[Vec<usize>]) -> Result<usize, LayerError> {
    let n = xs.first().map_or(0, |x| x.dim(0));
    for (x, s) in xs.iter().zip(shapes) {
        super::check_input(op, x, s)?;
        if x.dim(0) != n {
            return Err(LayerError::Config {
                op,
                msg: format!("inputs have different batch sizes {n} and {}", x.dim(0)),
            });
        }
    }
    Ok(n)
}

fn at_least_two(op: &'static str, shapes: &[Vec<usize>]) -> Result<(), LayerError> {
    if shapes.len() < 2 {
        return Err(LayerError::Config {
            op,
            msg: format!("needs at least 2 inputs, got {}; hint: list them in `inputs`", shapes.len()),
        });
    }
    Ok(())
}

/// Checks that element-wise `op` has at least two inputs, all of one shape.
fn same_shapes(op: &'static str, shapes: &[Vec<usize>]) -> Result<(), LayerError> {
    at_least_two(op, shapes)?;
    if let Some(s) = shapes.iter().find(|s| **s != shapes[0]) {
        return Err(LayerError::Config {
            op,
            msg: format!("inputs of shapes {:?} and {s:?} cannot be added (or multiplied, or compared) element-wise; hint: a residual shortcut that changes the shape needs a 1×1 convolution or pad_channels", shapes[0]),
        });
    }
    Ok(())
}

/// Writes `dx` (or adds to it with `accumulate`) element by element from `f(i)`.
fn write_dx(x_shape: &[usize], dx: &mut Tensor, accumulate: bool, f: impl Fn(usize) -> f32) {
    if accumulate {
        dx.data_mut().iter_mut().enumerate().for_each(|(i, d)| *d += f(i));
    } else {
        dx.resize(x_shape);
        dx.data_mut().iter_mut().enumerate().for_each(|(i, d)| *d = f(i));
    }
}

/// Element-wise sum of inputs of one shape, optionally weighted (Caffe's Eltwise SUM `coeff`):
/// y = Σ c_k·x_k.
pub struct Add {
    shapes: Vec<Vec<usize>>,
    /// One per input; empty: all 1 (the plain sum, computed without multiplications).
    coeffs: Vec<f32>,
    /// Threads of the plain sum's passes (`set_threads`).
    threads: usize,
    /// A ReLU fused into the output (`fuse_relu`).
    relu: bool,
}

impl Add {
    /// The layer for inputs of per-sample shapes `shapes` (all equal).
    pub fn new(shapes: &[Vec<usize>]) -> Result<Add, LayerError> {
        Add::weighted(shapes, Vec::new())
    }

    /// y = Σ `coeffs`[k]·x_k; `coeffs` empty (all 1) or one per input.
    pub fn weighted(shapes: &[Vec<usize>], coeffs: Vec<f32>) -> Result<Add, LayerError> {
        same_shapes("add", shapes)?;
        if !coeffs.is_empty() && coeffs.len() != shapes.len() {
            return Err(LayerError::Config {
                op: "add",
                msg: format!("{} coefficients for {} inputs; hint: one coeff per input", coeffs.len(), shapes.len()),
            });
        }
        if let Some(c) = coeffs.iter().find(|c| !c.is_finite()) {
            return Err(LayerError::Config { op: "add", msg: format!("coefficient {c} is not finite") });
        }
        let coeffs = if coeffs.iter().all(|&c| c == 1.0) { Vec::new() } else { coeffs };
        Ok(Add { shapes: shapes.to_vec(), coeffs, threads: 1, relu: false })
    }
}

impl Join for Add {
    fn kind(&self) -> &'static str {
        "add"
    }

    fn out_shape(&self) -> Vec<usize> {
        self.shapes[0].clone()
    }

    fn forward(&mut self, xs: &[&Tensor], y: &mut Tensor) -> Result<(), LayerError> {
        check("add", xs, &self.shapes)?;
        y.resize(xs[0].shape());
        if let ([a, b], true) = (xs, self.coeffs.is_empty()) {
            // The residual add (and its ReLU): one pass.
            if self.relu {
                super::par_zip3(self.threads, y.data_mut(), a.data(), b.data(), |y, a, b| {
                    y.iter_mut().zip(a).zip(b).for_each(|((o, &u), &v)| *o = (u + v).max(0.0));
                });
            } else {
                super::par_zip3(self.threads, y.data_mut(), a.data(), b.data(), |y, a, b| {
                    y.iter_mut().zip(a).zip(b).for_each(|((o, &u), &v)| *o = u + v);
                });
            }
            return Ok(());
        }
        if !self.coeffs.is_empty() {
            let c0 = self.coeffs[0];
            y.data_mut().iter_mut().zip(xs[0].data()).for_each(|(o, &v)| *o = c0 * v);
            for (x, &c) in xs[1..].iter().zip(&self.coeffs[1..]) {
                y.data_mut().iter_mut().zip(x.data()).for_each(|(o, &v)| *o += c * v);
            }
        } else {
            y.data_mut().copy_from_slice(xs[0].data());
            for x in &xs[1..] {
                super::par_zip2(self.threads, y.data_mut(), x.data(), |y, x| {
                    y.iter_mut().zip(x).for_each(|(o, &v)| *o += v)
                });
            }
        }
        if self.relu {
            y.data_mut().iter_mut().for_each(|v| *v = v.max(0.0));
        }
        Ok(())
    }

    fn set_threads(&mut self, threads: usize) {
        self.threads = threads;
    }

    fn fuse_relu(&mut self, on: bool) -> bool {
        self.relu = on;
        true
    }

    fn backward_input(&self, k: usize, x_shape: &[usize], y: &Tensor, dy: &Tensor, dx: &mut Tensor, accumulate: bool) {
        if self.relu {
            // dy where the output passed the ReLU, as `Relu::backward` computes it.
            let (g, y) = (dy.data(), y.data());
            let c = self.coeffs.get(k).copied().unwrap_or(1.0);
            if accumulate {
                super::par_zip3(self.threads, dx.data_mut(), g, y, |d, g, y| {
                    d.iter_mut().zip(g).zip(y).for_each(|((d, &g), &o)| *d += c * if o > 0.0 { g } else { 0.0 })
                });
            } else {
                dx.resize(x_shape);
                super::par_zip3(self.threads, dx.data_mut(), g, y, |d, g, y| {
                    d.iter_mut().zip(g).zip(y).for_each(|((d, &g), &o)| *d = c * if o > 0.0 { g } else { 0.0 })
                });
            }
        } else if let Some(&c) = self.coeffs.get(k) {
            let g = dy.data();
            write_dx(x_shape, dx, accumulate, |i| c * g[i]);
        } else if accumulate {
            super::par_zip2(self.threads, dx.data_mut(), dy.data(), |d, g| {
                d.iter_mut().zip(g).for_each(|(d, &g)| *d += g)
            });
        } else {
            dx.resize(x_shape);
            super::par_zip2(self.threads, dx.data_mut(), dy.data(), |d, g| d.copy_from_slice(g));
        }
    }
}

/// Element-wise product of inputs of one shape (Caffe's Eltwise PROD): y = Π x_k, and
/// ∂y/∂x_k = Π_{j≠k} x_j, computed from the other inputs (Caffe's `stable_prod_grad`, its
/// default: no division by x_k, so zeros are fine).
pub struct Mul {
    shapes: Vec<Vec<usize>>,
    /// The inputs of the last forward (backward needs them), kept between steps.
    xs: Vec<Tensor>,
}

impl Mul {
    /// The layer for inputs of per-sample shapes `shapes` (all equal).
    pub fn new(shapes: &[Vec<usize>]) -> Result<Mul, LayerError> {
        same_shapes("mul", shapes)?;
        Ok(Mul { shapes: shapes.to_vec(), xs: vec![Tensor::default(); shapes.len()] })
    }
}

impl Join for Mul {
    fn kind(&self) -> &'static str {
        "mul"
    }

    fn out_shape(&self) -> Vec<usize> {
        self.shapes[0].clone()
    }

    fn forward(&mut self, xs: &[&Tensor], y: &mut Tensor) -> Result<(), LayerError> {
        check("mul", xs, &self.shapes)?;
        y.resize(xs[0].shape());
        y.data_mut().copy_from_slice(xs[0].data());
        for x in &xs[1..] {
            y.data_mut().iter_mut().zip(x.data()).for_each(|(o, &v)| *o *= v);
        }
        for (kept, x) in self.xs.iter_mut().zip(xs) {
            kept.resize(x.shape());
            kept.data_mut().copy_from_slice(x.data());
        }
        Ok(())
    }

    fn backward_input(&self, k: usize, x_shape: &[usize], _y: &Tensor, dy: &Tensor, dx: &mut Tensor, accumulate: bool) {
        let (g, xs) = (dy.data(), &self.xs);
        write_dx(x_shape, dx, accumulate, |i| {
            xs.iter().enumerate().filter(|(j, _)| *j != k).fold(g[i], |p, (_, x)| p * x.data()[i])
        });
    }
}

/// Element-wise maximum of inputs of one shape (Caffe's Eltwise MAX); the gradient goes to the
/// input that held the maximum, the first of equal ones (as Caffe's `mask`).
pub struct Max {
    shapes: Vec<Vec<usize>>,
    /// Which input held each output value's maximum in the last forward (one per output value).
    argmax: Vec<u32>,
}

impl Max {
    /// The layer for inputs of per-sample shapes `shapes` (all equal).
    pub fn new(shapes: &[Vec<usize>]) -> Result<Max, LayerError> {
        same_shapes("max", shapes)?;
        Ok(Max { shapes: shapes.to_vec(), argmax: Vec::new() })
    }
}

impl Join for Max {
    fn kind(&self) -> &'static str {
        "max"
    }

    fn out_shape(&self) -> Vec<usize> {
        self.shapes[0].clone()
    }

    fn forward(&mut self, xs: &[&Tensor], y: &mut Tensor) -> Result<(), LayerError> {
        check("max", xs, &self.shapes)?;
        y.resize(xs[0].shape());
        y.data_mut().copy_from_slice(xs[0].data());
        self.argmax.clear();
        self.argmax.resize(y.len(), 0);
        for (k, x) in xs.iter().enumerate().skip(1) {
            for ((o, a), &v) in y.data_mut().iter_mut().zip(&mut self.argmax).zip(x.data()) {
                // Strictly greater: a tie stays with the first input.
                if v > *o {
                    *o = v;
                    *a = k as u32;
                }
            }
        }
        Ok(())
    }

    fn backward_input(&self, k: usize, x_shape: &[usize], _y: &Tensor, dy: &Tensor, dx: &mut Tensor, accumulate: bool) {
        let (g, arg) = (dy.data(), &self.argmax);
        write_dx(x_shape, dx, accumulate, |i| if arg[i] == k as u32 { g[i] } else { 0.0 });
    }
}

/// Concatenation along the channel axis (dimension 1 of the batch tensor).
pub struct Concat {
    shapes: Vec<Vec<usize>>,
    /// First channel of each input in the output.
    starts: Vec<usize>,
    channels: usize,
}

impl Concat {
    /// The layer for inputs of per-sample shapes `shapes` (equal but for the first dimension).
    pub fn new(shapes: &[Vec<usize>]) -> Result<Concat, LayerError> {
        at_least_two("concat", shapes)?;
        if let Some(s) = shapes.iter().find(|s| s.is_empty() || s[1..] != shapes[0][1..]) {
            return Err(LayerError::Config {
                op: "concat",
                msg: format!("inputs of shapes {:?} and {s:?} differ beyond the channels; hint: concat joins along channels, the rest must match", shapes[0]),
            });
        }
        let mut starts = Vec::with_capacity(shapes.len());
        let mut channels = 0;
        for s in shapes {
            starts.push(channels);
            channels += s[0];
        }
        Ok(Concat { shapes: shapes.to_vec(), starts, channels })
    }

    /// Values per channel per sample.
    fn inner(&self) -> usize {
        self.shapes[0][1..].iter().product()
    }
}

impl Join for Concat {
    fn kind(&self) -> &'static str {
        "concat"
    }

    fn out_shape(&self) -> Vec<usize> {
        let mut s = self.shapes[0].clone();
        s[0] = self.channels;
        s
    }

    fn forward(&mut self, xs: &[&Tensor], y: &mut Tensor) -> Result<(), LayerError> {
        let n = check("concat", xs, &self.shapes)?;
        let mut shape = vec![n];
        shape.extend(self.out_shape());
        y.resize(&shape);
        let (inner, out_per) = (self.inner(), self.channels * self.inner());
        for (k, x) in xs.iter().enumerate() {
            let per = self.shapes[k][0] * inner;
            let at = self.starts[k] * inner;
            for (o, xi) in y.data_mut().chunks_mut(out_per).zip(x.data().chunks(per)) {
                o[at..at + per].copy_from_slice(xi);
            }
        }
        Ok(())
    }

    fn backward_input(&self, k: usize, x_shape: &[usize], _y: &Tensor, dy: &Tensor, dx: &mut Tensor, accumulate: bool) {
        let inner = self.inner();
        let (per, at, out_per) = (self.shapes[k][0] * inner, self.starts[k] * inner, self.channels * inner);
        if !accumulate {
            dx.resize(x_shape);
        }
        for (d, g) in dx.data_mut().chunks_mut(per).zip(dy.data().chunks(out_per)) {
            if accumulate {
                d.iter_mut().zip(&g[at..at + per]).for_each(|(a, &b)| *a += b);
            } else {
                d.copy_from_slice(&g[at..at + per]);
            }
        }
    }
}

#[cfg(test)]
mod tests;
