//! Arbitrary text: parsing never panics; verified modules round-trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_tests::fuzz::parse_print(data));
