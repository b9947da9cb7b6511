//! Diagnostics: one per rejected or partly applied object. They belong to the controller, which
//! turns them into log lines, metrics, Events and `/debug/routes`; the data plane never sees them.

use serde::Serialize;

/// One problem with one object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    /// `Kind namespace/name`, e.g. `Ingress default/web`.
    pub object: String,
    /// A short CamelCase reason, stable for metrics and Events (`ServiceNotFound`, `PathConflict`, ...).
    pub reason: String,
    /// What is wrong and what was done about it, for people.
    pub message: String,
}
