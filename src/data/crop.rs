//! `--crop-size`: every sample is cut to an H×W window, at a random place in training and in the
//! center for evaluation — Caffe's `transform_param { crop_size }` (and torchvision's
//! `RandomCrop(size)` / `CenterCrop(size)` without padding). The model's input is then
//! (C, H, W) of the crop while the dataset's samples are larger.
//!
//! The arithmetic is Caffe's DataTransformer (src/caffe/data_transformer.cpp): in the TRAIN
//! phase `h_off = Rand(height − crop_size + 1)`, `w_off = Rand(width − crop_size + 1)`, in the
//! TEST phase `h_off = (height − crop_size) / 2`, `w_off = (width − crop_size) / 2` with integer
//! division (torchvision's CenterCrop rounds instead; this follows Caffe). Training offsets come
//! from `Rng::keyed([seed, CROP, epoch, sample id])`: keyed by the sample like `--augment`
//! (augment.rs), so every worker count, shard and loader thread cuts the same window, and in a
//! stream of their own, so the `--augment` draws are those of a run without a crop.
//!
//! Order (loader.rs, train/input.rs): read the raw sample, cut the window, then `--augment`
//! (padding crop, flip) on the window, then normalise — Caffe's crop, mirror, subtract the mean,
//! scale. What this file does not do: resize (an image folder is resized by `--image-size`
//! first) or pad (a crop larger than the sample is an error, as in Caffe).

use super::{DataError, Dataset};
use crate::tensor::rng::Rng;

/// Key separating crop offsets from other uses of the run's seed (augmentation, dropout, shuffling).
const CROP: u64 = 0x6372_6f70; // "crop"

/// The window cut out of every sample: `h` rows by `w` columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crop {
    /// Rows of the window.
    pub h: usize,
    /// Columns of the window.
    pub w: usize,
}

/// Where a sample's window goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The center (evaluation; Caffe's TEST phase).
    Center,
    /// Uniformly drawn for (seed, epoch, sample id) (training; Caffe's TRAIN phase).
    Random {
        /// The run's seed.
        seed: u64,
        /// The epoch.
        epoch: u64,
    },
}

impl Crop {
    /// A `size`×`size` window (Caffe's crop_size).
    pub fn square(size: usize) -> Crop {
        Crop { h: size, w: size }
    }

    /// Parses `--crop-size`: `N` (N×N) or `HxW`, sides from 1 to 32768.
    pub fn parse(s: &str) -> Result<Crop, String> {
        let dims: Option<Vec<usize>> =
            s.split('x').map(|d| d.trim().parse::<usize>().ok().filter(|d| (1..=32768).contains(d))).collect();
        match dims.as_deref() {
            Some(&[n]) => Ok(Crop::square(n)),
            Some(&[h, w]) => Ok(Crop { h, w }),
            _ => Err(format!("'{s}' is not N or HxW with sides from 1 to 32768, e.g. 28 or 24x32")),
        }
    }

    /// The (C, H, W) of samples of `shape` (C, H, W) once cut, or why the window does not fit.
    pub fn out_shape(&self, shape: &[usize]) -> Result<[usize; 3], String> {
        let &[c, h, w] = shape else { return Err(format!("samples of shape {shape:?} are not (C, H, W) images")) };
        if self.h == 0 || self.w == 0 {
            return Err(format!("a {}×{} window is empty; hint: give a crop of at least 1×1", self.h, self.w));
        }
        if self.h > h || self.w > w {
            return Err(format!(
                "a {}×{} window does not fit in samples of {h}×{w} (shape {shape:?}); hint: crop at most {h}×{w}, or use larger samples (--image-size for an image folder)",
                self.h, self.w
            ));
        }
        Ok([c, self.h, self.w])
    }

    /// The window's top-left corner (row, column) in a sample of `shape` (C, H, W), at `place`
    /// for sample `id`. The window must fit (`out_shape`).
    pub fn offset(&self, shape: [usize; 3], place: Place, id: u64) -> [usize; 2] {
        let (dh, dw) = (shape[1].saturating_sub(self.h), shape[2].saturating_sub(self.w));
        match place {
            Place::Center => [dh / 2, dw / 2],
            Place::Random { seed, epoch } => {
                let mut rng = Rng::keyed(&[seed, CROP, epoch, id]);
                let y = rng.below(dh as u64 + 1) as usize;
                [y, rng.below(dw as u64 + 1) as usize]
            }
        }
    }

    /// Copies the window at `at` (row, column) of `src`, a sample of `shape` (C, H, W), into
    /// `out` (C, self.h, self.w). The window must fit (`out_shape`).
    pub fn cut(&self, src: &[f32], shape: [usize; 3], at: [usize; 2], out: &mut [f32]) {
        let [_, h, w] = shape;
        for (plane, o) in src.chunks_exact((h * w).max(1)).zip(out.chunks_exact_mut((self.h * self.w).max(1))) {
            for (y, row) in o.chunks_exact_mut(self.w.max(1)).enumerate() {
                let start = (at[0] + y) * w + at[1];
                row.copy_from_slice(&plane[start..start + self.w]);
            }
        }
    }

