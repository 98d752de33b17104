//! Tests of the loader: order, shards, resume, threads, crop, augmentation, failures.

use super::*;
use crate::data::{synthetic, Normalize, Split};
use std::path::PathBuf;

struct Counting(usize);
impl Dataset for Counting {
    fn len(&self) -> usize {
        self.0
    }
    fn sample_shape(&self) -> &[usize] {
        &[1, 1, 2]
    }
    fn num_classes(&self) -> usize {
        10
    }
    fn read_raw(&self, i: usize, out: &mut [f32]) -> Result<u32, DataError> {
        out.fill(i as f32);
        Ok((i % 10) as u32)
    }
}

/// Fails (or panics) at one sample.
struct Broken {
    at: usize,
    panic: bool,
}
impl Dataset for Broken {
    fn len(&self) -> usize {
        40
    }
    fn sample_shape(&self) -> &[usize] {
        &[1, 1, 1]
    }
    fn num_classes(&self) -> usize {
        2
    }
    fn read_raw(&self, i: usize, _out: &mut [f32]) -> Result<u32, DataError> {
        if i == self.at && self.panic {
            panic!("sample {i} exploded");
        }
        if i == self.at {
            return Err(DataError::Record { path: PathBuf::from("bad.bin"), record: i, msg: "damaged".into() });
        }
        Ok(0)
    }
}

fn drain(l: &mut Loader) -> Vec<Batch> {
    let mut out = Vec::new();
    while let Some(b) = l.next() {
        out.push(b.unwrap());
    }
    out
}

#[test]
fn yields_the_samplers_shards_in_order_and_resumes() {
    let data: Arc<dyn Dataset> = Arc::new(Counting(23));
    let s = Sampler::new(23, 5, 3, false);
    let order = s.epoch_order(2);
    for threads in [1, 2, 4] {
        let feed = Feed { threads, ..Feed::plain(data.clone(), s.clone()) };
        for world in 1..=3 {
            let mut seen = vec![Vec::new(); 5];
            for rank in 0..world {
                let mut l = Loader::new(&feed, 2, 0, Shard::of(rank, world));
                while let Some(b) = l.next() {
                    let b = b.unwrap();
                    assert_eq!(b.x.shape(), &[b.ids.len(), 1, 1, 2]);
                    for (k, &id) in b.ids.iter().enumerate() {
                        assert_eq!(b.x.data()[2 * k], id as f32);
                        assert_eq!(b.labels[k], (id % 10) as u32);
                    }
                    seen[b.index].extend(b.ids.iter().map(|&i| i as usize));
                    l.recycle(b);
                }
            }
            for (b, ids) in seen.iter().enumerate() {
                assert_eq!(ids.as_slice(), s.batch_of(&order, b), "threads {threads} world {world} batch {b}");
            }
        }
        let mut l = Loader::new(&feed, 2, 3, Shard::WHOLE);
        assert_eq!(l.next().unwrap().unwrap().index, 3);
        assert_eq!(l.next().unwrap().unwrap().index, 4);
        assert!(l.next().is_none());
    }
}

