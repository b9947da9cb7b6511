//! Prints the CustomResourceDefinitions of Gantry's resources as YAML, generated from the Rust types
//! in `controller/src/crd.rs`. `crds/` and the chart hold its output:
//!
//! ```sh
//! cargo run -p gantry --bin crdgen > crds/gantry.dev_proxyconfigs.yaml
//! ```
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

fn main() {
    print!("{}", gantry::crd::crd_yaml());
}
