//! The Gateway API (`gateway.networking.k8s.io`, standard channel of v1.6.3): the types Gantry
//! reads ([`api`]). Translation into the one snapshot, status and the conformance rig come next
//! (issue 11); they feed the same typed policies (`gantry_proxy::policy`) as the ingress-nginx
//! annotations do.

pub mod api;
