//! Per-sample augmentation of training images (random crop with zero padding, horizontal flip)
//! and per-channel normalisation, on one (C, H, W) sample at a time.
//!
//! Randomness comes from `Rng::keyed([seed, AUGMENT, epoch, sample id])`: a sample's augmentation
//! depends on the run's seed, the epoch and its global index only — not on the worker, the
//! shard, the loader thread or the batch — so every strategy and worker count sees the same
//! augmented global batch. The order is torchvision's CIFAR recipe: `RandomCrop(size,
//! padding=P)` (pad with 0, i.e. black, before normalising), `RandomHorizontalFlip()` (p = 0.5),
//! `ToTensor()`, `Normalize(mean, std)`. The test set is never augmented.

use crate::tensor::rng::Rng;

/// Key separating augmentation streams from other uses of the run's seed (dropout, shuffling).
const AUGMENT: u64 = 0x6175_676d; // "augm"

/// `--augment`: what is done to every training sample.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Augment {
    /// Random crop of the original size from the image padded with this many zeros on each side
    /// (0: no crop).
    pub crop_pad: usize,
    /// Horizontal flip with probability 1/2.
    pub flip: bool,
}

impl Augment {
    /// Parses `--augment`: a comma list of `crop:P` and `flip`, or `none`.
    pub fn parse(s: &str) -> Result<Augment, String> {
        let mut a = Augment::default();
        for item in s.split(',').map(str::trim) {
            match item.split_once(':') {
                _ if item == "none" => {}
                _ if item == "flip" => a.flip = true,
                Some(("crop", p)) => match p.parse::<usize>() {
                    Ok(p) if (1..=1024).contains(&p) => a.crop_pad = p,
                    _ => return Err(format!("'{item}': the padding must be a whole number of pixels from 1 to 1024, e.g. crop:4")),
                },
                _ => return Err(format!("unknown augmentation '{item}'; hint: a comma list of crop:PADDING and flip (e.g. crop:4,flip), or none")),
            }
        }
        Ok(a)
    }

    /// True when it changes nothing.
    pub fn is_identity(&self) -> bool {
        self.crop_pad == 0 && !self.flip
    }

    /// Augments one sample `x` of `shape` (C, H, W) in place; `scratch` is reused between calls.
    pub fn apply(&self, x: &mut [f32], shape: [usize; 3], (seed, epoch, id): (u64, u64, u64), scratch: &mut Vec<f32>) {
        if self.is_identity() {
            return;
        }
        let [c, h, w] = shape;
        let mut rng = Rng::keyed(&[seed, AUGMENT, epoch, id]);
        // Always draw the crop offsets and then the coin, so that each decision has its own
        // place in the stream whatever else is switched on.
        let p = self.crop_pad;
        let dy = rng.below(2 * p as u64 + 1) as usize;
        let dx = rng.below(2 * p as u64 + 1) as usize;
        let flip = self.flip && rng.next_u64() >> 63 == 1;
        if p > 0 && (dy != p || dx != p) {
            scratch.clear();
            scratch.extend_from_slice(x);
            // Output (y, x) reads padded (y + dy, x + dx), i.e. input (y + dy − p, x + dx − p).
            for ch in 0..c {
                let (src, dst) = (&scratch[ch * h * w..(ch + 1) * h * w], &mut x[ch * h * w..(ch + 1) * h * w]);
                for y in 0..h {
                    let sy = (y + dy).wrapping_sub(p);
                    let row = &mut dst[y * w..(y + 1) * w];
                    if sy >= h {
                        row.fill(0.0);
                        continue;
                    }
                    for (xo, o) in row.iter_mut().enumerate() {
                        let sx = (xo + dx).wrapping_sub(p);
                        *o = if sx < w { src[sy * w + sx] } else { 0.0 };
                    }
                }
            }
        }
        if flip {
            for row in x.chunks_exact_mut(w.max(1)) {
                row.reverse();
            }
        }
    }
}

