//! convoy: train convolutional neural networks in parallel — on the threads of one machine by
//! default, across a cluster through MPI.
//!
//! Module dependencies point one way: `tensor → layers → net → optim → train → parallel`;
//! `data`, `checkpoint`, `cli` and `dashboard` are leaves. See docs/ and DESIGN.md for the map.
#![warn(missing_docs)]

pub mod layers;
pub mod tensor;
pub mod checkpoint;
pub mod cli;
pub mod dashboard;
pub mod data;
pub mod fuzz;
pub mod net;
pub mod comm;
pub mod optim;
pub mod parallel;
pub mod plan;
pub mod train;