    /// Reads sample `i` of `data` cut to this window at `place` into `out` (C, self.h, self.w),
    /// un-normalised, and returns its label; `scratch` holds the whole sample between calls.
    pub fn read(
        &self,
        data: &dyn Dataset,
        i: usize,
        place: Place,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) -> Result<u32, DataError> {
        let full = data.sample_shape();
        let cut =
            self.out_shape(full).map_err(|m| DataError::Internal(format!("crop not checked against the data: {m}")))?;
        let shape = [full[0], full[1], full[2]];
        if cut == shape {
            return data.read_raw(i, out);
        }
        scratch.resize(shape.iter().product(), 0.0);
        let label = data.read_raw(i, scratch)?;
        self.cut(scratch, shape, self.offset(shape, place, i as u64), out);
        Ok(label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_fit_name_the_mistakes() {
        assert_eq!(Crop::parse("28").unwrap(), Crop::square(28));
        assert_eq!(Crop::parse("24x32").unwrap(), Crop { h: 24, w: 32 });
        for bad in ["0", "x", "-3", "28x", "1x2x3", "99999"] {
            assert!(Crop::parse(bad).unwrap_err().contains("N or HxW"), "{bad}");
        }
        assert_eq!(Crop::square(28).out_shape(&[3, 32, 30]).unwrap(), [3, 28, 28]);
        assert_eq!(Crop::square(32).out_shape(&[1, 32, 32]).unwrap(), [1, 32, 32]);
        let e = Crop::square(33).out_shape(&[1, 32, 40]).unwrap_err();
        assert!(e.contains("33×33") && e.contains("32×40") && e.contains("hint"), "{e}");
        assert!(Crop { h: 4, w: 41 }.out_shape(&[1, 32, 40]).is_err());
        assert!(Crop::square(0).out_shape(&[1, 32, 40]).unwrap_err().contains("empty"));
        assert!(Crop::square(2).out_shape(&[10]).is_err());
    }

    /// The center window is Caffe's TEST-phase arithmetic, ((H − crop)/2, (W − crop)/2) with
    /// integer division, including odd differences (where torchvision would round).
    #[test]
    fn the_center_window_is_caffes() {
        for (shape, crop, want) in [
            ([3, 32, 32], Crop::square(28), [2, 2]),
            ([1, 256, 256], Crop::square(227), [14, 14]),
            ([1, 7, 10], Crop::square(4), [1, 3]),
            ([1, 6, 9], Crop { h: 3, w: 2 }, [1, 3]),
            ([1, 5, 5], Crop::square(5), [0, 0]),
        ] {
            assert_eq!(crop.offset(shape, Place::Center, 3), want, "{shape:?} {crop:?}");
            let caffe = [(shape[1] - crop.h) / 2, (shape[2] - crop.w) / 2];
            assert_eq!(want, caffe);
        }
        // The cut copies exactly the window, every channel.
        let (shape, crop) = ([2, 4, 5], Crop { h: 2, w: 3 });
        let src: Vec<f32> = (0..40).map(|v| v as f32).collect();
        let mut out = vec![0.0; 12];
        crop.cut(&src, shape, crop.offset(shape, Place::Center, 0), &mut out);
        assert_eq!(out, vec![6.0, 7.0, 8.0, 11.0, 12.0, 13.0, 26.0, 27.0, 28.0, 31.0, 32.0, 33.0]);
    }

    /// Training windows lie inside the image, every offset in [0, H − crop] × [0, W − crop]
    /// occurs, and a window depends on (seed, epoch, sample id) only.
    #[test]
    fn random_windows_are_inside_and_keyed_by_sample() {
        let (shape, crop) = ([1, 9, 7], Crop { h: 6, w: 5 });
        let place = Place::Random { seed: 5, epoch: 2 };
        let mut seen = std::collections::HashSet::new();
        for id in 0..400 {
            let at = crop.offset(shape, place, id);
            assert!(at[0] + crop.h <= shape[1] && at[1] + crop.w <= shape[2], "{at:?}");
            assert_eq!(at, crop.offset(shape, place, id), "same key, same window");
            seen.insert(at);
        }
        assert_eq!(seen.len(), 4 * 3, "every offset occurs");
        let moved = (0..20)
            .filter(|&id| crop.offset(shape, place, id) != crop.offset(shape, Place::Random { seed: 5, epoch: 3 }, id))
            .count();
        assert!(moved > 0, "another epoch draws other windows");
        let moved = (0..20)
            .filter(|&id| crop.offset(shape, place, id) != crop.offset(shape, Place::Random { seed: 6, epoch: 2 }, id))
            .count();
        assert!(moved > 0, "another seed draws other windows");
        // A window of the sample's size is the sample.
        assert_eq!(Crop::square(9).offset([1, 9, 9], place, 1), [0, 0]);
    }
}
