//! IDX files (the MNIST format, http://yann.lecun.com/exdb/mnist/): a big-endian header
//! `0x00 0x00 type ndims` then `ndims` u32 sizes, then the payload. Only type 0x08 (u8) is used
//! by MNIST and Fashion-MNIST. Files may be gzipped (detected by the gzip magic, not the name).
//!
//! The reader validates everything before it allocates: sizes are multiplied with overflow
//! checks and compared with a cap, so a corrupt header cannot trigger a huge allocation, and the
//! payload must have exactly the announced length (truncated or trailing bytes are errors).

use super::{DataError, Dataset, Normalize, Split};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest payload accepted (4 GiB): far above any IDX dataset, far below a corrupt header's claim.
const MAX_PAYLOAD: u64 = 4 << 30;

/// A decoded IDX array of u8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Row-major payload.
    pub data: Vec<u8>,
}

fn format_err(path: &Path, msg: impl Into<String>) -> DataError {
    DataError::Format { path: path.to_path_buf(), msg: msg.into() }
}

/// Parses IDX bytes (already decompressed); `path` names the source in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray, DataError> {
    if bytes.len() < 4 {
        return Err(format_err(
            path,
            format!("file is {} bytes, too short for an IDX header; hint: the file is truncated", bytes.len()),
        ));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] == 0 || bytes[3] > 4 {
        return Err(format_err(
            path,
            format!("bad IDX magic 0x{magic:08x} (expected 0x00000801 for labels or 0x00000803 for images); hint: is this an MNIST-format file?"),
        ));
    }
    let ndims = bytes[3] as usize;
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(format_err(
            path,
            format!("header needs {header} bytes, file has {}; hint: the file is truncated", bytes.len()),
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| u32::from_be_bytes([bytes[4 + 4 * i], bytes[5 + 4 * i], bytes[6 + 4 * i], bytes[7 + 4 * i]]) as usize)
        .collect();
    let expected = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64)).filter(|&n| n <= MAX_PAYLOAD);
    let Some(expected) = expected else {
        return Err(format_err(
            path,
            format!("dimensions {dims:?} are implausibly large; hint: the header is corrupt"),
        ));
    };
    let got = (bytes.len() - header) as u64;
    if got != expected {
        let what = if got < expected { "truncated" } else { "has trailing bytes" };
        // The first record that is cut short (or the first surplus one).
        let record_bytes = dims[1..].iter().product::<usize>().max(1) as u64;
        return Err(DataError::Record {
            path: path.to_path_buf(),
            record: (got.min(expected) / record_bytes) as usize,
            msg: format!("payload {what}: dimensions {dims:?} need {expected} bytes, file has {got}; hint: the file is damaged or was cut off while copying"),
        });
    }
    Ok(IdxArray { dims, data: bytes[header..].to_vec() })
}

/// Reads an IDX file, gzipped or raw.
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let raw = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    decode_idx(&raw, path)
}

/// Parses the bytes of an IDX file, gzipped or raw; `path` names the source in errors.
pub fn decode_idx(raw: &[u8], path: &Path) -> Result<IdxArray, DataError> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        // Cap the decompressed size too: a gzip bomb must not exhaust memory.
        GzDecoder::new(raw).take(MAX_PAYLOAD + 64).read_to_end(&mut out).map_err(|e| {
            format_err(path, format!("corrupt gzip data ({e}); hint: the file is truncated or damaged"))
        })?;
        parse_idx(&out, path)
    } else {
        parse_idx(raw, path)
    }
}

/// True when `dir` holds an MNIST-format image file (`train-images-idx3-ubyte` and the like).
pub fn detect(dir: &Path) -> bool {
    ["train", "t10k"].iter().any(|p| {
        ["idx3", "idx4"]
            .iter()
            .any(|d| ["", ".gz"].iter().any(|z| dir.join(format!("{p}-images-{d}-ubyte{z}")).is_file()))
    })
}

fn find(dir: &Path, stem: &str, what: &'static str) -> Result<PathBuf, DataError> {
    if !dir.is_dir() {
        return Err(DataError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        });
    }
    let names = [format!("{stem}.gz"), stem.to_string()];
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file()).ok_or_else(|| DataError::NotFound {
        dir: dir.to_path_buf(),
        what,
        candidates: names.join(" or "),
    })
}

