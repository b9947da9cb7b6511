//! `gantry check`: what Gantry would do with a folder of manifests, or with a live cluster, before
//! serving it.
//!
//! It loads the folder with the file source's loader (or reads the cluster as cluster mode would,
//! see [`load_cluster`]), translates it once, and prints, for every
//! Ingress of the class (oldest first), each ingress-nginx annotation and its outcome (honoured,
//! honoured with a difference, ignored, refused, invalid, unknown) and the other diagnostics of that
//! Ingress; then the diagnostics about anything else (files that do not parse, ...).
//!
//! Exit status: 0 when no annotation is refused or invalid, 1 otherwise, 2 when the check could not
//! run (usage or I/O errors; clap's own usage errors exit with 2 as well).
//!
//! # JSON output (`--output json`)
//!
//! One document, whose shape is stable (fields are only ever added):
//!
//! ```json
//! {
//!   "version": 1,
//!   "ingress_class": "gantry",
//!   "ingresses": [
//!     {
//!       "ingress": "default/web",
//!       "fails_closed": null,
//!       "not_routed": null,
//!       "annotations": [
//!         {
//!           "annotation": "nginx.ingress.kubernetes.io/rewrite-target",
//!           "value": "/$2",
//!           "outcome": "honoured",
//!           "detail": null,
//!           "fails_closed": false
//!         }
//!       ],
//!       "diagnostics": [{ "reason": "ServiceNotFound", "message": "..." }]
//!     }
//!   ],
//!   "other_diagnostics": [
//!     {
//!       "object": "File a.yaml", "kind": "File", "namespace": null, "name": "a.yaml", "uid": null,
//!       "reason": "ManifestParseError", "message": "..."
//!     }
//!   ],
//!   "summary": {
//!     "ingresses": 1, "fail_closed": 0, "not_routed": 0,
//!     "honoured": 1, "difference": 0, "ignored": 0, "refused": 0, "invalid": 0, "unknown": 0,
//!     "ok": true
//!   }
//! }
//! ```
//!
//! - `ingresses`: every Ingress of the class, oldest first (as translation orders them).
//! - `fails_closed`: why the Ingress's paths answer 503, or `null`; `not_routed`: why its rules are
//!   not routed at all (a canary), or `null`.
//! - `annotations[].outcome`: `honoured`, `difference`, `ignored`, `refused`, `invalid` or
//!   `unknown`; `detail` says what differs, why it is ignored or refused, what was expected and
//!   done instead, or for `unknown` the known annotation it is a typo of (`null` for `honoured`, and
//!   for `unknown` without a likely typo); `value` is cut to 100 characters.
//! - `other_diagnostics[].object`: `Kind namespace/name` (`Kind name` when cluster-scoped, `File
//!   name`, `document N of file`), and the same in parts: `kind`, `namespace`, `name`, and `uid`
//!   (`null` outside an API server).
//! - `summary.ok`: no annotation is refused or invalid (exit status 0).

use std::{
    collections::BTreeMap,
    io::{self, Write},
    path::Path,
    sync::Arc,
};

use gantry_proxy::{Snapshot, TlsCert};
use serde::Serialize;

use crate::{
    annotations::{markdown_table, AnnotationReport, Outcome},
    cli::{Args, CheckArgs, OutputFormat},
    diagnostic::{Diagnostic, ObjectKind},
    sources::files::ManifestDir,
    store::{Kind, Object, ObjectKey, ObjectStore},
    translate::{translate, IngressReport, TranslateOptions, Translation},
};

/// Exit status: nothing refused or invalid.
pub const EXIT_OK: i32 = 0;
/// Exit status: an annotation is refused or invalid.
pub const EXIT_PROBLEMS: i32 = 1;
/// Exit status: the check could not run.
pub const EXIT_ERROR: i32 = 2;

/// The JSON document.
#[derive(Debug, Serialize)]
pub struct Report {
    pub version: u32,
    pub ingress_class: String,
    pub ingresses: Vec<IngressCheck>,
    pub other_diagnostics: Vec<Diagnostic>,
    pub summary: Summary,
}

/// One Ingress of the class.
#[derive(Debug, Serialize)]
pub struct IngressCheck {
    pub ingress: String,
    pub fails_closed: Option<String>,
    pub not_routed: Option<String>,
    pub annotations: Vec<AnnotationReport>,
    pub diagnostics: Vec<IngressDiagnostic>,
}

