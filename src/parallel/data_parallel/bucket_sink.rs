//! `BucketSink`: what backward writes its gradients through under overlap. It lends each layer
//! its slices of its bucket's parameters and gradients, and hands a bucket to the reducer thread
//! as soon as backward has finished the bucket's lowest layer.

use super::Bucket;
use crate::net::{GradSink, ParamSource};
use std::ops::Range;
use std::sync::mpsc;

/// Hands forward and backward each layer's parameters and gradients out of its bucket's
/// slices, and gives a bucket to the reducer thread when its lowest layer is done.
pub(super) struct BucketSink<'g, 'b> {
    pub(super) slices: Vec<Option<(&'g mut [f32], &'g mut [f32])>>,
    pub(super) buckets: &'b [Bucket],
    pub(super) bucket_of: &'b [usize],
    pub(super) tx: mpsc::Sender<(usize, &'g mut [f32], &'g mut [f32])>,
}

impl BucketSink<'_, '_> {
    pub(super) fn send(&mut self, b: usize) {
        if let Some((p, g)) = self.slices[b].take() {
            // A closed channel means the reducer already failed; its error is reported on join.
            let _ = self.tx.send((b, p, g));
        }
    }

    fn local(&self, i: usize, range: &Range<usize>) -> (usize, Range<usize>) {
        let b = self.bucket_of[i];
        let off = self.buckets[b].params.start;
        (b, range.start - off..range.end - off)
    }
}

const SENT: &str = "a layer's bucket is not sent before the layer is done";

impl ParamSource for BucketSink<'_, '_> {
    fn params(&self, i: usize, range: Range<usize>) -> &[f32] {
        let (b, r) = self.local(i, &range);
        &self.slices[b].as_ref().expect(SENT).0[r]
    }
}

impl GradSink for BucketSink<'_, '_> {
    fn layer(&mut self, i: usize, range: Range<usize>) -> (&[f32], &mut [f32]) {
        let (b, r) = self.local(i, &range);
        let (p, g) = self.slices[b].as_mut().expect(SENT);
        (&p[r.clone()], &mut g[r])
    }

    fn done(&mut self, i: usize) {
        let b = self.bucket_of[i];
        if self.buckets[b].layers.start == i {
            self.send(b);
        }
    }
}