/// MNIST-format images (N, H, W) — or (N, C, H, W) for several channels, in files named
/// `*-images-idx4-ubyte` — of u8 with labels, normalised on read as (x/255 − mean)/std.
#[derive(Clone, Debug)]
pub struct IdxDataset {
    images: Vec<u8>,
    labels: Vec<u8>,
    shape: [usize; 3],
    classes: usize,
    mean: f32,
    std: f32,
}

/// MNIST's mean and standard deviation of x/255 (torchvision's MNIST example).
pub const MNIST_MEAN_STD: (f32, f32) = (0.1307, 0.3081);

impl IdxDataset {
    /// Builds a dataset from decoded image and label arrays; `names` name them in errors.
    pub fn from_arrays(images: IdxArray, labels: IdxArray, names: (&Path, &Path)) -> Result<IdxDataset, DataError> {
        if !(3..=4).contains(&images.dims.len()) || images.dims[1..].contains(&0) {
            return Err(format_err(
                names.0,
                format!("images must have dimensions (N, H, W) or (N, C, H, W), found {:?}", images.dims),
            ));
        }
        if labels.dims.len() != 1 {
            return Err(format_err(names.1, format!("labels must have 1 dimension, found {:?}", labels.dims)));
        }
        if images.dims[0] != labels.dims[0] {
            return Err(format_err(
                names.1,
                format!(
                    "{} labels for {} images in {}; hint: the files belong to different sets",
                    labels.dims[0],
                    images.dims[0],
                    names.0.display()
                ),
            ));
        }
        if let Some((i, &l)) = labels.data.iter().enumerate().find(|(_, &l)| l >= 10) {
            return Err(DataError::Record {
                path: names.1.to_path_buf(),
                record: i,
                msg: format!("label {l} is out of range 0..10; hint: MNIST-format labels are 0 to 9"),
            });
        }
        let (mean, std) = MNIST_MEAN_STD;
        let d = &images.dims;
        let shape = if d.len() == 3 { [1, d[1], d[2]] } else { [d[1], d[2], d[3]] };
        Ok(IdxDataset { shape, images: images.data, labels: labels.data, classes: 10, mean, std })
    }

    /// Loads `train-*` or `t10k-*` images and labels (MNIST / Fashion-MNIST names, `.gz` or raw) from `dir`.
    pub fn load_dir(dir: &Path, split: Split) -> Result<IdxDataset, DataError> {
        let prefix = match split {
            Split::Train => "train",
            Split::Test => "t10k",
        };
        let ip = find(dir, &format!("{prefix}-images-idx4-ubyte"), "image")
            .or_else(|_| find(dir, &format!("{prefix}-images-idx3-ubyte"), "image"))?;
        let lp = find(dir, &format!("{prefix}-labels-idx1-ubyte"), "label")?;
        IdxDataset::from_arrays(read_idx(&ip)?, read_idx(&lp)?, (&ip, &lp))
    }

    /// The raw label of sample `i`.
    pub fn label(&self, i: usize) -> u32 {
        self.labels[i] as u32
    }
}

