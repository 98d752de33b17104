//! `ParamLayout`: where every parameter tensor lives in the one flat parameter buffer (and, at
//! the same offsets, in the one flat gradient buffer).
//!
//! Built from the layers' `params()` declarations in net order, never indexed by hand. Each
//! layer's tensors are contiguous, so a layer receives one slice, and gradient buckets,
//! parameter-server shards and checkpoints are plain ranges of the buffers.

use std::ops::Range;

/// Per-parameter multipliers of the learning rate and of the weight decay (Caffe's
/// `param { lr_mult decay_mult }`): the tensor learns at lr·`lr` with weight decay wd·`decay`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParamMult {
    /// Learning-rate multiplier; 0 freezes the tensor (the optimizer skips it, its state stays zero).
    pub lr: f32,
    /// Weight-decay multiplier.
    pub decay: f32,
}

impl ParamMult {
    /// No change: what every tensor gets unless the spec says otherwise.
    pub const ONE: ParamMult = ParamMult { lr: 1.0, decay: 1.0 };
    /// Never changed by the optimizer (buffers, lr_mult 0).
    pub const FROZEN: ParamMult = ParamMult { lr: 0.0, decay: 0.0 };

    /// True when the optimizer must leave the tensor alone.
    pub fn is_frozen(self) -> bool {
        self.lr == 0.0
    }
}

/// One named parameter tensor inside the flat buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamEntry {
    /// Full name, "<layer>.<param>", e.g. "conv1.weight" (PyTorch state_dict style).
    pub name: String,
    /// Shape in PyTorch layout.
    pub shape: Vec<usize>,
    /// First element in the flat buffer.
    pub offset: usize,
    /// Index of the owning layer in the net.
    pub layer: usize,
    /// A buffer (BatchNorm's running statistics): saved and gathered like a parameter, but
    /// never given a gradient or changed by the optimizer.
    pub buffer: bool,
    /// Its learning-rate and weight-decay multipliers (`ParamMult::ONE` unless the spec sets them).
    pub mult: ParamMult,
}

impl ParamEntry {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// True for a zero-size tensor.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Its range in the flat buffer.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// The table of all parameter tensors of a net.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamLayout {
    entries: Vec<ParamEntry>,
    layer_ranges: Vec<Range<usize>>,
    total: usize,
}

impl ParamLayout {
    /// Builds the layout from, per layer, its name and its (param name, shape) list.
    pub fn new<'a>(layers: impl IntoIterator<Item = (&'a str, Vec<(&'a str, Vec<usize>)>)>) -> Self {
        let mut layout = ParamLayout::default();
        for (li, (lname, params)) in layers.into_iter().enumerate() {
            let start = layout.total;
            for (pname, shape) in params {
                let e = ParamEntry {
                    name: format!("{lname}.{pname}"),
                    shape,
                    offset: layout.total,
                    layer: li,
                    buffer: false,
                    mult: ParamMult::ONE,
                };
                layout.total += e.len();
                layout.entries.push(e);
            }
            layout.layer_ranges.push(start..layout.total);
        }
        layout
    }

    /// Marks the entry `name` as a buffer (see `ParamEntry::buffer`).
    pub fn mark_buffer(&mut self, name: &str) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.name == name) {
            e.buffer = true;
        }
    }

    /// Sets the multipliers of the entry `name` (see `ParamEntry::mult`).
    pub fn set_mult(&mut self, name: &str, mult: ParamMult) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.name == name) {
            e.mult = mult;
        }
    }

    /// The ranges the optimizer must treat specially, in order, with their multipliers: the
    /// buffers (`ParamMult::FROZEN`) and the tensors whose multipliers are not `ONE`. Empty for a
    /// net without buffers or multipliers, so its optimizer is the plain one.
    pub fn mult_ranges(&self) -> Vec<(Range<usize>, ParamMult)> {
        self.entries
            .iter()
            .filter_map(|e| match (e.buffer, e.mult) {
                (true, _) => Some((e.range(), ParamMult::FROZEN)),
                (false, ParamMult::ONE) => None,
                (false, m) => Some((e.range(), m)),
            })
            .collect()
    }

    /// `mult_ranges` inside `within`, relative to `within.start` (for an optimizer over that
    /// part of the buffer only).
    pub fn mult_ranges_in(&self, within: &Range<usize>) -> Vec<(Range<usize>, ParamMult)> {
        self.mult_ranges()
            .into_iter()
            .filter(|(b, _)| b.start < within.end && b.end > within.start)
            .map(|(b, m)| (b.start.max(within.start) - within.start..b.end.min(within.end) - within.start, m))
            .collect()
    }

    /// The ranges of the buffers, in order (what optimizers must leave alone).
    pub fn buffer_ranges(&self) -> Vec<Range<usize>> {
        self.entries.iter().filter(|e| e.buffer).map(|e| e.range()).collect()
    }

    /// The buffers' ranges inside `within`, relative to `within.start` (for an optimizer over
    /// that part of the buffer only).
    pub fn buffer_ranges_in(&self, within: &Range<usize>) -> Vec<Range<usize>> {
        self.buffer_ranges()
            .into_iter()
            .filter(|b| b.start < within.end && b.end > within.start)
            .map(|b| b.start.max(within.start) - within.start..b.end.min(within.end) - within.start)
            .collect()
    }

    /// Total number of parameters (length of the flat buffers).
    pub fn len(&self) -> usize {
        self.total
    }

    /// True when the net has no parameter.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// All entries in buffer order.
    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The range of layer `i`'s parameters.
    pub fn layer_range(&self, i: usize) -> Range<usize> {
        self.layer_ranges[i].clone()
    }

    /// The view of `name` in a flat buffer.
    pub fn view<'b>(&self, buf: &'b [f32], name: &str) -> Option<&'b [f32]> {
        self.get(name).map(|e| &buf[e.range()])
    }

    /// The mutable view of `name` in a flat buffer.
    pub fn view_mut<'b>(&self, buf: &'b mut [f32], name: &str) -> Option<&'b mut [f32]> {
        let r = self.get(name)?.range();
        Some(&mut buf[r])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_contiguous_in_declaration_order() {
        let l = ParamLayout::new(vec![
            ("conv1", vec![("weight", vec![2, 1, 3, 3]), ("bias", vec![2])]),
            ("relu", vec![]),
            ("fc", vec![("weight", vec![4, 8]), ("bias", vec![4])]),
        ]);
        assert_eq!(l.len(), 18 + 2 + 32 + 4);
        assert_eq!(l.get("conv1.bias").unwrap().offset, 18);
        assert_eq!(l.get("fc.weight").unwrap().range(), 20..52);
        assert_eq!(l.layer_range(1), 20..20);
        assert_eq!(l.layer_range(2), 20..56);
        let buf: Vec<f32> = (0..56).map(|i| i as f32).collect();
        assert_eq!(l.view(&buf, "fc.bias").unwrap(), &[52.0, 53.0, 54.0, 55.0]);
        assert!(l.get("nope").is_none());
    }
}
