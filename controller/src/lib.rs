//! Gantry's Kubernetes side: sources fill the object store, `translate` compiles it into a
//! snapshot for the proxy.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod annotations;
pub mod crd;
pub mod diagnostic;
pub mod gateway;
pub mod manifests;
pub mod metrics;
pub mod store;
pub mod translate;

pub mod app;
pub mod check;
pub mod cli;
pub mod demo;
pub mod events;
pub mod explain;
pub mod leader;
pub mod runtime;
pub mod sources;
pub mod status;