/// Per-channel normalisation `(x − mean[c]) / std[c]` (torchvision's `Normalize`); one value
/// applies to every channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalize {
    mean: Vec<f32>,
    std: Vec<f32>,
}

/// ImageNet's per-channel mean and standard deviation (the torchvision models' preprocessing).
pub const IMAGENET: ([f32; 3], [f32; 3]) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);

impl Normalize {
    /// Leaves values as they are.
    pub fn identity() -> Normalize {
        Normalize::uniform(0.0, 1.0)
    }

    /// The same mean and std for every channel.
    pub fn uniform(mean: f32, std: f32) -> Normalize {
        Normalize { mean: vec![mean], std: vec![std] }
    }

    /// Per-channel values (`mean` and `std` of equal length, 1 or C).
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Normalize {
        Normalize { mean, std }
    }

    /// Parses `--normalize`: `MEAN:STD` with comma lists of one value or one per channel
    /// (`0.4914,0.4822,0.4465:0.2470,0.2435,0.2616`), `imagenet`, or `none`.
    pub fn parse(s: &str) -> Result<Normalize, String> {
        match s.trim() {
            "none" => return Ok(Normalize::identity()),
            "imagenet" => return Ok(Normalize::new(IMAGENET.0.to_vec(), IMAGENET.1.to_vec())),
            _ => {}
        }
        let hint = "hint: MEAN:STD with comma lists, e.g. 0.49,0.48,0.45:0.25,0.24,0.26 or 0.1307:0.3081, or imagenet, or none";
        let Some((m, sd)) = s.split_once(':') else { return Err(format!("'{s}' is not MEAN:STD; {hint}")) };
        let list = |t: &str| {
            t.split(',').map(|v| v.trim().parse::<f32>().ok().filter(|x| x.is_finite())).collect::<Option<Vec<f32>>>()
        };
        let (Some(mean), Some(std)) = (list(m), list(sd)) else {
            return Err(format!("'{s}' has a value that is not a number; {hint}"));
        };
        if mean.len() != std.len() {
            return Err(format!("'{s}' gives {} means and {} standard deviations; {hint}", mean.len(), std.len()));
        }
        if std.iter().any(|&v| v <= 0.0) {
            return Err(format!("'{s}': every standard deviation must be positive"));
        }
        Ok(Normalize { mean, std })
    }

    /// Checks that it fits data with `channels` channels.
    pub fn check_channels(&self, channels: usize) -> Result<(), String> {
        match self.mean.len() {
            1 => Ok(()),
            n if n == channels => Ok(()),
            n => Err(format!("--normalize gives {n} values per statistic but the data has {channels} channels; hint: give 1 or {channels}")),
        }
    }