/// Cropped, augmented, normalised batches are bitwise the same for 1, 2 and 3 loader threads,
/// and the shards of 2 and 3 workers put together are bitwise the batch of 1 worker (same global
/// sample ids, same windows, same pixels).
#[test]
fn augmented_batches_do_not_depend_on_threads_or_workers() {
    let spec = synthetic::Spec::parse("3x6x5:4:50:1").unwrap();
    let data: Arc<dyn Dataset> = Arc::new(synthetic::Synthetic::new(spec, Split::Train));
    let crop = Some(Crop { h: 4, w: 3 });
    let base = Feed {
        crop,
        augment: Augment { crop_pad: 2, flip: true },
        seed: 9,
        ..Feed::plain(data, Sampler::new(50, 8, 9, false))
    };
    let whole = drain(&mut Loader::new(&base, 1, 0, Shard::WHOLE));
    assert_eq!(whole.len(), 7);
    assert_eq!(whole[0].x.shape(), &[8, 3, 4, 3], "(n, C, crop h, crop w)");
    for threads in [2, 3] {
        let other = drain(&mut Loader::new(&Feed { threads, ..base.clone() }, 1, 0, Shard::WHOLE));
        for (a, b) in whole.iter().zip(&other) {
            assert_eq!((&a.ids, &a.labels), (&b.ids, &b.labels));
            assert!(a.x.data().iter().zip(b.x.data()).all(|(x, y)| x.to_bits() == y.to_bits()), "threads {threads}");
        }
    }
    for world in [2, 3] {
        let shards: Vec<Vec<Batch>> = (0..world)
            .map(|r| drain(&mut Loader::new(&Feed { threads: 2, ..base.clone() }, 1, 0, Shard::of(r, world))))
            .collect();
        for (b, w) in whole.iter().enumerate() {
            let ids: Vec<u64> = shards.iter().flat_map(|s| s[b].ids.clone()).collect();
            let x: Vec<u32> =
                shards.iter().flat_map(|s| s[b].x.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>()).collect();
            assert_eq!(ids, w.ids);
            assert_eq!(x, w.x.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "world {world} batch {b}");
            assert_eq!(shards[world - 1][b].offset + shards[world - 1][b].ids.len(), w.global);
        }
    }
    // Augmentation changed something, and the next epoch augments differently.
    let plain = drain(&mut Loader::new(&Feed { augment: Augment::default(), ..base.clone() }, 1, 0, Shard::WHOLE));
    assert_ne!(plain[0].x.data(), whole[0].x.data());
    let other = drain(&mut Loader::new(&Feed { augment: Augment::default(), ..base.clone() }, 2, 0, Shard::WHOLE));
    assert_ne!(
        plain.iter().map(|b| b.x.data().to_vec()).collect::<Vec<_>>(),
        other.iter().map(|b| b.x.data().to_vec()).collect::<Vec<_>>(),
        "another epoch, other windows"
    );
    let again = drain(&mut Loader::new(&base, 1, 0, Shard::WHOLE));
    assert_eq!(again[0].x.data(), whole[0].x.data());
}

#[test]
fn normalisation_is_applied_after_augmentation() {
    struct Ones;
    impl Dataset for Ones {
        fn len(&self) -> usize {
            4
        }
        fn sample_shape(&self) -> &[usize] {
            &[1, 4, 4]
        }
        fn num_classes(&self) -> usize {
            1
        }
        fn read_raw(&self, _i: usize, out: &mut [f32]) -> Result<u32, DataError> {
            out.fill(1.0);
            Ok(0)
        }
        fn normalization(&self) -> Normalize {
            Normalize::uniform(0.5, 0.25)
        }
    }
    let feed = Feed {
        augment: Augment { crop_pad: 3, flip: false },
        ..Feed::plain(Arc::new(Ones), Sampler::new(4, 4, 0, false))
    };
    let b = drain(&mut Loader::new(&feed, 0, 0, Shard::WHOLE)).remove(0);
    // Pixels are (1 − 0.5)/0.25 = 2, padding (0 − 0.5)/0.25 = −2: padded with black, then normalised.
    assert!(b.x.data().iter().all(|&v| v == 2.0 || v == -2.0));
    assert!(b.x.data().contains(&-2.0), "some crop shows padding");
}

/// Pixel (c, y, x) of sample i is an integer in 0..255, delivered as pixel/255 (convoy's scale).
struct Pixels;
impl Pixels {
    fn pixel(i: usize, k: usize) -> f32 {
        ((i * 37 + k * 11) % 256) as f32
    }
}
impl Dataset for Pixels {
    fn len(&self) -> usize {
        12
    }
    fn sample_shape(&self) -> &[usize] {
        &[2, 5, 7]
    }
    fn num_classes(&self) -> usize {
        1
    }
    fn read_raw(&self, i: usize, out: &mut [f32]) -> Result<u32, DataError> {
        for (k, o) in out.iter_mut().enumerate() {
            *o = Pixels::pixel(i, k) / 255.0;
        }
        Ok(0)
    }
}

