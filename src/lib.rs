//! convoy: train convolutional neural networks in parallel — on the threads of one machine by
//! default, across a cluster through MPI.
//!
//! Module dependencies point one way, bottom to top: `ranges → tensor → data → layers → net →
//! checkpoint → optim → comm → train → parallel → plan → cli → dashboard` (`fuzz` beside them,
//! for the fuzzers only); no two sibling modules import each other. tests/layering.rs checks
//! both, and docs/architecture.md describes the layers and their seams.
#![cfg_attr(test, allow(clippy::excessive_precision))] // goldens are pasted as PyTorch prints them
#![warn(missing_docs)]

pub mod checkpoint;
pub mod cli;
pub mod comm;
pub mod dashboard;
pub mod data;
pub mod fuzz;
pub mod layers;
pub mod net;
pub mod optim;
pub mod parallel;
pub mod plan;
pub mod ranges;
pub mod tensor;
pub mod train;
