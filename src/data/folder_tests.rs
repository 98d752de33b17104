//! Tests of the image-folder dataset on small folders written here.

use super::*;
use image::{GrayImage, Luma, Rgb, RgbImage};

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("convoy-folder-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn solid(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_pixel(w, h, Rgb(rgb)).save(path).unwrap();
}

#[test]
fn classes_are_sorted_folders_and_images_are_decoded_to_chw() {
    let d = tmp("ok");
    solid(&d.join("train/dog/a.png"), 4, 4, [0, 255, 0]);
    solid(&d.join("train/cat/b.png"), 4, 4, [255, 0, 0]);
    solid(&d.join("train/cat/nested/c.jpg"), 8, 8, [128, 128, 128]);
    std::fs::write(d.join("train/cat/notes.txt"), "not an image").unwrap();
    std::fs::write(d.join("train/cat/.DS_Store"), "hidden").unwrap();
    solid(&d.join("val/dog/x.png"), 4, 4, [0, 0, 255]);
    assert!(detect(&d) && !detect(&d.join("train")));
    let train = FolderDataset::load_dir(&d, Split::Train, [4, 4], 3).unwrap();
    assert_eq!(train.classes(), ["cat", "dog"]);
    assert_eq!((train.len(), train.num_classes(), train.sample_shape()), (3, 2, &[3usize, 4, 4][..]));
    let mut x = vec![0.0; 48];
    assert_eq!(train.read_raw(0, &mut x).unwrap(), 0, "cat/b.png");
    assert!(x[..16].iter().all(|&v| v == 1.0) && x[16..].iter().all(|&v| v == 0.0), "{x:?}");
    // JPEG, downscaled 8×8 → 4×4: a uniform gray stays (nearly) uniform.
    assert_eq!(train.read_raw(1, &mut x).unwrap(), 0, "cat/nested/c.jpg");
    assert!(x.iter().all(|&v| (v - 128.0 / 255.0).abs() < 3.0 / 255.0), "{x:?}");
    assert_eq!(train.read_raw(2, &mut x).unwrap(), 1);
    // The test split is val/ here; labels follow train/'s class list.
    let test = FolderDataset::load_dir(&d, Split::Test, [4, 4], 1).unwrap();
    assert_eq!((test.len(), test.num_classes()), (1, 2));
    let mut g = vec![0.0; 16];
    assert_eq!(test.read_raw(0, &mut g).unwrap(), 1);
    // PIL's convert("L") of pure blue: (255·7471 + 2^15) >> 16 = 29.
    assert!(g.iter().all(|&v| v == 29.0 / 255.0), "{g:?}");
}

#[test]
fn resize_and_center_crop_follow_torchvision() {
    // Resize(224) of a 500×375 photo: the short side becomes 224, the long one ⌊224·500/375⌋.
    assert_eq!(resized_size(500, 375, 224, 224), (298, 224));
    assert_eq!(resized_size(375, 500, 224, 224), (224, 298));
    assert_eq!(resized_size(32, 32, 32, 32), (32, 32));
    assert_eq!(resized_size(10, 40, 32, 16), (32, 128));
    // Python's round: half to even.
    assert_eq!([crop_offset(35, 32), crop_offset(33, 32), crop_offset(37, 32), crop_offset(34, 32)], [2, 0, 2, 1]);
    // A 7×4 image whose column x has value 10·x: no resize (the short side is already 4), the
    // center 4 columns start at round(1.5) = 2.
    let d = tmp("crop");
    let img = GrayImage::from_fn(7, 4, |x, _| Luma([10 * x as u8]));
    std::fs::create_dir_all(d.join("train/a")).unwrap();
    img.save(d.join("train/a/0.png")).unwrap();
    let ds = FolderDataset::load_dir(&d, Split::Train, [4, 4], 1).unwrap();
    let mut x = vec![0.0; 16];
    ds.read_raw(0, &mut x).unwrap();
    let row: Vec<u8> = x[..4].iter().map(|v| (v * 255.0).round() as u8).collect();
    assert_eq!(row, vec![20, 30, 40, 50]);
    assert_eq!(x[..4], x[12..]);
}

#[test]
fn bad_folders_and_images_are_errors_naming_the_file() {
    let d = tmp("bad");
    let err = |split| FolderDataset::load_dir(&d, split, [4, 4], 3).unwrap_err().to_string();
    std::fs::create_dir_all(d.join("train")).unwrap();
    assert!(err(Split::Train).contains("no class folders"), "{}", err(Split::Train));
    solid(&d.join("train/cat/0.png"), 4, 4, [1, 2, 3]);
    std::fs::create_dir_all(d.join("train/dog")).unwrap();
    let e = err(Split::Train);
    assert!(e.contains("train/dog") && e.contains("has no PNG or JPEG images"), "{e}");
    solid(&d.join("train/dog/0.png"), 4, 4, [1, 2, 3]);
    let e = err(Split::Test);
    assert!(e.contains("test/ or val/"), "{e}");
    solid(&d.join("test/bird/0.png"), 4, 4, [1, 2, 3]);
    let e = err(Split::Test);
    assert!(e.contains("test/bird") && e.contains("not among the classes"), "{e}");
    std::fs::remove_dir_all(d.join("test/bird")).unwrap();
    // Not an image at all: found when the folder is opened, naming file and sample.
    std::fs::write(d.join("train/dog/1.png"), b"hello, not a png").unwrap();
    let e = err(Split::Train);
    assert!(e.contains("train/dog/1.png: record 2") && e.contains("not a PNG or JPEG"), "{e}");
    // A PNG cut short: its header reads, its pixels do not.
    let mut png = Vec::new();
    RgbImage::from_fn(16, 16, |x, y| Rgb([x as u8 * 16, y as u8 * 16, 7]))
        .write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
        .unwrap();
    std::fs::write(d.join("train/dog/1.png"), &png[..png.len() / 2]).unwrap();
    let ds = FolderDataset::load_dir(&d, Split::Train, [4, 4], 3).unwrap();
    let e = ds.read_raw(2, &mut [0.0; 48]).unwrap_err().to_string();
    assert!(e.contains("train/dog/1.png: record 2: cannot decode"), "{e}");
    // Other formats are named.
    std::fs::write(d.join("train/dog/1.png"), b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
    assert!(err(Split::Train).contains("Gif"), "{}", err(Split::Train));
    assert!(FolderDataset::load_dir(&d, Split::Train, [4, 4], 2)
        .unwrap_err()
        .to_string()
        .contains("1 (grayscale) or 3 (RGB)"));
}
