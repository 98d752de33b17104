//! The plan of a tensor split: how each layer's output is held (whole on every worker, or sliced
//! along axis 1), where the slices are all-gathered or partial sums all-reduced, which slice of
//! every parameter tensor each worker keeps, and the segments the layers run in.
//!
//! The net may be a DAG (residual `add`, `concat`, `mul`, `max`): the layers are walked in the
//! spec's topological order and each output's form follows from its inputs' forms (`place`).
//! This file decides; `exec.rs` runs the decisions.

use super::{Cut, TrainError};
use crate::net::{LayerSpec, ModelSpec, Net, INPUT};
use crate::ranges::even_range;
use std::ops::Range;

/// How a value (a layer's output) is held by the workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    /// Whole, the same on every worker.
    Full,
    /// Worker w holds entries `even_range(channels, w, mp)` of axis 1 (per-sample axis 0).
    Sliced {
        /// The whole size of axis 1.
        channels: usize,
        /// Where the slice comes from (a Linear reads the two differently).
        kind: Kind,
    },
}

/// The origin of a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Output channels of a convolution (or what per-channel layers made of them).
    Channels,
    /// Output features of a column-parallel Linear: the next Linear is row-parallel.
    Features,
}

/// An input of a segment: the output of an earlier segment (`None`: the net's input), whole
/// (`whole`: its all-gathered copy, when it is sliced) or as it is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Read {
    pub(crate) src: Option<usize>,
    pub(crate) whole: bool,
}

/// Layers run without communication between them: a chain (each reads the previous one, which
/// nothing else reads), or a single join.
#[derive(Clone, Debug)]
pub(crate) struct SegPlan {
    /// Its layers with this worker's sizes, as a model whose input is what the first reads.
    pub(crate) spec: ModelSpec,
    /// Index of its first layer in the whole model.
    pub(crate) first: usize,
    /// Its inputs (one, but for a join), and their per-sample shapes as read.
    pub(crate) reads: Vec<Read>,
    pub(crate) in_shapes: Vec<Vec<usize>>,
    /// How its output is held (after the all-reduce of a row-parallel layer).
    pub(crate) out: Form,
    /// It ends with a row-parallel Linear: its output is a partial sum, all-reduced in forward.
    pub(crate) reduce: bool,
    /// It starts with a split layer (Conv2d, column-parallel Linear) reading a whole input: the
    /// gradient of that input is a partial sum (this worker's slice of the weights' share).
    pub(crate) partial_dx: bool,
    /// Its output is sliced and a reader (or the loss) needs it whole: all-gathered in forward.
    pub(crate) gather: bool,
}

/// The slices of one worker: the segments, and the cut of every parameter tensor (by full name)
/// that is not the whole tensor held by worker 0 alone.
#[derive(Clone, Debug)]
pub struct SplitPlan {
    pub(crate) segments: Vec<SegPlan>,
    pub(crate) cuts: Vec<(String, Cut)>,
}

/// What a layer does under the split.
struct Place {
    /// It reads its inputs whole (a sliced one is all-gathered first).
    whole_in: bool,
    out: Form,
    /// Row-parallel Linear (its output is summed over the workers).
    reduce: bool,
    /// Split by its outputs (Conv2d, column-parallel Linear): its input gradient is partial.
    split: bool,
}

fn chunk(n: usize, w: usize, mp: usize, what: &str, layer: &str) -> Result<Range<usize>, TrainError> {
    let r = even_range(n, w, mp);
    if r.is_empty() {
        return Err(TrainError::Config(format!(
            "--mp {mp}: layer '{layer}' has only {n} {what}, fewer than the slices; hint: use a smaller --mp"
        )));
    }
    Ok(r)
}

