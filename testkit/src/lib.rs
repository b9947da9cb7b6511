//! Gantry's one test kit, for tests, benchmarks and examples only (never a normal dependency):
//!
//! - [`binary`]: the real `gantry` binary on free loopback ports, from one builder
//!   ([`gantry!`]`().manifest("all.yaml", &m).start().await`), with its log, readiness, routes and
//!   metrics;
//! - [`echo`]: one echo backend (HTTP/1.1, h2c and HTTP/2, TLS, WebSocket, delays, chosen status,
//!   headers and trailers) that answers with what it received as JSON and records it;
//! - [`objects`]: Kubernetes objects, typed (k8s-openapi) for the API server and as YAML text for
//!   `--manifests` folders;
//! - [`envtest`]: a real kube-apiserver and etcd (`KUBEBUILDER_ASSETS`), and [`cluster`]: what the
//!   cluster tests do with it (a namespace per test, server-side apply, bounded waits, the pod IP);
//! - [`client`], [`tls`], [`grpc`]: clients, certificates and a gRPC backend;
//! - [`process`]: external tools (Prometheus, an OpenTelemetry Collector, ...): finding them
//!   ([`tool`], `GANTRY_REQUIRE_TOOLS`) and killing them when a test ends ([`Killed`]).
//!
//! The crate depends on neither `gantry` nor `gantry-proxy`, so both list it as a dev-dependency.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod binary;
pub mod client;
pub mod cluster;
pub mod echo;
pub mod envtest;
pub mod grpc;
pub mod objects;
pub mod process;
pub mod tls;

pub use binary::{free_port, write_manifest, Gantry, GantryBuilder};
pub use client::{cert_names, plain_client, served_cert_names, tls_client};
pub use echo::{Echo, EchoBuilder, Protocol, Seen};
pub use envtest::TestEnv;
pub use process::{tool, tool_or, Killed};
