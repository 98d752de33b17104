//! Datasets end to end: image folders and synthetic data through `convoy train`/`eval`,
//! augmentation that every worker count and loader-thread count sees bitwise alike, a slow
//! loader showing in `data_wait_s`, split placement (`--data-split`), and bad data → exit 2
//! naming the file and record. Every test writes its own small files.

mod common;

use common::{assert_exit2, config, convoy, tmp};
use convoy::data::{synthetic, DataError, Dataset, Normalize, Split};
use convoy::parallel;
use convoy::train::{events::Event, events::Recorder, run_worker, LocalSgd};
use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A small conv net for (3, 8, 8) inputs and 2 classes.
fn tiny_model(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.toml");
    let spec = "name = \"tiny\"\ninput = [3, 8, 8]\nclasses = 2\n\n[[layer]]\nname = \"conv1\"\ntype = \"conv2d\"\nout_channels = 4\nkernel = 3\npadding = 1\n\n\
                [[layer]]\nname = \"relu1\"\ntype = \"relu\"\n\n[[layer]]\nname = \"fc\"\ntype = \"linear\"\nout_features = 2\n";
    std::fs::write(&p, spec).unwrap();
    p
}

/// An image folder of 12×12 PNGs: class `red` is reddish, class `blue` bluish, with noise.
fn write_folder(dir: &Path, per_class: (usize, usize)) {
    for (split, n) in [("train", per_class.0), ("test", per_class.1)] {
        for (k, class) in ["blue", "red"].iter().enumerate() {
            let d = dir.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..n {
                let img = RgbImage::from_fn(12, 12, |x, y| {
                    let noise = ((x * 31 + y * 17 + i as u32 * 7) % 60) as u8;
                    if k == 1 {
                        Rgb([150 + noise, 60, 40 + noise])
                    } else {
                        Rgb([40 + noise, 60, 150 + noise])
                    }
                });
                img.save(d.join(format!("{i}.png"))).unwrap();
            }
        }
    }
}

