//! The vector instruction sets the native kernels are written for, chosen at run time.
//!
//! Kernels are written once, generic over `Simd` (a handful of `#[inline(always)]` operations on
//! one vector register), and instantiated inside a `#[target_feature]` entry point per
//! instruction set, so one binary runs AVX-512 code on a machine that has it and AVX2 + FMA code
//! on one that does not (the gemm crate dispatches the same way). Without either, the callers
//! keep to their portable path (im2col + GEMM).

use std::sync::OnceLock;

/// An instruction set a native kernel can run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F: 16 lanes, 32 registers.
    Avx512,
    /// AVX2 + FMA: 8 lanes, 16 registers.
    Avx2,
}

impl Isa {
    /// The best instruction set of this CPU (detected once), or `None` (portable code only).
    /// `CONVOY_MAX_ISA=avx2` (or `portable`) caps it, as `ONEDNN_MAX_CPU_ISA` does for oneDNN:
    /// it runs, on an AVX-512 machine, the kernels an AVX2 machine would run.
    pub fn best() -> Option<Isa> {
        static BEST: OnceLock<Option<Isa>> = OnceLock::new();
        *BEST.get_or_init(|| cap(detect(), std::env::var("CONVOY_MAX_ISA").ok().as_deref()))
    }

    /// True when this CPU can run `self` (no allocation: the kernels check it on every call).
    pub fn supported(self) -> bool {
        matches!((Isa::best(), self), (Some(Isa::Avx512), _) | (Some(Isa::Avx2), Isa::Avx2))
    }

    /// Every instruction set this CPU can run, best first (tests run each).
    pub fn available() -> Vec<Isa> {
        match Isa::best() {
            Some(Isa::Avx512) => vec![Isa::Avx512, Isa::Avx2],
            Some(Isa::Avx2) => vec![Isa::Avx2],
            None => Vec::new(),
        }
    }

    /// f32 lanes of one vector.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
        }
    }
}

/// `detected`, capped by the value of `CONVOY_MAX_ISA` (unknown values are ignored with a warning).
fn cap(detected: Option<Isa>, max: Option<&str>) -> Option<Isa> {
    match (max.map(|m| m.trim().to_ascii_lowercase()).as_deref(), detected) {
        (None | Some("" | "avx512"), d) => d,
        (Some("avx2"), Some(_)) => Some(Isa::Avx2),
        (Some("avx2"), None) => None,
        (Some("portable" | "none"), _) => None,
        (Some(other), d) => {
            tracing::warn!("CONVOY_MAX_ISA={other} is not one of avx512, avx2, portable: ignored");
            d
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Option<Isa> {
    if is_x86_feature_detected!("avx512f") {
        Some(Isa::Avx512)
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        Some(Isa::Avx2)
    } else {
        None
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Option<Isa> {
    None
}

/// One vector register of f32 lanes and the operations the kernels use. Every method is unsafe:
/// it must run on a CPU with the instruction set (the `#[target_feature]` entry points check
/// that through `Isa::best`), and pointers must be valid for `LANES` floats.
#[allow(clippy::missing_safety_doc)] // one contract for every method, stated above
pub trait Simd: Copy {
    /// The register type.
    type V: Copy;
    /// f32 lanes.
    const LANES: usize;
    /// All lanes 0.
    unsafe fn zero() -> Self::V;
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self::V;
    /// Unaligned load of `LANES` floats.
    unsafe fn load(p: *const f32) -> Self::V;
    /// Unaligned store of `LANES` floats.
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a · b + c`, fused.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Sum of the lanes.
    unsafe fn hsum(v: Self::V) -> f32;
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Simd;
    use std::arch::x86_64::*;

    /// AVX-512F registers.
    #[derive(Clone, Copy)]
    pub struct Avx512;

    impl Simd for Avx512 {
        type V = __m512;
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            _mm512_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            _mm512_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn hsum(v: __m512) -> f32 {
            _mm512_reduce_add_ps(v)
        }
    }

    /// AVX2 + FMA registers.
    #[derive(Clone, Copy)]
    pub struct Avx2;

    impl Simd for Avx2 {
        type V = __m256;
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            _mm256_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            _mm256_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn hsum(v: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
            _mm_cvtss_f32(s)
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

/// The measured multiply-add peak of one core with the best instruction set, in GFLOP/s (two
/// flops per lane per FMA): independent FMA chains on registers for about 20 ms, the best of
/// three. The reference for "share of peak" in per-layer tables; 0 without AVX2/AVX-512.
pub fn fma_peak_gflops() -> f64 {
    let Some(isa) = Isa::best() else { return 0.0 };
    let iters = 200_000u64;
    let mut best = 0.0f64;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        // SAFETY: the CPU has `isa` (Isa::best).
        let sink = unsafe {
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => fma_chains_avx512(iters),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => fma_chains_avx2(iters),
                #[allow(unreachable_patterns)]
                _ => 0.0,
            }
        };
        std::hint::black_box(sink);
        let flops = iters as f64 * CHAINS as f64 * isa.lanes() as f64 * 2.0;
        best = best.max(flops / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// Independent accumulators: enough to cover FMA latency (4) × ports (2) with room to spare.
const CHAINS: usize = 12;

#[inline(always)]
unsafe fn fma_chains<S: Simd>(iters: u64) -> f32 {
    let mut acc = [S::splat(0.0); CHAINS];
    let (a, b) = (S::splat(std::hint::black_box(0.999_999)), S::splat(std::hint::black_box(1e-7)));
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = S::fma(*x, a, b);
        }
    }
    acc.iter().map(|&v| S::hsum(v)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_avx512(iters: u64) -> f32 {
    fma_chains::<Avx512>(iters)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_avx2(iters: u64) -> f32 {
    fma_chains::<Avx2>(iters)
}

#[cfg(test)]
mod tests {
    use super::{cap, Isa};

    #[test]
    fn convoy_max_isa_caps_the_detected_instruction_set() {
        assert_eq!(cap(Some(Isa::Avx512), None), Some(Isa::Avx512));
        assert_eq!(cap(Some(Isa::Avx512), Some("AVX2")), Some(Isa::Avx2));
        assert_eq!(cap(Some(Isa::Avx2), Some("avx512")), Some(Isa::Avx2));
        assert_eq!(cap(None, Some("avx2")), None);
        assert_eq!(cap(Some(Isa::Avx2), Some("portable")), None);
        assert_eq!(cap(Some(Isa::Avx512), Some("sse")), Some(Isa::Avx512));
    }
}
