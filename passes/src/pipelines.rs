//! `opt_level` → pipeline text, in one place.
//!
//! The ladder follows MegEngine's: 0 runs nothing; 1 the arithmetic peepholes
//! (MegEngine's construction-time rewrites, the `arith` rule set) and cleanup;
//! 2 (the default) adds the global equality-saturation pass with every default
//! rule set (folding, batch-norm and parameter folding, conv + bias +
//! nonlinearity and `z` fusion); 3 iterates to a fixpoint with larger search
//! limits, and the JIT lowers with loop-level fusion
//! (`lower-graph-to-loops{fuse-dimshuffle=true,fuse-reduce=true}`, chosen by
//! the facade's trace from the level). A negative level runs the pipeline of
//! its absolute value and checks every pass's result numerically against the
//! reference evaluator. The text is pinned by a snapshot test, so any change to
//! the mapping shows in review.

use std::fmt;

/// A validated optimisation level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptLevel(i32);

/// An opt level outside `-3..=3`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "opt level {0} is out of range; valid levels are -3..=3 (negative: same level, with every pass checked numerically)"
)]
pub struct OptLevelError(pub i64);

impl OptLevel {
    /// The default level, 2.
    pub const DEFAULT: OptLevel = OptLevel(2);

    /// Validates `level`.
    pub fn new(level: i64) -> Result<Self, OptLevelError> {
        if (-3..=3).contains(&level) { Ok(OptLevel(level as i32)) } else { Err(OptLevelError(level)) }
    }

    /// The level as given.
    pub fn get(self) -> i32 {
        self.0
    }

    /// Whether every pass's result is checked against the reference evaluator.
    pub fn checks_each_pass(self) -> bool {
        self.0 < 0
    }

    /// The pipeline text of this level.
    pub fn pipeline(self) -> &'static str {
        match self.0.unsigned_abs() {
            0 => "",
            1 => "canonicalize,eqsat{rules=\"arith\"},dce",
            2 => "canonicalize,cse,eqsat,cse,dce",
            _ => "fixpoint(canonicalize,cse,eqsat{iter-limit=100,node-limit=1000000},cse,dce)",
        }
    }
}

impl Default for OptLevel {
    fn default() -> Self {
        OptLevel::DEFAULT
    }
}

impl fmt::Display for OptLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelines_per_level_are_pinned() {
        let table: String = (-3..=3)
            .map(|l| {
                let level = OptLevel::new(l).unwrap();
                format!("O{l:<3} check={:<5} {}\n", level.checks_each_pass(), level.pipeline())
            })
            .collect();
        insta::assert_snapshot!(table);
    }

    #[test]
    fn every_level_parses() {
        let reg = crate::registry();
        for l in -3..=3 {
            strata_ir::pass::Pipeline::parse(OptLevel::new(l).unwrap().pipeline(), &reg).unwrap();
        }
    }

    #[test]
    fn out_of_range_is_an_error() {
        assert!(OptLevel::new(4).unwrap_err().to_string().contains("-3..=3"));
        assert!(OptLevel::new(-4).is_err());
    }
}
