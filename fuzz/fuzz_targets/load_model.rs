//! Arbitrary bytes as a model file: reading never panics; what reads round-trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_tests::fuzz::load_model(data));