/// A diagnostic of one Ingress (its object is the Ingress).
#[derive(Debug, Serialize)]
pub struct IngressDiagnostic {
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub ingresses: usize,
    pub fail_closed: usize,
    pub not_routed: usize,
    pub honoured: usize,
    pub difference: usize,
    pub ignored: usize,
    pub refused: usize,
    pub invalid: usize,
    pub unknown: usize,
    pub ok: bool,
}

/// Runs `gantry check`, writing to `out` and errors to `err`; returns the exit status.
pub fn run(args: &Args, check: &CheckArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    if check.annotations_table {
        return match out.write_all(markdown_table().as_bytes()) {
            Ok(()) => EXIT_OK,
            Err(_) => EXIT_ERROR,
        };
    }
    let class = check
        .ingress_class
        .clone()
        .unwrap_or_else(|| args.ingress_class.clone());
    let dir = check.manifests.as_deref().or(args.manifests.as_deref());
    let (report, place) = match dir {
        Some(dir) => (check_dir(args, &class, dir), format!("in {}", dir.display())),
        None => (
            check_cluster(args, &class)
                .map_err(|e| format!("{e} (give --manifests DIR to check a folder instead)")),
            "in the cluster".to_string(),
        ),
    };
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            let _ = writeln!(err, "gantry check: {e}");
            return EXIT_ERROR;
        }
    };
    let written = match check.output {
        OutputFormat::Json => serde_json::to_writer_pretty(&mut *out, &report)
            .map_err(io::Error::other)
            .and_then(|()| writeln!(out)),
        OutputFormat::Text => write_text(&report, out),
    };
    if let Err(e) = written {
        let _ = writeln!(err, "gantry check: writing the report: {e}");
        return EXIT_ERROR;
    }
    if report.ingresses.is_empty() {
        let _ = writeln!(
            err,
            "gantry check: no Ingress of class {class:?} {place} (for Ingresses written for ingress-nginx, try --ingress-class nginx)"
        );
    }
    if report.summary.ok {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    }
}

/// Loads `dir`, translates it with the class `class`, and builds the report.
pub fn check_dir(args: &Args, class: &str, dir: &Path) -> Result<Report, String> {
    Ok(report(class, translate_dir(args, class, dir)?))
}

/// Loads `dir` and translates it with the class `class`, as serving it would (the folder's own
/// problems are among the diagnostics).
pub fn translate_dir(args: &Args, class: &str, dir: &Path) -> Result<Translation, String> {
    let mut manifests = ManifestDir::new(dir);
    manifests.scan(true).map_err(|e| e.to_string())?;
    let state = manifests.state();
    translate_store(args, class, &state.store, state.diagnostics)
}

/// Reads what serving the cluster would read (see [`load_cluster`]) and builds the report.
pub fn check_cluster(args: &Args, class: &str) -> Result<Report, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the client: {e}"))?;
    let store = runtime.block_on(load_cluster(args, class))?;
    Ok(report(class, translate_store(args, class, &store, Vec::new())?))
}

