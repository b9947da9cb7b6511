//! The load-test suite: scenario catalog, peer configurations (nginx, HAProxy) and Gantry manifests
//! generated from one topology, the runner that starts and measures them, and the report.
//!
//! Everything that can be pure is pure (config generation, output parsing, aggregation, report
//! rendering) and unit-tested; the runner only wires processes, sockets and files around it.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod churn;
pub mod cli;
pub mod config;
pub mod idle;
pub mod loadgen;
pub mod net;
pub mod otlp_sink;
pub mod procs;
pub mod proxy;
pub mod report;
pub mod runner;
pub mod scenarios;
pub mod setup;
pub mod soak;
pub mod svg;
pub mod ws;

use cli::{Cli, Command};

/// Runs one command line: the suite itself, or one of the helper processes the suite starts.
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => runner::run(args),
        Command::Soak(args) => soak::run(args),
        Command::List => {
            for s in scenarios::ScenarioId::ALL {
                println!("{:<24} {}", s.name(), s.describe());
            }
            Ok(())
        }
        Command::WsEcho(args) => ws::echo_main(args),
        Command::WsLoad(args) => ws::load_main(args),
        Command::IdleClient(args) => idle::client_main(args),
    }
}