/// Crop, mirror, then normalise with the prototxt mapping (m = mean_value/255,
/// s = 1/(255·scale)) gives what Caffe's DataTransformer::Transform computes on 0..255 pixels:
/// top[(c·crop + h)·crop + (mirror ? crop − 1 − w : w)] = (datum[(c·H + h_off + h)·W + w_off + w] − mean[c])·scale,
/// with (h_off, w_off) the sample's keyed window; the evaluation's center window is Caffe's
/// TEST-phase one.
#[test]
fn crop_mirror_and_normalisation_are_caffes_transform() {
    let (mean, scale, size) = ([104.0f32, 117.0], 0.017f32, 3);
    let norm = Normalize::new(mean.iter().map(|m| m / 255.0).collect(), vec![1.0 / (255.0 * scale); 2]);
    struct Norm(Normalize);
    impl Dataset for Norm {
        fn len(&self) -> usize {
            Pixels.len()
        }
        fn sample_shape(&self) -> &[usize] {
            Pixels.sample_shape()
        }
        fn num_classes(&self) -> usize {
            1
        }
        fn read_raw(&self, i: usize, out: &mut [f32]) -> Result<u32, DataError> {
            Pixels.read_raw(i, out)
        }
        fn normalization(&self) -> Normalize {
            self.0.clone()
        }
    }
    let crop = Crop::square(size);
    let feed = Feed {
        crop: Some(crop),
        augment: Augment { crop_pad: 0, flip: true },
        seed: 4,
        ..Feed::plain(Arc::new(Norm(norm)), Sampler::new(12, 12, 4, false))
    };
    let caffe = |i: usize, [h_off, w_off]: [usize; 2], mirror: bool| -> Vec<f32> {
        let (hh, ww) = (5, 7);
        let mut top = vec![0.0; 2 * size * size];
        for (c, &mean_c) in mean.iter().enumerate() {
            for h in 0..size {
                for w in 0..size {
                    let datum = Pixels::pixel(i, (c * hh + h_off + h) * ww + w_off + w);
                    let t = (c * size + h) * size + if mirror { size - 1 - w } else { w };
                    top[t] = (datum - mean_c) * scale;
                }
            }
        }
        top
    };
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5);
    let b = drain(&mut Loader::new(&feed, 3, 0, Shard::WHOLE)).remove(0);
    let mut mirrored = [false; 2];
    for (k, &id) in b.ids.iter().enumerate() {
        let got = &b.x.data()[k * 2 * size * size..(k + 1) * 2 * size * size];
        let at = crop.offset([2, 5, 7], Place::Random { seed: 4, epoch: 3 }, id);
        let m = [false, true].into_iter().find(|&m| close(got, &caffe(id as usize, at, m)));
        let m = m.unwrap_or_else(|| panic!("sample {id}: {got:?} is not Caffe's transform at {at:?}"));
        mirrored[m as usize] = true;
    }
    assert_eq!(mirrored, [true, true], "both coins occur");
    // Evaluation: the center window, ((5 − 3)/2, (7 − 3)/2) = (1, 2), no mirror.
    let mut out = vec![0.0; 2 * size * size];
    crop.read(&Pixels, 5, Place::Center, &mut out, &mut Vec::new()).unwrap();
    let norm = Normalize::new(mean.iter().map(|m| m / 255.0).collect(), vec![1.0 / (255.0 * scale); 2]);
    norm.apply(&mut out, 2);
    assert!(close(&out, &caffe(5, [1, 2], false)), "{out:?}");
}

#[test]
fn a_bad_sample_ends_the_epoch_with_its_error_and_a_panic_is_reported() {
    for (panic, threads) in [(false, 1), (false, 3), (true, 2)] {
        let data: Arc<dyn Dataset> = Arc::new(Broken { at: 17, panic });
        let feed = Feed { threads, ..Feed::plain(data, Sampler::sequential(40, 4)) };
        let mut l = Loader::new(&feed, 0, 0, Shard::WHOLE);
        for b in 0..4 {
            assert_eq!(l.next().unwrap().unwrap().index, b);
        }
        let e = l.next().unwrap().unwrap_err();
        if panic {
            assert!(matches!(&e, DataError::Internal(m) if m.contains("sample 17 exploded")), "{e}");
        } else {
            assert_eq!(e.to_string(), "bad.bin: record 17: damaged");
        }
        assert!(l.next().is_none());
    }
}

#[test]
fn dropping_mid_epoch_returns() {
    let data: Arc<dyn Dataset> = Arc::new(Counting(10_000));
    for threads in [1, 3] {
        let feed = Feed { threads, ..Feed::plain(data.clone(), Sampler::new(10_000, 1, 0, false)) };
        let mut l = Loader::new(&feed, 0, 0, Shard::WHOLE);
        assert!(l.next().is_some());
        drop(l);
    }
}
