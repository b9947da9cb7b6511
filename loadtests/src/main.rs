//! `loadtests`: Gantry side by side with nginx and HAProxy on this machine.
//!
//! `cargo run -p loadtests --release -- run [--quick]` installs what is missing, builds Gantry, runs
//! the scenarios and writes `target/loadtests/{report.json,report.md,*.svg}`.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use clap::Parser;

fn main() -> anyhow::Result<()> {
    loadtests::dispatch(loadtests::cli::Cli::parse())
}
