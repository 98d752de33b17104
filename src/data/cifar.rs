//! CIFAR-10 and CIFAR-100 in their binary format (https://www.cs.toronto.edu/~kriz/cifar.html):
//! records of a label byte (CIFAR-100: coarse then fine label) and 3072 bytes of 32×32 pixels, red
//! plane, green plane, blue plane. CIFAR-10: `data_batch_1.bin` … `data_batch_5.bin` and
//! `test_batch.bin`; CIFAR-100: `train.bin` and `test.bin` (the fine labels are used). Normalised
//! on read per channel with the training set's mean and standard deviation (torchvision's values).

use super::{DataError, Dataset, Normalize, Split};
use std::path::{Path, PathBuf};

const PIXELS: usize = 3 * 32 * 32;
/// A directory larger than this is not CIFAR (and must not be read whole).
const MAX_BYTES: u64 = 1 << 30;

/// Which CIFAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 10 classes, 1 label byte.
    Cifar10,
    /// 100 classes, 2 label bytes (coarse, fine).
    Cifar100,
}

impl Kind {
    fn label_bytes(self) -> usize {
        match self {
            Kind::Cifar10 => 1,
            Kind::Cifar100 => 2,
        }
    }

    fn classes(self) -> usize {
        match self {
            Kind::Cifar10 => 10,
            Kind::Cifar100 => 100,
        }
    }

    fn files(self, split: Split) -> Vec<&'static str> {
        match (self, split) {
            (Kind::Cifar10, Split::Train) => {
                vec!["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"]
            }
            (Kind::Cifar10, Split::Test) => vec!["test_batch.bin"],
            (Kind::Cifar100, Split::Train) => vec!["train.bin"],
            (Kind::Cifar100, Split::Test) => vec!["test.bin"],
        }
    }

    fn mean_std(self) -> ([f32; 3], [f32; 3]) {
        match self {
            Kind::Cifar10 => ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
            Kind::Cifar100 => ([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]),
        }
    }
}

/// Which CIFAR `dir` holds, if any (by its file names).
pub fn detect(dir: &Path) -> Option<Kind> {
    if dir.join("test_batch.bin").is_file() || dir.join("data_batch_1.bin").is_file() {
        Some(Kind::Cifar10)
    } else if dir.join("train.bin").is_file() || dir.join("test.bin").is_file() {
        Some(Kind::Cifar100)
    } else {
        None
    }
}

/// A CIFAR split in memory.
#[derive(Clone, Debug)]
pub struct CifarDataset {
    kind: Kind,
    pixels: Vec<u8>,
    labels: Vec<u8>,
    shape: [usize; 3],
}

impl CifarDataset {
    /// Loads `split` of the CIFAR in `dir`.
    pub fn load_dir(dir: &Path, kind: Kind, split: Split) -> Result<CifarDataset, DataError> {
        let mut files = Vec::new();
        for name in kind.files(split) {
            let path: PathBuf = dir.join(name);
            let meta = std::fs::metadata(&path).map_err(|source| DataError::Io { path: path.clone(), source })?;
            if meta.len() > MAX_BYTES {
                return Err(DataError::Format {
                    path,
                    msg: format!(
                        "{} bytes is too large for a CIFAR batch file; hint: is this the binary version?",
                        meta.len()
                    ),
                });
            }
            let bytes = std::fs::read(&path).map_err(|source| DataError::Io { path: path.clone(), source })?;
            files.push((path, bytes));
        }
        CifarDataset::from_files(kind, &files)
    }

    /// A dataset from the contents of its batch files (`path` names them in errors).
    pub fn from_files(kind: Kind, files: &[(PathBuf, Vec<u8>)]) -> Result<CifarDataset, DataError> {
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        let record = kind.label_bytes() + PIXELS;
        for (path, bytes) in files {
            if bytes.is_empty() {
                return Err(DataError::Format {
                    path: path.clone(),
                    msg: "the file is empty; hint: the file is truncated, or not the CIFAR binary version".into(),
                });
            }
            if bytes.len() % record != 0 {
                return Err(DataError::Record {
                    path: path.clone(),
                    record: bytes.len() / record,
                    msg: format!(
                        "truncated: {} bytes of {record} ({} bytes is not a whole number of {record}-byte records); hint: the file is damaged or cut off, or not the CIFAR binary version",
                        bytes.len() % record,
                        bytes.len()
                    ),
                });
            }
            for (i, r) in bytes.chunks_exact(record).enumerate() {
                let label = r[kind.label_bytes() - 1];
                if label as usize >= kind.classes() {
                    return Err(DataError::Record {
                        path: path.clone(),
                        record: i,
                        msg: format!(
                            "label {label} is out of range 0..{}; hint: is this CIFAR-10 or CIFAR-100?",
                            kind.classes()
                        ),
                    });
                }
                labels.push(label);
                pixels.extend_from_slice(&r[kind.label_bytes()..]);
            }
        }
        Ok(CifarDataset { kind, pixels, labels, shape: [3, 32, 32] })
    }
}

