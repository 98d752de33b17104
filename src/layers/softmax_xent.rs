//! Softmax + cross-entropy, fused and numerically stable (log-sum-exp with the row maximum
//! subtracted), plus top-k accuracy. Not a `Layer`: it takes labels and ends the net.
//!
//! `forward` returns the SUM of per-sample losses; `backward` divides by `denom`, which the caller
//! sets to the GLOBAL batch size. A data-parallel worker holding any shard of the global batch then
//! produces gradients that sum across workers to exactly the mean gradient of the global batch
//! (uneven shards included), which is what one worker computes (PyTorch `reduction='mean'`).

use super::LayerError;
use crate::tensor::Tensor;

/// Fused softmax and cross-entropy loss.
#[derive(Default)]
pub struct SoftmaxCrossEntropy {
    /// Softmax probabilities of the last forward, (N, K).
    probs: Vec<f32>,
    classes: usize,
}

impl SoftmaxCrossEntropy {
    /// A loss head.
    pub fn new() -> SoftmaxCrossEntropy {
        SoftmaxCrossEntropy::default()
    }

    /// Sum over the batch of −log softmax(logits)[label].
    ///
    /// # Shapes
    /// logits: (N, K); labels: N, each < K.
    pub fn forward(&mut self, logits: &Tensor, labels: &[u32]) -> Result<f64, LayerError> {
        let s = logits.shape();
        if s.len() != 2 || s[0] != labels.len() {
            return Err(LayerError::Shape {
                op: "softmax_cross_entropy",
                expected: vec![labels.len(), 0],
                got: s.to_vec(),
            });
        }
        let k = s[1];
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= k) {
            return Err(LayerError::Config {
                op: "softmax_cross_entropy",
                msg: format!("label {bad} is out of range for {k} classes; hint: the model's `classes` must cover the dataset's labels"),
            });
        }
        self.classes = k;
        self.probs.resize(logits.len(), 0.0);
        let mut total = 0.0f64;
        for ((row, p), &label) in
            logits.data().chunks_exact(k.max(1)).zip(self.probs.chunks_exact_mut(k.max(1))).zip(labels)
        {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let mut sum = 0.0f64;
            for (q, &v) in p.iter_mut().zip(row) {
                let e = (v - max).exp();
                *q = e;
                sum += e as f64;
            }
            let inv = (1.0 / sum) as f32;
            p.iter_mut().for_each(|q| *q *= inv);
            total += sum.ln() - (row[label as usize] - max) as f64;
        }
        Ok(total)
    }

    /// Writes d(loss_sum / denom)/d(logits) = (softmax − onehot)/denom into `dlogits`
    /// (resized to the logits' shape). Call after `forward` with the same labels.
    pub fn backward(&self, labels: &[u32], denom: usize, dlogits: &mut Tensor) {
        let k = self.classes.max(1);
        dlogits.resize(&[labels.len(), k]);
        let inv = 1.0 / denom.max(1) as f32;
        for ((d, p), &label) in dlogits.data_mut().chunks_exact_mut(k).zip(self.probs.chunks_exact(k)).zip(labels) {
            for (dv, &pv) in d.iter_mut().zip(p) {
                *dv = pv * inv;
            }
            d[label as usize] -= inv;
        }
    }
}

/// Samples whose label is among the `k` largest logits. Ties count in the sample's favour (the
/// label is counted when fewer than `k` logits are strictly larger than its own).
pub fn correct_topk(logits: &Tensor, labels: &[u32], k: usize) -> usize {
    let classes = logits.shape().get(1).copied().unwrap_or(0).max(1);
    logits
        .data()
        .chunks_exact(classes)
        .zip(labels)
        .filter(|(row, &l)| {
            let Some(&own) = row.get(l as usize) else { return false };
            row.iter().filter(|&&v| v > own).count() < k
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN_LOSS: f64 = 0.38235780596733093;
    const GOLDEN_D: [f32; 15] = [
        0.003885410726070404,
        0.010561641305685043,
        0.028709519654512405,
        0.07804055511951447,
        -0.12119712680578232,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        7.551448106823955e-06,
        -0.1670016348361969,
        0.1663317084312439,
        0.0002500695991329849,
        0.0004122951067984104,
    ];
    use crate::layers::gradcheck::assert_close;

    /// Golden values from PyTorch:
    /// ```python
    /// import torch
    /// z = torch.tensor([[1., 2., 3., 4., 5.], [1000., 0., -1000., 3., 2.], [-3., 7., 7., 0.5, 1.]], requires_grad=True)
    /// y = torch.tensor([4, 0, 1])
    /// l = torch.nn.functional.cross_entropy(z, y); l.backward()
    /// print(l.item(), z.grad.flatten().tolist())
    /// ```
    #[test]
    fn golden_pytorch_with_large_logits() {
        let z = Tensor::from_vec(&[3, 5], vec![1., 2., 3., 4., 5., 1000., 0., -1000., 3., 2., -3., 7., 7., 0.5, 1.])
            .unwrap();
        let labels = [4, 0, 1];
        let mut l = SoftmaxCrossEntropy::new();
        let sum = l.forward(&z, &labels).unwrap();
        assert!((sum / 3.0 - GOLDEN_LOSS).abs() < 1e-6, "{}", sum / 3.0);
        let mut d = Tensor::default();
        l.backward(&labels, 3, &mut d);
        assert_close("dlogits", d.data(), &GOLDEN_D, 1e-6);
    }

    #[test]
    fn gradient_matches_finite_differences_in_f64() {
        let z0: Vec<f32> = (0..12).map(|i| (i as f32 * 1.7).sin() * 3.0).collect();
        let labels = [2, 0, 3];
        let z = Tensor::from_vec(&[3, 4], z0.clone()).unwrap();
        let mut l = SoftmaxCrossEntropy::new();
        l.forward(&z, &labels).unwrap();
        let mut d = Tensor::default();
        l.backward(&labels, 5, &mut d);
        for i in 0..12 {
            let eval = |delta: f32| {
                let mut zz = z0.clone();
                zz[i] += delta;
                SoftmaxCrossEntropy::new().forward(&Tensor::from_vec(&[3, 4], zz).unwrap(), &labels).unwrap() / 5.0
            };
            let num = (eval(1e-2) - eval(-1e-2)) / 2e-2;
            assert!((d.data()[i] as f64 - num).abs() < 1e-4, "{i}: {} vs {num}", d.data()[i]);
        }
    }

    #[test]
    fn topk_and_errors() {
        let z = Tensor::from_vec(&[2, 3], vec![0.1, 0.5, 0.2, 3.0, 1.0, 2.0]).unwrap();
        assert_eq!(correct_topk(&z, &[1, 2], 1), 1);
        assert_eq!(correct_topk(&z, &[1, 2], 2), 2);
        assert_eq!(correct_topk(&z, &[0, 1], 2), 0);
        let mut l = SoftmaxCrossEntropy::new();
        assert!(l.forward(&z, &[0, 3]).unwrap_err().to_string().contains("label 3"));
        assert!(l.forward(&z, &[0]).is_err());
    }
}
