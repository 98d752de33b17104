//! Image folders, as torchvision's `ImageFolder` reads them: `DIR/train/<class>/*.png|jpg|jpeg`
//! and `DIR/test/<class>/...` (or `DIR/val/`). Class names are the sub-folders of `train/`,
//! sorted; their positions are the labels. Images in nested folders of a class count too;
//! other files (other extensions, hidden files) are skipped with a warning.
//!
//! Each image becomes `Resize(S)` + `CenterCrop(S)` for `--image-size S` (torchvision's
//! semantics: the shorter side is scaled to S with antialiased bilinear filtering, the longer
//! one to ⌊S·long/short⌋, then the center S×S is cut, its top-left offset rounded half to even as
//! Python's `round`), then `ToTensor()` (CHW, values /255). A non-square size H×W scales the image
//! to cover H×W and cuts its center. 1 channel means grayscale (ITU-R 601 luma), 3 RGB; alpha is
//! dropped.
//!
//! Memory: only the file list is kept. Images are decoded when a batch needs them (every epoch,
//! on the `--loader-threads`), like PyTorch's DataLoader workers, so a folder of any size fits;
//! the OS page cache keeps the files of a small set in memory. Opening the folder reads every
//! file's header, so files that are not PNG/JPEG images fail at once; a file whose pixel data is
//! damaged fails when it is first decoded, naming the file and its sample index.

use super::{DataError, Dataset, Split};
use image::{imageops, ImageBuffer, ImageFormat, ImageReader, Limits, Pixel};
use std::io::{BufRead, Seek};
use std::path::{Path, PathBuf};

/// Names of the split folders.
const TRAIN: &str = "train";
const TEST: [&str; 2] = ["test", "val"];
/// Largest image side accepted, and largest decoder allocation: a damaged header claiming a
/// 100 000 × 100 000 image must not allocate 30 GB (192 MiB: a 60-megapixel RGB photo, and under
/// the 256 MiB single-allocation cap of the fuzz targets).
const MAX_SIDE: u32 = 1 << 15;
const MAX_ALLOC: u64 = 192 << 20;

/// True when `dir` looks like an image folder (has `train/`, `test/` or `val/`).
pub fn detect(dir: &Path) -> bool {
    std::iter::once(TRAIN).chain(TEST).any(|s| dir.join(s).is_dir())
}

/// A split of an image folder: file paths and labels; images are decoded on demand.
#[derive(Clone, Debug)]
pub struct FolderDataset {
    files: Vec<PathBuf>,
    labels: Vec<u32>,
    classes: Vec<String>,
    shape: [usize; 3],
}

fn io_err(path: &Path, source: std::io::Error) -> DataError {
    DataError::Io { path: path.to_path_buf(), source }
}

/// Sub-folder names of `dir`, sorted (byte order, i.e. Python's `sorted` on str).
fn sub_folders(dir: &Path) -> Result<Vec<String>, DataError> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let e = e.map_err(|e| io_err(dir, e))?;
        if e.path().is_dir() {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn is_image_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str()))
}

/// Image files under `dir` (recursively, sorted); counts the other files in `skipped`.
fn walk(dir: &Path, out: &mut Vec<PathBuf>, skipped: &mut usize) -> Result<(), DataError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| io_err(dir, e))?;
    entries.sort();
    for p in entries {
        let hidden = p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if p.is_dir() {
            walk(&p, out, skipped)?;
        } else if is_image_name(&p) && !hidden {
            out.push(p);
        } else if !hidden {
            *skipped += 1;
        }
    }
    Ok(())
}

/// A reader for a PNG or JPEG file, with allocation limits.
fn reader(path: &Path) -> Result<ImageReader<std::io::BufReader<std::fs::File>>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    reader_of(std::io::BufReader::new(file))
}

/// A reader for PNG or JPEG bytes, with allocation limits. The format comes from the content,
/// not the file name (a .png may hold a JPEG).
fn reader_of<R: BufRead + Seek>(inner: R) -> Result<ImageReader<R>, String> {
    let mut r = ImageReader::new(inner).with_guessed_format().map_err(|e| format!("cannot read: {e}"))?;
    match r.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg) => {}
        Some(f) => return Err(format!("is a {f:?} image; hint: only PNG and JPEG are read, convert it or remove it")),
        None => {
            return Err(
                "is not a PNG or JPEG image (unknown content); hint: remove it or replace it with a readable image"
                    .into(),
            )
        }
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    r.limits(limits);
    Ok(r)
}