/// The objects of the cluster that `--kubeconfig` (else `KUBECONFIG`, else the in-cluster account)
/// points at, as serving it would see them: Ingresses, IngressClasses, Services and EndpointSlices
/// of the `--watch-namespace`s (all by default), Nodes in node-port mode, ProxyConfigs when their
/// CRD is installed, and only the Secrets and ConfigMaps that the class's Ingresses name (their TLS
/// Secrets and what their annotations refer to), read one by one as cluster mode watches them.
/// The check needs read access to those kinds only; it writes nothing.
pub async fn load_cluster(args: &Args, class: &str) -> Result<ObjectStore, String> {
    use k8s_openapi::api::{
        core::v1::{ConfigMap, Node, Secret, Service},
        discovery::v1::EndpointSlice,
        networking::v1::{Ingress, IngressClass},
    };
    use kube::{api::ListParams, Api};

    let client = crate::sources::kube::client(args.kubeconfig.as_deref())
        .await
        .map_err(|e| format!("connecting to the cluster: {e}"))?;
    let namespaces: Vec<Option<&str>> = if args.watch_namespaces.is_empty() {
        vec![None]
    } else {
        args.watch_namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    let mut store = ObjectStore::new();
    macro_rules! list {
        ($ty:ty, $variant:ident, $api:expr) => {{
            let api: Api<$ty> = $api;
            let listed = api
                .list(&ListParams::default())
                .await
                .map_err(|e| format!("listing {}s: {e}", stringify!($variant)))?;
            for obj in listed {
                store.apply(crate::sources::kube::slim(Object::$variant(obj)));
            }
        }};
    }
    for ns in namespaces {
        let c = client.clone();
        match ns {
            Some(ns) => {
                list!(Ingress, Ingress, Api::namespaced(c.clone(), ns));
                list!(Service, Service, Api::namespaced(c.clone(), ns));
                list!(EndpointSlice, EndpointSlice, Api::namespaced(c, ns));
            }
            None => {
                list!(Ingress, Ingress, Api::all(c.clone()));
                list!(Service, Service, Api::all(c.clone()));
                list!(EndpointSlice, EndpointSlice, Api::all(c));
            }
        }
    }
    list!(IngressClass, IngressClass, Api::all(client.clone()));
    if matches!(args.backend_mode, crate::cli::BackendModeArg::NodePort) {
        list!(Node, Node, Api::all(client.clone()));
    }
    // The CRD may not be installed: then there is no ProxyConfig to read.
    let configs: Api<crate::crd::ProxyConfig> = Api::all(client.clone());
    if let Ok(listed) = configs.list(&ListParams::default()).await {
        for obj in listed {
            store.apply(Object::ProxyConfig(obj));
        }
    }

    // The Secrets and ConfigMaps that the class's Ingresses name, as translation reads them: every
    // TLS Secret, and what the annotations refer to.
    let mut wanted: Vec<(Kind, ObjectKey)> = Vec::new();
    let opts = translate_options(args, class)?;
    for key in crate::translate::served_ingresses(&store, &opts) {
        let Some(ing) = store.ingresses().get(&key) else {
            continue;
        };
        for tls in ing.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
            if let Some(name) = tls.secret_name.as_deref().filter(|n| !n.is_empty()) {
                wanted.push((Kind::Secret, ObjectKey::new(key.namespace.clone(), name)));
            }
        }
        wanted.extend(crate::annotations::references::references(ing));
    }
    if let Some(key) = &args.default_ssl_certificate {
        wanted.push((Kind::Secret, key.clone()));
    }
    wanted.sort();
    wanted.dedup();
    for (kind, key) in wanted {
        let got = match kind {
            Kind::Secret => Api::<Secret>::namespaced(client.clone(), &key.namespace)
                .get_opt(&key.name)
                .await
                .map(|o| o.map(Object::Secret)),
            Kind::ConfigMap => Api::<ConfigMap>::namespaced(client.clone(), &key.namespace)
                .get_opt(&key.name)
                .await
                .map(|o| o.map(Object::ConfigMap)),
            _ => continue,
        };
        match got {
            Ok(Some(obj)) => {
                store.apply(crate::sources::kube::slim_referenced(obj));
            }
            // Missing: translation reports it, as serving would.
            Ok(None) => {}
            Err(e) => return Err(format!("reading {kind} {}/{}: {e}", key.namespace, key.name)),
        }
    }
    Ok(store)
}

fn translate_options(args: &Args, class: &str) -> Result<TranslateOptions, String> {
    let config = args
        .proxy_config()
        .map_err(|e| format!("invalid settings: {e}"))?;
    let fallback_certificate =
        TlsCert::self_signed(&["gantry.invalid"]).map_err(|e| format!("generating a certificate: {e}"))?;
    Ok(TranslateOptions {
        ingress_class: class.to_string(),
        controller_name: args.controller_name.clone(),
        backend_mode: args.backend_mode.into(),
        default_ssl_certificate: args.default_ssl_certificate.clone(),
        fallback_certificate,
        proxy_config: Arc::new(config),
        gateway: Some(crate::translate::gateway::GatewayOptions::default()),
    })
}

/// Translates `store` with the class `class`, as serving it would, with `diagnostics` of loading
/// it added.
fn translate_store(
    args: &Args,
    class: &str,
    store: &ObjectStore,
    diagnostics: Vec<Diagnostic>,
) -> Result<Translation, String> {
    let opts = translate_options(args, class)?;
    let mut translation = translate(store, &opts, &Snapshot::default());
    translation.diagnostics.extend(diagnostics);
    translation.diagnostics.sort();
    translation.diagnostics.dedup();
    Ok(translation)
}