/// Worker `w`'s version of `layer` (of `mp` slices) whose inputs are held as `ins`, how it runs,
/// and the cuts of its parameters (pushed to `cuts`).
// Long: one match over the layer kinds, an arm per kind saying how it is split.
fn place(
    layer: &LayerSpec,
    ins: &[Form],
    w: usize,
    mp: usize,
    cuts: &mut Vec<(String, Cut)>,
) -> Result<(LayerSpec, Place), TrainError> {
    let copy = Cut::Copy { owner: w == 0 };
    let keep = |out: Form| Place { whole_in: false, out, reduce: false, split: false };
    let whole = Place { whole_in: true, out: Form::Full, reduce: false, split: false };
    let mut l = layer.clone();
    let place = match &mut l {
        // A grouped convolution (AlexNet's conv2/4/5) is computed whole by every worker on its
        // copy of the parameters: exact, but not split (each output channel reads only its
        // group's input channels, which a cut by output channels would have to follow).
        LayerSpec::Conv2d { name, groups, bias, .. } if *groups != 1 => {
            cuts.push((format!("{name}.weight"), copy.clone()));
            if *bias {
                cuts.push((format!("{name}.bias"), copy));
            }
            whole
        }
        LayerSpec::Conv2d { name, out_channels, bias, .. } => {
            let r = chunk(*out_channels, w, mp, "output channels", name)?;
            cuts.push((format!("{name}.weight"), Cut::Rows(r.clone())));
            if *bias {
                cuts.push((format!("{name}.bias"), Cut::Rows(r.clone())));
            }
            let out = Form::Sliced { channels: *out_channels, kind: Kind::Channels };
            *out_channels = r.len();
            Place { whole_in: true, out, reduce: false, split: true }
        }
        // After a column-parallel Linear: row-parallel (the weight's columns of this worker's
        // features; the bias is added once, by worker 0).
        LayerSpec::Linear { name, bias, lr_mult, decay_mult, .. }
            if matches!(ins[0], Form::Sliced { kind: Kind::Features, .. }) =>
        {
            let Form::Sliced { channels: f, .. } = ins[0] else { unreachable!("matched above") };
            cuts.push((format!("{name}.weight"), Cut::Cols(even_range(f, w, mp))));
            if *bias && w == 0 {
                cuts.push((format!("{name}.bias"), Cut::Whole));
            }
            if *bias && w != 0 {
                // Without its bias the slice has one parameter: keep the weight's multipliers only.
                lr_mult.truncate(1);
                decay_mult.truncate(1);
            }
            *bias = *bias && w == 0;
            Place { whole_in: false, out: Form::Full, reduce: true, split: false }
        }
        // Column-parallel: rows of the weight, slice of the bias.
        LayerSpec::Linear { name, out_features, bias, .. } => {
            let r = chunk(*out_features, w, mp, "output features", name)?;
            cuts.push((format!("{name}.weight"), Cut::Rows(r.clone())));
            if *bias {
                cuts.push((format!("{name}.bias"), Cut::Rows(r.clone())));
            }
            let out = Form::Sliced { channels: *out_features, kind: Kind::Features };
            *out_features = r.len();
            Place { whole_in: true, out, reduce: false, split: true }
        }
        // Per channel (or feature): a sliced input keeps its slice of every tensor; a whole one
        // is computed by every worker on its copy (the same gradients everywhere).
        LayerSpec::BatchNorm { name, affine, .. } => {
            let names: &[&str] = if *affine {
                &["weight", "bias", "running_mean", "running_var"]
            } else {
                &["running_mean", "running_var"]
            };
            let cut = match ins[0] {
                Form::Full => copy.clone(),
                Form::Sliced { channels, .. } => Cut::Rows(even_range(channels, w, mp)),
            };
            for t in names {
                cuts.push((format!("{name}.{t}"), cut.clone()));
            }
            cuts.push((format!("{name}.num_batches_tracked"), copy));
            keep(ins[0])
        }
        LayerSpec::Scale { name, bias, .. } => {
            let cut = match ins[0] {
                Form::Full => copy,
                Form::Sliced { channels, .. } => Cut::Rows(even_range(channels, w, mp)),
            };
            cuts.push((format!("{name}.weight"), cut.clone()));
            if *bias {
                cuts.push((format!("{name}.bias"), cut));
            }
            keep(ins[0])
        }
        LayerSpec::Relu { .. }
        | LayerSpec::Sigmoid { .. }
        | LayerSpec::Tanh { .. }
        | LayerSpec::MaxPool2d { .. }
        | LayerSpec::AvgPool2d { .. }
        | LayerSpec::GlobalAvgPool { .. } => keep(ins[0]),
        // Element-wise: slices stay slices when every input is sliced alike.
        LayerSpec::Add { .. } | LayerSpec::Mul { .. } | LayerSpec::Max { .. }
            if matches!(ins[0], Form::Sliced { .. }) && ins.iter().all(|f| *f == ins[0]) =>
        {
            keep(ins[0])
        }
        // Every channel at once (Flatten and Dropout too: they index whole samples), or inputs
        // held differently: computed whole by every worker.
        LayerSpec::Add { .. }
        | LayerSpec::Mul { .. }
        | LayerSpec::Max { .. }
        | LayerSpec::Concat { .. }
        | LayerSpec::Flatten { .. }
        | LayerSpec::Lrn { .. }
        | LayerSpec::Dropout { .. }
        | LayerSpec::Softmax { .. }
        | LayerSpec::PadChannels { .. } => whole,
    };
    Ok((l, place))
}

