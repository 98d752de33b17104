//! A global allocator that aborts (a crash libFuzzer reports, with the input) on any single
//! allocation above 256 MiB: inputs are a few KiB, so only a length field believed without a
//! check could ask for that much.

use std::alloc::{GlobalAlloc, Layout, System};

pub struct Capped;

/// The largest single allocation allowed.
pub const CAP: usize = 256 << 20;

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
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > CAP {
            std::process::abort();
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > CAP {
            std::process::abort();
        }
        System.realloc(ptr, layout, new_size)
    }
}
