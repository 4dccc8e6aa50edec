//! Random small graphs (or IR text) JIT-compiled and compared with the reference interpreter.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_tests::fuzz::jit_vs_reference(data));
