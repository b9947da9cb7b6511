//! The Gateway API (`gateway.networking.k8s.io`, standard channel of v1.6.3): the types Gantry
//! reads ([`api`]) and the status writer ([`status`]). Translation into the one snapshot is a
//! processor of `translate` (`translate::gateway`); it feeds the same typed policies
//! (`gantry_proxy::policy`) as the ingress-nginx annotations do.

pub mod api;
pub mod status;
