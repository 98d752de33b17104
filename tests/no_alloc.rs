//! A training step allocates nothing once its buffers have grown. A counting global allocator
//! watches steady-state steps (forward + backward + optimizer update, one thread), counting only
//! the allocations of the thread that runs the step.
//!
//! The one exception is inside the `gemm` crate, which allocates its operand-packing workspace
//! on every call (gemm-common 0.19 `gemm.rs`, `MemBuffer::new` and `did_pack_lhs`): so a net
//! without GEMM layers must allocate exactly nothing, and LeNet must allocate the same small
//! number every step (no growth, nothing data-dependent).

use convoy::layers::{Backend, Ctx, Mode};
use convoy::net::{ModelSpec, Net};
use convoy::optim::OptimizerConfig;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    /// Allocations made by this thread: the test harness runs tests on parallel threads, and a
    /// global count would charge one test with the other's allocations.
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: during thread teardown the slot may be gone; those allocations are not ours.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations of each of steps 3..10, on the native kernels.
fn allocations_per_step(spec: &ModelSpec, batch: usize) -> Vec<usize> {
    allocations_per_step_on(Backend::Native, spec, batch)
}

/// Allocations (Rust's allocator) of each of steps 3..10 with the convolutions on `backend`.
fn allocations_per_step_on(backend: Backend, spec: &ModelSpec, batch: usize) -> Vec<usize> {
    let mut net = Net::build(spec).unwrap();
    let mut params = net.init_params(1);
    let mut grads = vec![0.0; params.len()];
    let mut opt = OptimizerConfig::Sgd { momentum: 0.9, dampening: 0.0, nesterov: true, weight_decay: 1e-4 }
        .build(params.len())
        .unwrap();
    let mut shape = vec![batch];
    shape.extend_from_slice(&spec.input);
    let x = convoy::layers::gradcheck::random_tensor(&shape, 3);
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % spec.classes as u32).collect();
    let ids: Vec<u64> = (0..batch as u64).collect();
    let mut counts = Vec::new();
    for step in 0..10u64 {
        let before = allocs();
        grads.fill(0.0);
        let ctx = Ctx { mode: Mode::Train, threads: 1, backend, seed: 0, step, layer: 0, sample_ids: &ids, sync: None };
        net.forward_backward(&ctx, &params, grads.as_mut_slice(), &x, &labels, batch).unwrap();
        opt.step(&mut params, &grads, 0.01);
        if step >= 3 {
            counts.push(allocs() - before);
        }
    }
    counts
}

#[test]
fn layers_without_gemm_allocate_nothing() {
    let spec = ModelSpec::from_toml(
        "name = \"nogemm\"\ninput = [3, 8, 8]\nclasses = 12\n\
         [[layer]]\nname = \"p\"\ntype = \"max_pool2d\"\nkernel = 2\n\
         [[layer]]\nname = \"l\"\ntype = \"lrn\"\nsize = 3\n\
         [[layer]]\nname = \"r\"\ntype = \"relu\"\n\
         [[layer]]\nname = \"a\"\ntype = \"avg_pool2d\"\nkernel = 2\n\
         [[layer]]\nname = \"d\"\ntype = \"dropout\"\np = 0.5\n\
         [[layer]]\nname = \"f\"\ntype = \"flatten\"\n",
        "nogemm",
    )
    .unwrap();
    assert_eq!(allocations_per_step(&spec, 16), vec![0; 7]);
}

#[test]
fn lenet_steps_allocate_only_the_same_gemm_workspace_each_step() {
    let counts = allocations_per_step(&ModelSpec::resolve("lenet").unwrap(), 16);
    assert!(counts.windows(2).all(|w| w[0] == w[1]), "allocations vary per step: {counts:?}");
}

#[test]
fn direct_convolutions_batch_norm_and_global_pooling_allocate_nothing() {
    // 3×3 convolutions of stride 1 on 16×16 maps run the direct kernels wherever the CPU has
    // AVX2 or AVX-512 (elsewhere im2col + GEMM, whose workspace the test above covers).
    let spec = direct_spec();
    let net = Net::build(&spec).unwrap();
    if net.layer_kernel(0).starts_with("direct") {
        assert_eq!(net.layer_kernel(3), net.layer_kernel(0));
        assert_eq!(allocations_per_step(&spec, 16), vec![0; 7]);
    }
}

/// On oneDNN, the convolutions' primitives and buffers are made at the first step and reused:
/// the steps after allocate nothing on the Rust side (what oneDNN allocates inside, through C's
/// malloc, this allocator does not see; its scratchpads are its own).
#[cfg(feature = "dnnl")]
#[test]
fn dnnl_convolutions_allocate_nothing_after_the_first_step() {
    assert_eq!(allocations_per_step_on(Backend::Dnnl, &direct_spec(), 16), vec![0; 7]);
}

/// Two direct-kernel convolutions (3×3 and 5×5) with batch norm, ReLU and global pooling.
fn direct_spec() -> ModelSpec {
    ModelSpec::from_toml(
        "name = \"direct\"\ninput = [3, 16, 16]\nclasses = 12\n\
         [[layer]]\nname = \"c1\"\ntype = \"conv2d\"\nout_channels = 12\nkernel = 3\npadding = 1\n\
         [[layer]]\nname = \"b1\"\ntype = \"batch_norm\"\n\
         [[layer]]\nname = \"r1\"\ntype = \"relu\"\n\
         [[layer]]\nname = \"c2\"\ntype = \"conv2d\"\nout_channels = 12\nkernel = 5\npadding = 2\n\
         [[layer]]\nname = \"g\"\ntype = \"global_avg_pool\"\n\
         [[layer]]\nname = \"f\"\ntype = \"flatten\"\n",
        "direct",
    )
    .unwrap()
}

/// Winograd convolutions (F(4×4) 3×3 and F(3×3) 5×5) allocate the same each step after the
/// first: their blocks' buffers are kept; what remains is the gemm crate's workspace per GEMM.
#[test]
fn winograd_steps_allocate_only_the_same_gemm_workspace_each_step() {
    let spec = ModelSpec::from_toml(
        "name = \"wino\"\ninput = [32, 8, 8]\nclasses = 40\n\
         [[layer]]\nname = \"c1\"\ntype = \"conv2d\"\nout_channels = 160\nkernel = 3\npadding = 1\n\
         [[layer]]\nname = \"r1\"\ntype = \"relu\"\n\
         [[layer]]\nname = \"c2\"\ntype = \"conv2d\"\nout_channels = 40\nkernel = 5\npadding = 2\n\
         [[layer]]\nname = \"g\"\ntype = \"global_avg_pool\"\n\
         [[layer]]\nname = \"f\"\ntype = \"flatten\"\n",
        "wino",
    )
    .unwrap();
    let net = Net::build(&spec).unwrap();
    assert_eq!((net.layer_kernel(0), net.layer_kernel(2)), ("winograd-f4", "winograd-f3"));
    let counts = allocations_per_step(&spec, 16);
    assert!(counts.windows(2).all(|w| w[0] == w[1]), "allocations vary per step: {counts:?}");
}
