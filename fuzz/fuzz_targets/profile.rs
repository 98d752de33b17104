#![no_main]
#[path = "cap.rs"]
mod cap;

#[global_allocator]
static ALLOC: cap::Capped = cap::Capped;

libfuzzer_sys::fuzz_target!(|data: &[u8]| convoy::fuzz::profile(data));