/// The size an image of `iw`×`ih` is resized to before the center crop of `w`×`h`.
fn resized_size(iw: u32, ih: u32, w: u32, h: u32) -> (u32, u32) {
    if w == h {
        // torchvision `Resize(int)`: the shorter side becomes `w`, the other ⌊w·long/short⌋.
        let s = w as u64;
        let (iw64, ih64) = (iw.max(1) as u64, ih.max(1) as u64);
        if iw <= ih {
            (w, (s * ih64 / iw64).max(s) as u32)
        } else {
            ((s * iw64 / ih64).max(s) as u32, h)
        }
    } else {
        let scale = f64::max(w as f64 / iw.max(1) as f64, h as f64 / ih.max(1) as f64);
        (((iw as f64 * scale) as u32).max(w), ((ih as f64 * scale) as u32).max(h))
    }
}

/// torchvision's center-crop offset `int(round((size - crop) / 2))`, rounding half to even.
fn crop_offset(size: u32, crop: u32) -> u32 {
    let d = size - crop;
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Resizes, center-crops and writes `img` as CHW floats in [0, 1].
fn to_chw<P: Pixel<Subpixel = u8> + 'static>(img: ImageBuffer<P, Vec<u8>>, [h, w]: [usize; 2], out: &mut [f32]) {
    let (w32, h32) = (w as u32, h as u32);
    let (nw, nh) = resized_size(img.width(), img.height(), w32, h32);
    let img =
        if (nw, nh) == img.dimensions() { img } else { imageops::resize(&img, nw, nh, imageops::FilterType::Triangle) };
    let (top, left) = (crop_offset(nh, h32), crop_offset(nw, w32));
    let c = P::CHANNEL_COUNT as usize;
    for y in 0..h {
        for x in 0..w {
            let px = img.get_pixel(left + x as u32, top + y as u32).channels();
            for (ch, &v) in px.iter().enumerate().take(c) {
                out[ch * h * w + y * w + x] = v as f32 / 255.0;
            }
        }
    }
}

/// Decodes an image and writes it resized, center-cropped and scaled to [0, 1] as `shape` (C, H,
/// W) into `out` (C = 1: grayscale, else RGB).
fn decode_into<R: BufRead + Seek>(r: ImageReader<R>, shape: [usize; 3], out: &mut [f32]) -> Result<(), String> {
    let img = r.decode().map_err(|e| format!("cannot decode: {e}; hint: the file is damaged, replace or remove it"))?;
    let size = [shape[1], shape[2]];
    match shape[0] {
        1 => to_chw(luma_601(&img.to_rgb8()), size, out),
        _ => to_chw(img.to_rgb8(), size, out),
    }
    Ok(())
}

/// Decodes PNG or JPEG `bytes` as an image folder does a file (for the fuzz target).
pub fn decode_bytes(bytes: &[u8], shape: [usize; 3], out: &mut [f32]) -> Result<(), String> {
    decode_into(reader_of(std::io::Cursor::new(bytes))?, shape, out)
}

/// Grayscale as PIL's `convert("L")` computes it (ITU-R 601-2 weights, rounded), which is what
/// torchvision's `Grayscale` and `ImageFolder` users get; `image`'s own `to_luma8` uses Rec. 709.
fn luma_601(rgb: &image::RgbImage) -> image::GrayImage {
    image::GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
        let [r, g, b] = rgb.get_pixel(x, y).0.map(u32::from);
        image::Luma([((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8])
    })
}