impl Dataset for IdxDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn sample_shape(&self) -> &[usize] {
        &self.shape
    }
    fn num_classes(&self) -> usize {
        self.classes
    }
    fn read_raw(&self, i: usize, out: &mut [f32]) -> Result<u32, DataError> {
        let n = self.shape.iter().product::<usize>();
        for (o, &p) in out.iter_mut().zip(&self.images[i * n..(i + 1) * n]) {
            *o = p as f32 / 255.0;
        }
        Ok(self.labels[i] as u32)
    }
    fn normalization(&self) -> Normalize {
        Normalize::uniform(self.mean, self.std)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;

    fn idx(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        dims.iter().for_each(|d| v.extend_from_slice(&d.to_be_bytes()));
        v.extend_from_slice(payload);
        v
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("convoy-idx-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn raw_and_gzipped_read_the_same() {
        let d = tmp("gz");
        let bytes = idx(0x803, &[2, 3, 2], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        std::fs::write(d.join("a"), &bytes).unwrap();
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(&bytes).unwrap();
        std::fs::write(d.join("b.gz"), enc.finish().unwrap()).unwrap();
        let a = read_idx(&d.join("a")).unwrap();
        assert_eq!(a, read_idx(&d.join("b.gz")).unwrap());
        assert_eq!(a.dims, vec![2, 3, 2]);
        assert_eq!(a.data[11], 12);
    }

    #[test]
    fn corrupt_files_are_rejected_with_the_reason() {
        let p = Path::new("x-idx");
        let e = parse_idx(&idx(0x1234, &[1], &[0]), p).unwrap_err().to_string();
        assert!(e.contains("bad IDX magic 0x00001234") && e.contains("x-idx"), "{e}");
        let e = parse_idx(&idx(0x803, &[2, 2, 2], &[0; 7]), p).unwrap_err().to_string();
        assert!(e.contains("truncated") && e.contains("record 1"), "{e}");
        let e = parse_idx(&idx(0x803, &[1, 2, 2], &[0; 5]), p).unwrap_err().to_string();
        assert!(e.contains("trailing"), "{e}");
        // A header claiming 4e9 × 4e9 images fails at once, without allocating.
        let e = parse_idx(&idx(0x803, &[4_000_000_000, 4_000_000_000, 28], &[0; 10]), p).unwrap_err().to_string();
        assert!(e.contains("implausibly large"), "{e}");
        let e = parse_idx(&idx(0x803, &[4_000_000_000, 28, 28], &[0; 10]), p).unwrap_err().to_string();
        assert!(e.contains("implausibly large") || e.contains("truncated"), "{e}");
        assert!(parse_idx(&[0, 0], p).is_err());
        assert!(parse_idx(&[0, 0, 8, 3, 0], p).unwrap_err().to_string().contains("truncated"));
    }

    #[test]
    fn dataset_checks_counts_and_labels() {
        let img = parse_idx(&idx(0x803, &[2, 1, 1], &[0, 255]), Path::new("i")).unwrap();
        let ok = parse_idx(&idx(0x801, &[2], &[3, 9]), Path::new("l")).unwrap();
        let ds = IdxDataset::from_arrays(img.clone(), ok, (Path::new("i"), Path::new("l"))).unwrap();
        let mut out = [0.0f32];
        assert_eq!(ds.get_into(1, &mut out).unwrap(), 9);
        assert!((out[0] - (1.0 - 0.1307) / 0.3081).abs() < 1e-6);
        let three = parse_idx(&idx(0x801, &[3], &[1, 2, 3]), Path::new("l")).unwrap();
        let e = IdxDataset::from_arrays(img.clone(), three, (Path::new("i"), Path::new("l"))).unwrap_err().to_string();
        assert!(e.contains("3 labels for 2 images"), "{e}");
        let bad = parse_idx(&idx(0x801, &[2], &[1, 11]), Path::new("l")).unwrap();
        let e = IdxDataset::from_arrays(img, bad, (Path::new("i"), Path::new("l"))).unwrap_err().to_string();
        assert!(e.contains("record 1: label 11"), "{e}");
        let e = IdxDataset::load_dir(Path::new("no/such/dir"), Split::Train).unwrap_err().to_string();
        assert!(e.contains("no/such/dir"), "{e}");
        let e = IdxDataset::load_dir(&tmp("empty"), Split::Test).unwrap_err().to_string();
        assert!(e.contains("t10k-images-idx3-ubyte"), "{e}");
    }

    #[test]
    fn vendored_mnist_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
        assert!(detect(&dir) && !detect(&dir.join("no-such")));
        let train = IdxDataset::load_dir(&dir, Split::Train).unwrap();
        let test = IdxDataset::load_dir(&dir, Split::Test).unwrap();
        assert_eq!((train.len(), test.len()), (60_000, 10_000));
        assert_eq!(train.sample_shape(), &[1, 28, 28]);
        assert_eq!((0..5).map(|i| train.label(i)).collect::<Vec<_>>(), vec![5, 0, 4, 1, 9]);
        assert_eq!((0..5).map(|i| test.label(i)).collect::<Vec<_>>(), vec![7, 2, 1, 0, 4]);
        let raw_mean: f64 = train.images.iter().map(|&p| p as f64 / 255.0).sum::<f64>() / train.images.len() as f64;
        assert!((raw_mean - 0.1307).abs() < 1e-3, "{raw_mean}");
    }
}