/// The report of one translation.
pub fn report(class: &str, translation: Translation) -> Report {
    let Translation {
        diagnostics,
        annotations,
        ..
    } = translation;
    let mut ingresses: Vec<IngressCheck> = Vec::with_capacity(annotations.len());
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for IngressReport {
        ingress,
        fails_closed,
        not_routed,
        annotations,
    } in annotations.into_iter().map(Arc::unwrap_or_clone)
    {
        index.insert(ingress.clone(), ingresses.len());
        ingresses.push(IngressCheck {
            ingress,
            fails_closed,
            not_routed,
            annotations,
            diagnostics: Vec::new(),
        });
    }
    let mut other_diagnostics = Vec::new();
    for d in diagnostics {
        let ingress = (d.object.kind == ObjectKind::Ingress).then(|| d.object.key().to_string());
        match ingress.and_then(|key| index.get(&key)) {
            Some(&i) => ingresses[i].diagnostics.push(IngressDiagnostic {
                reason: d.reason,
                message: d.message,
            }),
            None => other_diagnostics.push(d),
        }
    }
    let mut summary = Summary {
        ingresses: ingresses.len(),
        ..Summary::default()
    };
    for ing in &ingresses {
        summary.fail_closed += usize::from(ing.fails_closed.is_some());
        summary.not_routed += usize::from(ing.not_routed.is_some());
        for a in &ing.annotations {
            match a.outcome {
                Outcome::Honoured => summary.honoured += 1,
                Outcome::Difference(_) => summary.difference += 1,
                Outcome::Ignored(_) => summary.ignored += 1,
                Outcome::Refused(_) => summary.refused += 1,
                Outcome::Invalid(_) => summary.invalid += 1,
                Outcome::Unknown => summary.unknown += 1,
            }
        }
    }
    summary.ok = summary.refused == 0 && summary.invalid == 0;
    Report {
        version: 1,
        ingress_class: class.to_string(),
        ingresses,
        other_diagnostics,
        summary,
    }
}

/// The report for people.
pub fn write_text(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    for ing in &report.ingresses {
        writeln!(out, "Ingress {}", ing.ingress)?;
        if ing.annotations.is_empty() {
            writeln!(out, "  no ingress-nginx annotations")?;
        }
        for a in &ing.annotations {
            let outcome = match &a.outcome {
                Outcome::Honoured => "honoured".to_string(),
                Outcome::Difference(d) => format!("honoured, with a difference: {d}"),
                Outcome::Ignored(d) => format!("ignored: {d}"),
                Outcome::Refused(d) => format!("refused: {d}"),
                Outcome::Invalid(d) => format!("invalid: {d}"),
                Outcome::Unknown => match a.detail() {
                    Some(d) => {
                        format!("unknown: not an ingress-nginx annotation Gantry knows; ignored ({d})")
                    }
                    None => "unknown: not an ingress-nginx annotation Gantry knows; ignored".to_string(),
                },
            };
            let closed = if a.fails_closed { " [fails closed]" } else { "" };
            writeln!(out, "  {} = {:?}: {outcome}{closed}", a.annotation, a.value)?;
        }
        if let Some(why) = &ing.fails_closed {
            writeln!(
                out,
                "  => FAILS CLOSED: every path of this Ingress answers 503 ({why})"
            )?;
        }
        if let Some(why) = &ing.not_routed {
            writeln!(out, "  => NOT ROUTED: {why}")?;
        }
        for d in &ing.diagnostics {
            writeln!(out, "  diagnostic {}: {}", d.reason, d.message)?;
        }
        writeln!(out)?;
    }
    if !report.other_diagnostics.is_empty() {
        writeln!(out, "Other diagnostics")?;
        for d in &report.other_diagnostics {
            writeln!(out, "  {} {}: {}", d.object, d.reason, d.message)?;
        }
        writeln!(out)?;
    }
    let s = &report.summary;
    writeln!(
        out,
        "{} Ingress(es) of class {:?}: {} fail closed, {} not routed; annotations: {} honoured, {} with a difference, {} ignored, {} refused, {} invalid, {} unknown",
        s.ingresses,
        report.ingress_class,
        s.fail_closed,
        s.not_routed,
        s.honoured,
        s.difference,
        s.ignored,
        s.refused,
        s.invalid,
        s.unknown
    )?;
    Ok(())
}