impl FolderDataset {
    /// Lists `split` of the image folder `dir`; samples are `channels` × `size` (H, W).
    pub fn load_dir(dir: &Path, split: Split, size: [usize; 2], channels: usize) -> Result<FolderDataset, DataError> {
        let bad = |path: &Path, msg: String| DataError::Format { path: path.to_path_buf(), msg };
        if !matches!(channels, 1 | 3) {
            return Err(bad(dir, format!("image folders give 1 (grayscale) or 3 (RGB) channels, not {channels}; hint: use a model whose input has 1 or 3 channels")));
        }
        if size.iter().any(|&s| s == 0 || s > MAX_SIDE as usize) {
            return Err(bad(
                dir,
                format!("image size {}x{} is out of range 1..={MAX_SIDE}; hint: --image-size 32", size[0], size[1]),
            ));
        }
        let train_dir = dir.join(TRAIN);
        let split_dir = match split {
            Split::Train => train_dir.clone(),
            Split::Test => TEST.iter().map(|t| dir.join(t)).find(|p| p.is_dir()).unwrap_or_else(|| dir.join(TEST[0])),
        };
        if !split_dir.is_dir() {
            let candidates = match split {
                Split::Train => "train/".to_string(),
                Split::Test => "test/ or val/".to_string(),
            };
            return Err(DataError::NotFound { dir: dir.to_path_buf(), what: "split folder", candidates });
        }
        // Labels come from train/ for both splits, so that they agree.
        let class_root = if train_dir.is_dir() { &train_dir } else { &split_dir };
        let classes = sub_folders(class_root)?;
        if classes.is_empty() {
            return Err(bad(
                class_root,
                "has no class folders; hint: put each class's images in a folder of its own, e.g. train/cat/1.png"
                    .into(),
            ));
        }
        for name in sub_folders(&split_dir)? {
            if classes.binary_search(&name).is_err() {
                return Err(bad(&split_dir.join(&name), format!("class folder '{name}' is not among the classes of {}; hint: every class of this split needs a folder in train/", class_root.display())));
            }
        }
        let (mut files, mut labels, mut skipped) = (Vec::new(), Vec::new(), 0);
        for (k, name) in classes.iter().enumerate() {
            let class_dir = split_dir.join(name);
            if !class_dir.is_dir() {
                continue; // A test split may lack a class.
            }
            let before = files.len();
            walk(&class_dir, &mut files, &mut skipped)?;
            if files.len() == before {
                return Err(bad(&class_dir, format!("class folder '{name}' has no PNG or JPEG images; hint: add images (.png, .jpg, .jpeg) or remove the folder")));
            }
            labels.resize(files.len(), k as u32);
        }
        if skipped > 0 {
            tracing::warn!(folder = %split_dir.display(), skipped, "files without a .png, .jpg or .jpeg extension are not part of the dataset");
        }
        // Every header now, so that an unreadable file fails before training starts.
        for (i, f) in files.iter().enumerate() {
            let dims = reader(f).and_then(|r| {
                r.into_dimensions().map_err(|e| format!("unreadable image header: {e}; hint: the file is damaged"))
            });
            match dims {
                Ok((w, h)) if w > 0 && h > 0 => {}
                Ok(_) => {
                    return Err(DataError::Record {
                        path: f.clone(),
                        record: i,
                        msg: "the image is empty (0 pixels)".into(),
                    })
                }
                Err(msg) => return Err(DataError::Record { path: f.clone(), record: i, msg }),
            }
        }
        tracing::debug!(folder = %split_dir.display(), images = files.len(), classes = classes.len(), "image folder");
        Ok(FolderDataset { files, labels, classes, shape: [channels, size[0], size[1]] })
    }

    /// The class names, in label order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The file of sample `i`.
    pub fn file(&self, i: usize) -> &Path {
        &self.files[i]
    }
}

impl Dataset for FolderDataset {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn sample_shape(&self) -> &[usize] {
        &self.shape
    }
    fn num_classes(&self) -> usize {
        self.classes.len()
    }
    fn read_raw(&self, i: usize, out: &mut [f32]) -> Result<u32, DataError> {
        let path = &self.files[i];
        let err = |msg: String| DataError::Record { path: path.clone(), record: i, msg };
        decode_into(reader(path).map_err(err)?, self.shape, out).map_err(err)?;
        Ok(self.labels[i])
    }
}

#[cfg(test)]
#[path = "folder_tests.rs"]
mod tests;
