//! `strata run FILE`: load a model file and run it (MegEngine's load_and_run).

use anyhow::Result;
use clap::Args;

#[derive(Debug, Args)]
pub struct RunArgs {}

pub fn run(_args: RunArgs) -> Result<()> {
    anyhow::bail!("`strata run` is being built")
}