impl Dataset for CifarDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn sample_shape(&self) -> &[usize] {
        &self.shape
    }
    fn num_classes(&self) -> usize {
        self.kind.classes()
    }
    fn read_raw(&self, i: usize, out: &mut [f32]) -> Result<u32, DataError> {
        for (o, &p) in out.iter_mut().zip(&self.pixels[i * PIXELS..(i + 1) * PIXELS]) {
            *o = p as f32 / 255.0;
        }
        Ok(self.labels[i] as u32)
    }
    fn normalization(&self) -> Normalize {
        let (mean, std) = self.kind.mean_std();
        Normalize::new(mean.to_vec(), std.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("convoy-cifar-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// `n` records whose pixels are all `i` and label `i % classes`.
    fn records(n: usize, label_bytes: usize, classes: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..n {
            if label_bytes == 2 {
                v.push(0);
            }
            v.push((i % classes) as u8);
            v.extend(std::iter::repeat_n(i as u8, PIXELS));
        }
        v
    }

    #[test]
    fn cifar10_and_100_load_normalised_planes_and_labels() {
        let d = dir("10");
        for (k, name) in Kind::Cifar10.files(Split::Train).iter().enumerate() {
            std::fs::write(d.join(name), records(3 + k, 1, 10)).unwrap();
        }
        std::fs::write(d.join("test_batch.bin"), records(4, 1, 10)).unwrap();
        assert_eq!(detect(&d), Some(Kind::Cifar10));
        let train = CifarDataset::load_dir(&d, Kind::Cifar10, Split::Train).unwrap();
        assert_eq!(train.len(), 3 + 4 + 5 + 6 + 7);
        let mut x = vec![0.0; PIXELS];
        // Sample 2 of the first file: pixels 2, label 2.
        assert_eq!(train.get_into(2, &mut x).unwrap(), 2);
        let want_r = (2.0 / 255.0 - 0.4914) / 0.2470;
        let want_b = (2.0 / 255.0 - 0.4465) / 0.2616;
        assert!((x[0] - want_r).abs() < 1e-6 && (x[PIXELS - 1] - want_b).abs() < 1e-6);
        assert_eq!(CifarDataset::load_dir(&d, Kind::Cifar10, Split::Test).unwrap().len(), 4);
        let d100 = dir("100");
        std::fs::write(d100.join("train.bin"), records(120, 2, 100)).unwrap();
        std::fs::write(d100.join("test.bin"), records(5, 2, 100)).unwrap();
        assert_eq!(detect(&d100), Some(Kind::Cifar100));
        let t = CifarDataset::load_dir(&d100, Kind::Cifar100, Split::Train).unwrap();
        assert_eq!((t.len(), t.num_classes()), (120, 100));
        assert_eq!(t.get_into(105, &mut x).unwrap(), 5);
    }

    #[test]
    fn truncated_files_and_bad_labels_are_errors_naming_the_file() {
        let d = dir("bad");
        let mut r = records(2, 1, 10);
        r.pop();
        std::fs::write(d.join("test_batch.bin"), &r).unwrap();
        let e = CifarDataset::load_dir(&d, Kind::Cifar10, Split::Test).unwrap_err().to_string();
        assert!(e.contains("test_batch.bin") && e.contains("record 1: truncated"), "{e}");
        let mut r = records(2, 1, 10);
        r[0] = 12;
        std::fs::write(d.join("test_batch.bin"), &r).unwrap();
        let e = CifarDataset::load_dir(&d, Kind::Cifar10, Split::Test).unwrap_err().to_string();
        assert!(e.contains("record 0: label 12"), "{e}");
        let e = CifarDataset::load_dir(&d, Kind::Cifar10, Split::Train).unwrap_err().to_string();
        assert!(e.contains("data_batch_1.bin"), "{e}");
    }
}