/// The first layer of every segment, and for each layer whether its output is all-gathered.
fn segment_starts(spec: &ModelSpec, srcs: &[Vec<Option<usize>>], places: &[Place]) -> (Vec<usize>, Vec<bool>) {
    let n = places.len();
    // Who reads each output, and whether one reads a sliced output whole (the loss reads the
    // last one whole).
    let sliced = |j: usize| matches!(places[j].out, Form::Sliced { .. });
    let mut readers = vec![0usize; n];
    let mut gather = vec![false; n];
    readers[n - 1] += 1;
    gather[n - 1] = sliced(n - 1);
    for (i, s) in srcs.iter().enumerate() {
        for &j in s.iter().flatten() {
            readers[j] += 1;
            gather[j] |= places[i].whole_in && sliced(j);
        }
    }
    // Layer i continues the segment of i - 1 when nothing passes between them: it reads i - 1
    // alone, as held, nothing else reads i - 1, and its input gradient is whole (a split layer
    // starts a segment, so a layer computed whole never sees a partial gradient).
    let continues = |i: usize| {
        i > 0
            && !spec.layers[i].is_join()
            && !spec.layers[i - 1].is_join()
            && srcs[i] == [Some(i - 1)]
            && readers[i - 1] == 1
            && !places[i].whole_in
            && !places[i].split
            && !places[i - 1].reduce
    };
    ((0..n).filter(|&i| !continues(i)).collect(), gather)
}

