//! Parse + run a pipeline: verified modules survive it, numerically unchanged.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_tests::fuzz::pipeline(data));
