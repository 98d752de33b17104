//! The algorithms a convolution can run (`ConvAlgo`) and the measured thresholds by which
//! `Conv2d` picks one per layer shape.

use crate::tensor::simd::Isa;
use crate::tensor::winograd::Tile;

/// How a convolution computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgo {
    /// im2col + GEMM per sample and group: every configuration (the reference path).
    Im2col,
    /// 1×1, stride 1, no padding: the input is the column matrix (GEMM, nothing copied).
    Gemm1x1,
    /// Direct convolution on padded planes with this instruction set (stride 1, dilation 1,
    /// padding below the kernel size, kernel width 1, 3, 5 or 7).
    Direct(Isa),
    /// Direct 3×3 convolution vectorised over output channels (`tensor::direct_oc`): stride 1,
    /// one group; for small maps.
    DirectOc(Isa),
    /// Winograd F(m×m, r×r) (`tensor::winograd`) for forward, input and weight gradients:
    /// F(2×2) or F(4×4) for 3×3 kernels, F(2×2) or F(3×3) for 5×5; stride 1, dilation 1, one group,
    /// padding below the kernel size.
    Winograd(Tile),
}

impl ConvAlgo {
    /// Name for tables: "im2col+gemm", "gemm-1x1", "direct-avx512", "direct-avx2".
    pub fn name(self) -> &'static str {
        match self {
            ConvAlgo::Im2col => "im2col+gemm",
            ConvAlgo::Gemm1x1 => "gemm-1x1",
            ConvAlgo::Direct(Isa::Avx512) => "direct-avx512",
            ConvAlgo::Direct(Isa::Avx2) => "direct-avx2",
            ConvAlgo::DirectOc(Isa::Avx512) => "direct-oc-avx512",
            ConvAlgo::DirectOc(Isa::Avx2) => "direct-oc-avx2",
            ConvAlgo::Winograd(Tile::F2) => "winograd-f2",
            ConvAlgo::Winograd(Tile::F3) => "winograd-f3",
            ConvAlgo::Winograd(Tile::F4) => "winograd-f4",
        }
    }

    /// The instruction set of a direct algorithm, and whether it vectorises over channels.
    pub(super) fn direct_isa(self) -> Option<(Isa, bool)> {
        match self {
            ConvAlgo::Direct(isa) => Some((isa, false)),
            ConvAlgo::DirectOc(isa) => Some((isa, true)),
            _ => None,
        }
    }
}

/// Smallest share of useful lanes (`Flat::useful`) for which the direct kernels beat im2col +
/// GEMM (batched over samples for small maps). Measured with `convoy bench --layers`: 16×16 and
/// 32×32 maps padded by 1 (0.8–0.9) win; on 8×8 maps (0.67) im2col + GEMM was 20 % faster for
/// VGG-11's 128–256 channels and on par for ResNet-20's 64; 4×4 (0.5) and 2×2 (0.25) lose.
pub(super) const DIRECT_MIN_USEFUL: f64 = 0.7;

/// Largest cin·cout for which the channel-vectorised kernels beat batched im2col + GEMM on small
/// maps. Measured with `convoy bench --layers` (batch 64, one thread): ResNet-20's 64→64 on 8×8,
/// 8.9 ms against 12.6 ms forward + backward; VGG-11's 128→256 to 512→512 on 8×8 down to 2×2,
/// 1.1× to 3× slower than the GEMM, whose blocking keeps their 1–9 MiB of weights in cache.
pub(super) const DIRECT_OC_MAX_WEIGHTS: usize = 64 * 64;

/// Fewest input channels for Winograd. Measured with `convoy bench --layers` (batch 64, one
/// thread, Zen 4, forward + backward ms, direct → F(4×4)): ResNet-20's 16→16 on 32×32 10.5 →
/// 13.1 (thin GEMMs; the transforms dominate), 32→32 on 16×16 10.2 → 8.3.
pub(super) const WINOGRAD_MIN_CHANNELS: usize = 32;

/// Most channel pairs (cin·cout) that stay on the direct kernels. Winograd would win there too
/// (ResNet-20's 32→32 10.2 → 8.3 ms, its 64→64 on 8×8 9.3 → 5.7; LeNet's 5×5 32→64 on 14×14
/// 47 → 37), but its rounding (F(4×4): about 6× the direct sum's RMS error, F(2×2, 5×5) 3×,
/// `tensor/winograd.rs`) goes through training further than the tests of the project's promises
/// allow: with F(4×4) on ResNet-20's 64→64 layers alone its 10-step trajectory moved 1.0e-4 from
/// oneDNN's (tests/train_mnist.rs; batch norm at initialisation amplifies rounding), and with
/// F(2×2, 5×5) on LeNet's conv2, resuming a 4-worker checkpoint on 1 worker ended 20 steps 2.9e-4
/// from the single-worker run (tests/checkpoint.rs holds 1e-5), still 1.7e-4 with Winograd in
/// forward and input gradient only and the weight gradient on the direct kernels (tried
/// 2026-12-07; it gained only 47 → 45 ms). F(2×2, 3×3) is as exact as direct but slower there.
/// Above it, Winograd: VGG-11's 64→128 on 16×16 82 → 40 ms, its 128→256 to 512→512 2–2.5×
/// faster than im2col; AlexNet-CIFAR's 5×5 64→128 on 15×15 220 → 121 ms with F(2×2), 85 with
/// F(3×3).
pub(super) const WINOGRAD_MAX_PAIRS_DIRECT: usize = 64 * 64;
