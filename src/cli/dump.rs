//! `strata dump MODEL -o FILE`: trace and dump a model file.

use anyhow::Result;
use clap::Args;

#[derive(Debug, Args)]
pub struct DumpArgs {}

pub fn run(_args: DumpArgs) -> Result<()> {
    anyhow::bail!("`strata dump` is being built")
}
