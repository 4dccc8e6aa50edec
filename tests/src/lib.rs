//! strata-tests: the IR snapshot harness, fuzz entry points and a random IR
//! generator, shared by the integration tests and the cargo-fuzz targets.

pub mod fuzz;
pub mod harness;
pub mod random_ir;
