//! Manifest files → object store → translation, on arbitrary text.
//!
//! `gantry::manifests::parse_manifests` reads the input as a YAML/JSON file; whatever objects parse
//! go into an `ObjectStore`, which is translated into a snapshot twice (the second time with the
//! first snapshot as the previous one, as a rebuild would). Property: never panic. Translation must
//! also be deterministic: the same store gives an equal snapshot.
use std::sync::OnceLock;

use gantry::{
    manifests::parse_manifests,
    store::ObjectStore,
    translate::{translate, BackendMode, TranslateOptions},
};
use gantry_proxy::{Snapshot, TlsCert};

fn opts(mode: BackendMode) -> TranslateOptions {
    static FALLBACK: OnceLock<TlsCert> = OnceLock::new();
    TranslateOptions {
        ingress_class: "gantry".into(),
        controller_name: "gantry.dev/ingress-controller".into(),
        backend_mode: mode,
        default_ssl_certificate: None,
        fallback_certificate: FALLBACK
            .get_or_init(|| TlsCert::self_signed(&["gantry.invalid"]).expect("fallback certificate"))
            .clone(),
        proxy_config: Default::default(),
    }
}

fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(parsed) = parse_manifests("fuzz.yaml", &text) else {
        return;
    };
    let mut store = ObjectStore::new();
    for obj in parsed.objects {
        store.apply(obj);
    }
    // The input's length picks the default backend mode, so both are reached without a flag byte
    // that would make the corpus files invalid YAML.
    let mode = if data.len() % 2 == 0 {
        BackendMode::Endpoints
    } else {
        BackendMode::NodePort
    };
    let opts = opts(mode);
    let first = translate(&store, &opts, &Snapshot::default());
    let second = translate(&store, &opts, &first.snapshot);
    assert!(
        first.snapshot == second.snapshot,
        "translating the same store twice gave different snapshots"
    );
}

fn main() {
    // Generate the fallback certificate before the fuzz loop, not in the first measured execution.
    let _ = opts(BackendMode::Endpoints);
    afl::fuzz!(|data: &[u8]| {
        run(data);
    });
}
