//! Replays the committed fuzz corpus (`fuzz/corpus/TARGET/*`, seeds and what `scripts/fuzz.sh`
//! found, crashes included once fixed) through each fuzz target of `convoy::fuzz`: every input
//! must pass without a panic and without any single allocation above 256 MiB (this test binary's
//! allocator aborts on one, as the fuzzing binaries' does).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;

struct Capped;

const CAP: usize = 256 << 20;

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > CAP {
            std::process::abort();
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > CAP {
            std::process::abort();
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Capped = Capped;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_input_passes_every_target() {
    for (target, f) in convoy::fuzz::TARGETS {
        let inputs = corpus(target);
        assert!(inputs.len() >= 3, "fuzz/corpus/{target} has {} inputs; the seeds are missing", inputs.len());
        for (name, data) in inputs {
            if let Err(e) = std::panic::catch_unwind(|| f(&data)) {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("fuzz/corpus/{target}/{name}: {msg}");
            }
        }
    }
}

/// The seeds run successfully past the parsers (so the corpus starts from valid files, and a
/// target that stopped parsing anything would be noticed).
#[test]
fn the_seeds_are_valid_inputs() {
    let path = Path::new("seed");
    let idx = corpus("idx");
    let ok = idx
        .iter()
        .filter(|(n, _)| n.starts_with("seed-"))
        .filter(|(_, d)| convoy::data::idx::decode_idx(d, path).is_ok())
        .count();
    assert!(ok >= 3, "{ok} valid IDX seeds");
    let spec = convoy::net::ParamLayout::new(vec![
        ("conv1", vec![("weight", vec![2, 1, 3, 3]), ("bias", vec![2])]),
        ("fc", vec![("weight", vec![3, 4])]),
    ]);
    let w = corpus("weights");
    assert!(w
        .iter()
        .any(|(n, d)| n.starts_with("seed-") && convoy::checkpoint::weights_from_bytes(d, path, &spec).is_ok()));
    let s = corpus("state_json");
    assert!(s.iter().any(|(n, d)| n.starts_with("seed-") && convoy::checkpoint::run::parse_run_state(d, path).is_ok()));
    // The valid profile is accepted, the others refused.
    let lenet = convoy::net::ModelSpec::resolve("lenet").unwrap();
    for (n, d) in corpus("profile").iter().filter(|(n, _)| n.starts_with("seed-")) {
        let r = convoy::plan::calibrate::parse(std::str::from_utf8(d).unwrap(), n, &lenet);
        assert_eq!(r.is_ok(), n == "seed-lenet", "{n}: {r:?}");
    }
}

/// Writes the seed inputs (`cargo test --release --test fuzz_corpus -- --ignored`): small valid
/// files of each format and a few broken ones.
#[test]
#[ignore]
fn write_seed_corpus() {
    use convoy::checkpoint::run;
    use std::io::Write;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let d = root.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("seed-{name}")), bytes).unwrap();
    };
    // IDX: 2 images of 3×3, their labels, gzipped images, and the dataset layout of the target.
    let images: Vec<u8> = [
        &[0u8, 0, 8, 3][..],
        &2u32.to_be_bytes(),
        &3u32.to_be_bytes(),
        &3u32.to_be_bytes(),
        &(0..18).collect::<Vec<u8>>(),
    ]
    .concat();
    let labels: Vec<u8> = [&[0u8, 0, 8, 1][..], &2u32.to_be_bytes(), &[7, 1]].concat();
    put("idx", "images", &images);
    put("idx", "labels", &labels);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&images).unwrap();
    let gz = gz.finish().unwrap();
    put("idx", "images-gz", &gz);
    put("idx", "dataset", &[&(images.len() as u16).to_le_bytes()[..], &images, &labels].concat());
    put("idx", "dataset-gz", &[&(gz.len() as u16).to_le_bytes()[..], &gz, &labels].concat());
    put(
        "idx",
        "huge-dims",
        &[&[0u8, 0, 8, 3][..], &u32::MAX.to_be_bytes(), &u32::MAX.to_be_bytes(), &u32::MAX.to_be_bytes()].concat(),
    );
    // Weights and a checkpoint of the targets' layout.
    let layout = convoy::net::ParamLayout::new(vec![
        ("conv1", vec![("weight", vec![2, 1, 3, 3]), ("bias", vec![2])]),
        ("fc", vec![("weight", vec![3, 4])]),
    ]);
    let params: Vec<f32> = (0..layout.len()).map(|i| i as f32 * 0.25 - 3.0).collect();
    let model = convoy::checkpoint::to_safetensors(&layout, &params, Default::default());
    put("weights", "model", &model);
    put("weights", "truncated", &model[..model.len() / 2]);
    put("weights", "huge-header-len", &[&(u64::MAX / 2).to_le_bytes()[..], b"{}"].concat());
    let dir = std::env::temp_dir().join(format!("convoy-seed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mom: Vec<f32> = params.iter().map(|v| -v).collect();
    let state = run::RunState {
        format_version: run::FORMAT_VERSION,
        model: "t".into(),
        step: 8,
        epoch: 0,
        samples_in_epoch: 512,
        optimizer_steps: 8,
        batch_size: 64,
        seed: 3,
        optimizer: "Sgd { momentum: 0.9 }".into(),
        schedule: "constant".into(),
        total_steps: 20,
        workers: 2,
        strategy: "allreduce".into(),
        files: Default::default(),
    };
    let ck = run::save_checkpoint(&dir, 1, &layout, &params, &[("momentum_buffer", &mom)], state, false).unwrap();
    let read = |f: &str| std::fs::read(ck.join(f)).unwrap();
    let (sj, m, o) = (read("state.json"), read("model.safetensors"), read("optimizer.safetensors"));
    put("state_json", "state", &sj);
    put(
        "state_json",
        "newer",
        &String::from_utf8(sj.clone()).unwrap().replace("\"format_version\": 1", "\"format_version\": 7").into_bytes(),
    );
    put("state_json", "truncated", &sj[..sj.len() / 2]);
    let composite = |sj: &[u8], m: &[u8], o: &[u8]| {
        [&(sj.len() as u16).to_le_bytes()[..], sj, &(m.len() as u32).to_le_bytes(), m, o].concat()
    };
    put("checkpoint", "sgd", &composite(&sj, &m, &o));
    put("checkpoint", "no-optimizer", &composite(&sj, &m, &[]));
    put("checkpoint", "swapped", &composite(&sj, &o, &m));
    let _ = std::fs::remove_dir_all(&dir);
    // `plan --profile` files: LeNet's, and what must be refused.
    let lenet = convoy::net::ModelSpec::resolve("lenet").unwrap();
    let profile = convoy::plan::calibrate::Profile {
        version: convoy::plan::calibrate::VERSION,
        model: convoy::plan::ModelCost::from_flops(&lenet, 50.0).unwrap(),
        batch: 64,
        threads: 1,
        mem_bandwidth: 1e10,
        allreduce_alpha: 2e-5,
        allreduce_beta: 2e9,
        mpi_link: Some(convoy::plan::calibrate::LinkFit {
            alpha: 1e-4,
            beta: 1.2e8,
            allreduce_alpha: 2e-4,
            allreduce_beta: 1e8,
            ranks: 2,
            server_beta: 1.3e8,
            min_bytes: 65536,
            max_bytes: 4194304,
        }),
    };
    let json = serde_json::to_string_pretty(&profile).unwrap();
    put("profile", "lenet", json.as_bytes());
    put(
        "profile",
        "zero-bandwidth",
        json.replace("\"mem_bandwidth\": 10000000000.0", "\"mem_bandwidth\": 0.0").as_bytes(),
    );
    put("profile", "other-model", json.replacen("\"model\": \"lenet\"", "\"model\": \"lenet-caffe\"", 1).as_bytes());
    put("profile", "truncated", &json.as_bytes()[..json.len() / 2]);
}