    /// Normalises one sample of `channels` planes in place.
    pub fn apply(&self, x: &mut [f32], channels: usize) {
        if self.mean.iter().all(|&m| m == 0.0) && self.std.iter().all(|&s| s == 1.0) {
            return;
        }
        let plane = x.len() / channels.max(1);
        for (c, p) in x.chunks_exact_mut(plane.max(1)).enumerate() {
            let k = if self.mean.len() == 1 { 0 } else { c.min(self.mean.len() - 1) };
            let (m, s) = (self.mean[k], self.std[k]);
            for v in p {
                *v = (*v - m) / s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_the_documented_forms_and_names_mistakes() {
        assert_eq!(Augment::parse("crop:4,flip").unwrap(), Augment { crop_pad: 4, flip: true });
        assert_eq!(Augment::parse("none").unwrap(), Augment::default());
        assert!(Augment::parse("flip").unwrap().flip);
        assert!(Augment::parse("crop:x").unwrap_err().contains("crop:4"));
        assert!(Augment::parse("rotate:10").unwrap_err().contains("unknown augmentation 'rotate:10'"));
        let n = Normalize::parse("0.5,0.25,0:0.5,0.25,2").unwrap();
        let mut x = vec![1.0, 1.0, 0.5, 0.5, 4.0, 4.0];
        n.apply(&mut x, 3);
        assert_eq!(x, vec![1.0, 1.0, 1.0, 1.0, 2.0, 2.0]);
        assert_eq!(Normalize::parse("none").unwrap(), Normalize::identity());
        assert_eq!(Normalize::parse("imagenet").unwrap().mean.len(), 3);
        assert!(Normalize::parse("0.5").unwrap_err().contains("MEAN:STD"));
        assert!(Normalize::parse("0.5,0.5:1").unwrap_err().contains("2 means and 1"));
        assert!(Normalize::parse("0.5:0").unwrap_err().contains("positive"));
        assert!(Normalize::parse("0.5:abc").unwrap_err().contains("not a number"));
        assert!(Normalize::parse("0.1,0.2:1,1").unwrap().check_channels(3).unwrap_err().contains("3 channels"));
        assert!(Normalize::parse("0.1:1").unwrap().check_channels(3).is_ok());
    }

    /// The crop is a window of the zero-padded image; the flip mirrors rows; both depend only on
    /// (seed, epoch, id).
    #[test]
    fn crop_and_flip_are_windows_of_the_padded_image_keyed_by_sample() {
        let (c, h, w, p) = (2, 3, 4, 2);
        let img: Vec<f32> = (1..=(c * h * w)).map(|v| v as f32).collect();
        let aug = Augment { crop_pad: p, flip: true };
        let mut scratch = Vec::new();
        let mut seen_flip = [false; 2];
        let mut offsets = std::collections::HashSet::new();
        for id in 0..200 {
            let mut x = img.clone();
            aug.apply(&mut x, [c, h, w], (7, 3, id), &mut scratch);
            let mut again = img.clone();
            aug.apply(&mut again, [c, h, w], (7, 3, id), &mut scratch);
            assert_eq!(x, again, "same key, same result");
            // Find the (dy, dx, flip) that explains the output.
            let found = (0..=2 * p)
                .flat_map(|dy| (0..=2 * p).flat_map(move |dx| [(dy, dx, false), (dy, dx, true)]))
                .find(|&(dy, dx, f)| {
                    (0..c).all(|ch| {
                        (0..h).all(|y| {
                            (0..w).all(|xo| {
                                let xs = if f { w - 1 - xo } else { xo };
                                let (sy, sx) = ((y + dy) as isize - p as isize, (xs + dx) as isize - p as isize);
                                let want = if (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx) {
                                    img[ch * h * w + sy as usize * w + sx as usize]
                                } else {
                                    0.0
                                };
                                x[ch * h * w + y * w + xo] == want
                            })
                        })
                    })
                });
            let (dy, dx, f) = found.unwrap_or_else(|| panic!("sample {id}: {x:?} is no padded crop"));
            seen_flip[f as usize] = true;
            offsets.insert((dy, dx));
        }
        assert_eq!(seen_flip, [true, true]);
        assert_eq!(offsets.len(), 25, "every offset in 0..=2p occurs");
        let (mut a, mut b) = (img.clone(), img.clone());
        aug.apply(&mut a, [c, h, w], (7, 3, 1), &mut scratch);
        aug.apply(&mut b, [c, h, w], (7, 4, 1), &mut scratch);
        let mut differ = a != b;
        for id in 2..10 {
            let (mut a, mut b) = (img.clone(), img.clone());
            aug.apply(&mut a, [c, h, w], (7, 3, id), &mut scratch);
            aug.apply(&mut b, [c, h, w], (7, 4, id), &mut scratch);
            differ |= a != b;
        }
        assert!(differ, "another epoch draws other crops");
        let mut x = img.clone();
        Augment::default().apply(&mut x, [c, h, w], (7, 3, 1), &mut scratch);
        assert_eq!(x, img);
    }
}
