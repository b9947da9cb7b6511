//! What the store keeps of the two most numerous kinds, Services and EndpointSlices: the fields
//! translation reads, in types of their own.
//!
//! A k8s-openapi struct carries every field of its kind inline, read or not (a `Service` is 824
//! bytes with its spec and status empty, an `Endpoint` 344), and its metadata with it. Slimming
//! (the watcher's `slim`) empties what is not read, but the structs stay their size. Kept as
//! these, a Service with one port takes about a quarter of the store its slimmed k8s-openapi form
//! took (475 against 1,715 bytes, its key and index included), and an EndpointSlice with two
//! endpoints about a quarter too (851 against 3,644; `cargo run --release -p gantry --example
//! store_memory`). They are also exactly what a change is judged by: two versions that keep the
//! same are the same to translation ([`super::Change`]).

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use super::SERVICE_NAME_LABEL;

/// A Service: its ports and its cluster IP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeptService {
    /// `spec.clusterIP` as written (`"None"` for a headless Service; absent until one is given).
    pub cluster_ip: Option<Box<str>>,
    /// `spec.ports`, in order.
    pub ports: Box<[KeptServicePort]>,
}

/// One port of a [`KeptService`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptServicePort {
    pub name: Option<Box<str>>,
    pub port: i32,
    pub node_port: Option<i32>,
    pub app_protocol: Option<Box<str>>,
}

/// An EndpointSlice: the Service it belongs to, its address type, ports and endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeptSlice {
    /// Its `kubernetes.io/service-name` label; `None` when absent or empty (no Service claims it).
    pub service: Option<Box<str>>,
    /// `addressType`: `IPv4`, `IPv6` or `FQDN`.
    pub address_type: Box<str>,
    pub ports: Box<[KeptSlicePort]>,
    pub endpoints: Box<[KeptEndpoint]>,
}

/// One port of a [`KeptSlice`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptSlicePort {
    pub name: Option<Box<str>>,
    pub port: Option<i32>,
}

/// One endpoint of a [`KeptSlice`]: its addresses and its `ready` condition (unset means ready,
/// as the API says).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptEndpoint {
    pub addresses: Box<[Box<str>]>,
    pub ready: Option<bool>,
}

fn boxed(s: Option<String>) -> Option<Box<str>> {
    s.map(String::into_boxed_str)
}

impl From<Service> for KeptService {
    fn from(service: Service) -> Self {
        let spec = service.spec.unwrap_or_default();
        Self {
            cluster_ip: boxed(spec.cluster_ip),
            ports: spec
                .ports
                .unwrap_or_default()
                .into_iter()
                .map(|p| KeptServicePort {
                    name: boxed(p.name),
                    port: p.port,
                    node_port: p.node_port,
                    app_protocol: boxed(p.app_protocol),
                })
                .collect(),
        }
    }
}

impl From<EndpointSlice> for KeptSlice {
    fn from(slice: EndpointSlice) -> Self {
        let service = slice
            .metadata
            .labels
            .and_then(|mut labels| labels.remove(SERVICE_NAME_LABEL))
            .filter(|s| !s.is_empty())
            .map(String::into_boxed_str);
        Self {
            service,
            address_type: slice.address_type.into_boxed_str(),
            ports: slice
                .ports
                .unwrap_or_default()
                .into_iter()
                .map(|p| KeptSlicePort {
                    name: boxed(p.name),
                    port: p.port,
                })
                .collect(),
            endpoints: slice
                .endpoints
                .into_iter()
                .map(|e| KeptEndpoint {
                    addresses: e.addresses.into_iter().map(String::into_boxed_str).collect(),
                    ready: e.conditions.and_then(|c| c.ready),
                })
                .collect(),
        }
    }
}