/// Plans worker `w`'s slices of `spec` for `mp` slices.
pub fn plan(spec: &ModelSpec, w: usize, mp: usize) -> Result<SplitPlan, TrainError> {
    // Per-sample shapes of the whole net's values.
    let full_net = Net::build_segment(spec, 0)?;
    let srcs = spec.sources().map_err(|m| TrainError::Config(format!("model '{}': {m}", spec.name)))?;
    let n = spec.layers.len();
    let mut cuts = Vec::new();
    let mut local = Vec::with_capacity(n);
    let mut places: Vec<Place> = Vec::with_capacity(n);
    for (i, layer) in spec.layers.iter().enumerate() {
        let ins: Vec<Form> = srcs[i].iter().map(|s| s.map_or(Form::Full, |j| places[j].out)).collect();
        let (l, p) = place(layer, &ins, w, mp, &mut cuts)?;
        local.push(l);
        places.push(p);
    }
    let (starts, gather) = segment_starts(spec, &srcs, &places);
    let mut seg_of = vec![0usize; n];
    for (k, &a) in starts.iter().enumerate() {
        seg_of[a..].fill(k);
    }
    let sliced = |j: usize| matches!(places[j].out, Form::Sliced { .. });
    let shape_as_read = |s: Option<usize>, whole: bool| -> Vec<usize> {
        let Some(j) = s else { return spec.input.clone() };
        let mut shape = full_net.layer_out_shape(j);
        if let (false, Form::Sliced { channels, .. }) = (whole, places[j].out) {
            shape[0] = even_range(channels, w, mp).len();
        }
        shape
    };
    let mut segments = Vec::with_capacity(starts.len());
    for (k, &a) in starts.iter().enumerate() {
        let b = starts.get(k + 1).copied().unwrap_or(n);
        let reads: Vec<Read> = srcs[a]
            .iter()
            .map(|&s| Read { src: s.map(|j| seg_of[j]), whole: places[a].whole_in && s.is_some_and(sliced) })
            .collect();
        let in_shapes = srcs[a].iter().zip(&reads).map(|(&s, r)| shape_as_read(s, r.whole)).collect();
        let mut layers = local[a..b].to_vec();
        if !layers[0].is_join() {
            layers[0].map_inputs(&mut |_| Some(INPUT.to_string()));
        }
        let input = if layers[0].is_join() { spec.input.clone() } else { shape_as_read(srcs[a][0], reads[0].whole) };
        segments.push(SegPlan {
            spec: ModelSpec { name: format!("{}-part{k}", spec.name), input, classes: spec.classes, layers },
            first: a,
            reads,
            in_shapes,
            out: places[b - 1].out,
            reduce: places[b - 1].reduce,
            partial_dx: places[a].split,
            gather: gather[b - 1],
        });
    }
    Ok(SplitPlan { segments, cuts })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resnet(name: &str) -> ModelSpec {
        ModelSpec::resolve(name).unwrap()
    }

    #[test]
    fn residual_blocks_keep_slices_through_adds_and_gather_only_for_whole_readers() {
        // Option B: the shortcut convolution's output is sliced like the block's, so every add
        // keeps the slices; each block gathers its input once for its convolutions.
        let spec = resnet("resnet20-b");
        let p = plan(&spec, 1, 2).unwrap();
        let seg = |name: &str| p.segments.iter().find(|s| s.spec.layers.iter().any(|l| l.name() == name)).unwrap();
        let add = seg("layer2_0_add");
        assert_eq!(add.out, Form::Sliced { channels: 32, kind: Kind::Channels });
        assert!(add.reads.iter().all(|r| !r.whole), "{:?}", add.reads);
        assert!(seg("layer1_2_relu2").gather, "read whole by two convolutions");
        assert!(seg("layer2_0_shortcut_conv").partial_dx);
        // Option A: pad_channels needs every channel; the add then mixes a whole input with a
        // sliced one, so it is computed whole.
        let spec = resnet("resnet20");
        let p = plan(&spec, 0, 3).unwrap();
        let seg = |name: &str| p.segments.iter().find(|s| s.spec.layers.iter().any(|l| l.name() == name)).unwrap();
        assert_eq!(seg("layer1_0_add").out, Form::Sliced { channels: 16, kind: Kind::Channels });
        let add = seg("layer2_0_add");
        assert_eq!(add.out, Form::Full);
        assert_eq!(
            add.reads.iter().map(|r| r.whole).collect::<Vec<_>>(),
            [true, false],
            "the block's output gathered, the shortcut already whole"
        );
        // A join runs alone.
        for s in &p.segments {
            assert!(s.spec.layers.len() == 1 || !s.spec.layers.iter().any(LayerSpec::is_join), "{}", s.spec.name);
        }
        // Slices of 16 channels in 3: 6, 5, 5.
        let conv1 = p.cuts.iter().find(|c| c.0 == "conv1.weight").unwrap();
        assert_eq!(conv1.1, Cut::Rows(0..6));
    }

    #[test]
    fn chains_are_planned_as_before() {
        // LeNet: conv | gather | conv | gather | flatten | column-parallel fc1, relu, row-parallel fc2.
        let p = plan(&resnet("lenet"), 0, 2).unwrap();
        let firsts: Vec<(usize, bool, bool, bool)> =
            p.segments.iter().map(|s| (s.first, s.gather, s.reduce, s.partial_dx)).collect();
        assert_eq!(
            firsts,
            [(0, true, false, true), (3, true, false, true), (6, false, false, false), (7, false, true, true)]
        );
        assert_eq!(p.segments[3].out, Form::Full);
    }
}