/// An image folder trains under 2 workers with 2 loader threads and augmentation, and
/// `convoy eval` (image size taken from the model) reports the run's final accuracy.
#[test]
fn image_folder_trains_and_evaluates_through_the_cli() {
    let d = tmp("folder");
    write_folder(&d.join("imgs"), (24, 8));
    let (model, data, w) = (tiny_model(&d), d.join("imgs"), d.join("w.safetensors"));
    let args = [
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--image-size",
        "8",
        "--steps",
        "30",
        "--batch-size",
        "16",
    ];
    let more = [
        "--lr",
        "0.05",
        "--workers",
        "2",
        "--threads",
        "1",
        "--loader-threads",
        "2",
        "--augment",
        "flip",
        "--no-progress",
        "--save",
        w.to_str().unwrap(),
    ];
    let out = convoy(&[&args[..], &more].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let acc = stdout.split("test accuracy ").nth(1).and_then(|s| s.split('%').next()).unwrap().to_string();
    assert!(acc.parse::<f64>().unwrap() >= 90.0, "{stdout}");
    let out = convoy(&[
        "eval",
        "--weights",
        w.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("test accuracy {acc}%")) && stdout.contains("on 16 images"), "{stdout}");
    // The same folder without an image size and a model that does not fix one: a hint.
    assert_exit2(
        &convoy(&[
            "eval",
            "--weights",
            w.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--normalize",
            "0.5,0.5:1,1",
        ]),
        &["--normalize gives 2"],
    );
}

/// With augmentation, normalisation and several loader threads, `--deterministic` training is
/// bitwise the same for 1, 2 and 4 workers: every worker count sees the same augmented batch.
/// Without augmentation the result differs (the flag does something).
#[test]
fn augmented_training_is_bitwise_identical_for_1_2_4_workers() {
    let data = Path::new("synthetic:1x28x28:10:160:20");
    let base = [
        "--steps",
        "3",
        "--batch-size",
        "32",
        "--threads",
        "1",
        "--deterministic",
        "--no-epoch-eval",
        "--normalize",
        "0.1:0.9",
    ];
    let run = |extra: &[&str]| {
        let (cfg, pc) = config(&[&base[..], extra].concat(), data);
        parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap().params
    };
    let aug = ["--augment", "crop:3,flip"];
    let one = run(&[&aug[..], &["--workers", "1"]].concat());
    assert!(one == run(&[&aug[..], &["--workers", "2", "--loader-threads", "3"]].concat()), "2 workers differ from 1");
    assert!(one == run(&[&aug[..], &["--workers", "4", "--loader-threads", "2"]].concat()), "4 workers differ from 1");
    assert!(one != run(&["--workers", "1"]), "augmentation changed nothing");
}

/// A synthetic set whose samples take `delay` each to read, like decoding large images.
struct Slow {
    inner: Arc<dyn Dataset>,
    delay: std::time::Duration,
}

impl Dataset for Slow {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn sample_shape(&self) -> &[usize] {
        self.inner.sample_shape()
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn read_raw(&self, i: usize, out: &mut [f32]) -> Result<u32, DataError> {
        std::thread::sleep(self.delay);
        self.inner.read_raw(i, out)
    }
    fn normalization(&self) -> Normalize {
        self.inner.normalization()
    }
}

/// A loader that cannot keep up shows as time waiting for data in every step's `data_wait_s`,
/// and more loader threads take it away (the batches stay the same).
#[test]
fn a_slow_loader_shows_in_data_wait_and_threads_hide_it() {
    let d = tmp("slow");
    let model = tiny_model(&d);
    let spec = synthetic::Spec::parse("3x8x8:2:512:16").unwrap();
    let slow: Arc<dyn Dataset> = Arc::new(Slow {
        inner: Arc::new(synthetic::Synthetic::new(spec.clone(), Split::Train)),
        delay: std::time::Duration::from_millis(2),
    });
    let test: Arc<dyn Dataset> = Arc::new(synthetic::Synthetic::new(spec, Split::Test));
    let mut waits = Vec::new();
    let mut params = Vec::new();
    for threads in ["1", "4"] {
        let args = [
            "--model",
            model.to_str().unwrap(),
            "--steps",
            "12",
            "--batch-size",
            "16",
            "--threads",
            "1",
            "--loader-threads",
            threads,
            "--no-epoch-eval",
        ];
        let (cfg, _) = config(&args, Path::new("synthetic:3x8x8:2:512:16"));
        let net = convoy::net::Net::build(&cfg.model).unwrap();
        let mut sgd = LocalSgd::new(&cfg.optimizer, net.layout()).unwrap();
        let mut steps = Vec::new();
        let s = run_worker(
            &cfg,
            "single",
            net,
            &(slow.clone(), test.clone()),
            convoy::data::sampler::Shard::WHOLE,
            &mut sgd,
            &mut |e| {
                if let Event::Step { data_wait_s, .. } = e {
                    steps.push(data_wait_s);
                }
            },
        )
        .unwrap();
        // The first batch is waited for in full whatever the threads; the steady state differs.
        let mean = steps[2..].iter().sum::<f64>() / (steps.len() - 2) as f64;
        eprintln!(
            "--loader-threads {threads}: mean data_wait_s {:.2} ms per step (16 samples × 2 ms to read)",
            mean * 1e3
        );
        waits.push(mean);
        params.push(s.params);
    }
    assert!(waits[0] > 0.020, "one thread reads 16 × 2 ms per batch, the trainer must wait: {waits:?}");
    assert!(waits[1] < 0.6 * waits[0], "four threads should hide most of it: {waits:?}");
    assert!(params[0] == params[1], "the loader threads changed the batches");
}

/// Writes records [from, to) of an IDX file (raw) to `dst`.
fn write_records(src: &Path, dst: &Path, from: usize, to: usize) {
    let a = convoy::data::idx::read_idx(src).unwrap();
    let per: usize = a.dims[1..].iter().product();
    let mut v = vec![0, 0, 0x08, a.dims.len() as u8];
    v.extend_from_slice(&((to - from) as u32).to_be_bytes());
    a.dims[1..].iter().for_each(|d| v.extend_from_slice(&(*d as u32).to_be_bytes()));
    v.extend_from_slice(&a.data[from * per..to * per]);
    std::fs::write(dst, v).unwrap();
}

/// `--data-split`: two workers each read their own part `rank0/`, `rank1/` (300 training images
/// each); an epoch is the 600 images in ⌈600/64⌉ = 10 steps; rank 0's test split is evaluated.
/// Parts of unequal size, a path without {rank} and a batch the ranks cannot share are refused.
#[test]
fn split_placement_reads_one_part_per_rank() {
    let d = tmp("split");
    for r in 0..2 {
        let part = d.join(format!("rank{r}"));
        std::fs::create_dir_all(&part).unwrap();
        for (name, from, to) in [
            ("train-images-idx3-ubyte", 300 * r, 300 * (r + 1)),
            ("train-labels-idx1-ubyte", 300 * r, 300 * (r + 1)),
            ("t10k-images-idx3-ubyte", 0, 100),
            ("t10k-labels-idx1-ubyte", 0, 100),
        ] {
            write_records(&common::mnist().join(format!("{name}.gz")), &part.join(name), from, to);
        }
    }
    let template = d.join("rank{rank}");
    let (cfg, pc) = config(
        &[
            "--data-split",
            "--workers",
            "2",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--lr",
            "0.05",
            "--threads",
            "1",
            "--no-epoch-eval",
            "--data",
            template.to_str().unwrap(),
        ],
        &template,
    );
    let s = parallel::run(&cfg, &pc, &mut Recorder::default()).unwrap();
    assert_eq!(s.steps, 10);
    eprintln!("--data-split, 2 workers, 10 steps: test accuracy {:.2}", s.test_acc);
    assert!(s.test_acc > 0.3, "ten steps on 600 images should beat chance (0.1): {}", s.test_acc);
    let t = template.to_str().unwrap();
    assert_exit2(
        &convoy(&["train", "--data-split", "--data", d.to_str().unwrap(), "--steps", "1"]),
        &["--data-split", "{rank}"],
    );
    assert_exit2(
        &convoy(&[
            "train",
            "--data-split",
            "--data",
            t,
            "--workers",
            "2",
            "--batch-size",
            "63",
            "--steps",
            "1",
            "--threads",
            "1",
        ]),
        &["divisible by 2"],
    );
    write_records(
        &common::mnist().join("train-images-idx3-ubyte.gz"),
        &d.join("rank1/train-images-idx3-ubyte"),
        0,
        299,
    );
    write_records(
        &common::mnist().join("train-labels-idx1-ubyte.gz"),
        &d.join("rank1/train-labels-idx1-ubyte"),
        0,
        299,
    );
    assert_exit2(
        &convoy(&["train", "--data-split", "--data", t, "--workers", "2", "--steps", "1", "--threads", "1"]),
        &["rank1", "299 samples", "equal size"],
    );
}

/// Bad data never panics: exit code 2 and a message naming the file and the record.
#[test]
fn bad_data_is_exit_2_naming_file_and_record() {
    let d = tmp("bad");
    let model = tiny_model(&d);
    let m = model.to_str().unwrap();
    let train = |data: &Path, extra: &[&str]| {
        convoy(
            &[
                &[
                    "train",
                    "--model",
                    m,
                    "--data",
                    data.to_str().unwrap(),
                    "--steps",
                    "3",
                    "--batch-size",
                    "8",
                    "--threads",
                    "1",
                    "--no-progress",
                ][..],
                extra,
            ]
            .concat(),
        )
    };
    // An empty class folder.
    let f = d.join("f");
    write_folder(&f, (4, 2));
    std::fs::create_dir_all(f.join("train/green")).unwrap();
    assert_exit2(&train(&f, &[]), &["train/green", "no PNG or JPEG images"]);
    std::fs::remove_dir(f.join("train/green")).unwrap();
    // A file that is no image, found when the folder is opened.
    std::fs::write(f.join("train/red/3.png"), b"\x89PNX not really").unwrap();
    assert_exit2(&train(&f, &[]), &["train/red/3.png: record 7", "not a PNG or JPEG"]);
    // A PNG whose pixel data is cut off: found while training, in a loader thread of worker 1.
    let mut png = Vec::new();
    RgbImage::from_fn(12, 12, |x, y| Rgb([x as u8 * 20, y as u8 * 20, (x * y) as u8]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    std::fs::write(f.join("train/red/3.png"), &png[..png.len() - 30]).unwrap();
    assert_exit2(
        &train(&f, &["--workers", "2", "--loader-threads", "2"]),
        &["train/red/3.png: record 7: cannot decode"],
    );
    // CIFAR-10 with a record cut short.
    let c = d.join("cifar");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("test_batch.bin"), vec![1u8; 3073 * 2 + 100]).unwrap();
    for i in 1..=5 {
        std::fs::write(c.join(format!("data_batch_{i}.bin")), vec![1u8; 3073]).unwrap();
    }
    assert_exit2(
        &convoy(&["train", "--model", "alexnet-cifar", "--data", c.to_str().unwrap(), "--steps", "1"]),
        &["test_batch.bin: record 2: truncated"],
    );
    // Synthetic specs and flags.
    assert_exit2(&convoy(&["train", "--data", "synthetic:3x32:10", "--steps", "1"]), &["synthetic:3x32:10", "CxHxW"]);
    assert_exit2(&convoy(&["train", "--data", "synthetic:3x32x32:10", "--steps", "1"]), &["[3, 32, 32]", "lenet"]);
    assert_exit2(&convoy(&["train", "--augment", "crop:4,rotate", "--steps", "1"]), &["--augment", "rotate"]);
    assert_exit2(
        &convoy(&["train", "--normalize", "0.1,0.2,0.3:1,1,1", "--steps", "1"]),
        &["--normalize gives 3", "1 channels"],
    );
}
