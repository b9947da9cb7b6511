//! The CI drift check: the CRD YAML checked in under `crds/` and shipped by the chart
//! (`charts/gantry/crds/`) must be exactly what `crdgen` prints from the Rust types.
//!
//! After changing `controller/src/crd.rs`, regenerate both with:
//!
//! ```sh
//! cargo run -p gantry --bin crdgen > crds/gantry.dev_proxyconfigs.yaml
//! cp crds/gantry.dev_proxyconfigs.yaml charts/gantry/crds/
//! ```

use std::path::Path;

const FILE: &str = "gantry.dev_proxyconfigs.yaml";

fn check(folder: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(folder)
        .join(FILE);
    let checked_in = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let generated = gantry::crd::crd_yaml();
    if checked_in != generated {
        let first = checked_in
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| checked_in.lines().count().min(generated.lines().count()));
        panic!(
            "{} differs from what crdgen prints (first at line {}: checked in {:?}, generated {:?}); \
             regenerate it: cargo run -p gantry --bin crdgen > {folder}/{FILE}",
            path.display(),
            first + 1,
            checked_in.lines().nth(first),
            generated.lines().nth(first),
        );
    }
}

#[test]
fn crds_folder_holds_what_crdgen_prints() {
    check("crds");
}

#[test]
fn chart_ships_the_same_crds() {
    check("charts/gantry/crds");
}
