//! Table-driven translation tests: objects (built fluently or read from manifests) in, snapshot
//! lookups and diagnostics out.

mod fixtures;

mod annotations;
mod backends;
mod canary;
mod class;
mod conformance;
mod gateway;
mod incremental;
mod objects;
mod robustness;
mod rules;
mod settings;
mod tls;
