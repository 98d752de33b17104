//! convoy: train convolutional neural networks in parallel — on the threads of one machine by
//! default, across a cluster through MPI.
//!
//! Module dependencies are meant to point one way: `tensor → layers → net → optim → train →
//! comm/parallel → plan → cli → dashboard`, with `data` on `tensor` and `checkpoint` on `net`
//! (`cli` parses flags into every module's configuration, and `dashboard` starts runs through
//! it). A few imports still go against that order (`parallel::pipeline` and `plan` use each
//! other, `comm` reads `data::sampler`). docs/ holds the decisions; the starting design was
//! `../shared/DESIGN.md`, outside this repository.
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
pub mod tensor;
pub mod train;
