//! Gantry as the proxy: ordinary Kubernetes YAML for `gantry --manifests DIR`.
//!
//! IngressClass `gantry` plus `spec.ingressClassName: gantry` on every Ingress (without them the
//! Ingress is not Gantry's), annotation `nginx.ingress.kubernetes.io/ssl-redirect: "false"` so the
//! TLS host also answers plain HTTP, one Service `backend` whose EndpointSlice lists the active
//! endpoints, and a `kubernetes.io/tls` Secret with the shared certificate. Files are split by how
//! often they change: endpoint churn rewrites only the EndpointSlice, route churn only its Ingress.

use std::fmt::Write;

use super::{many_host, File, Routes, Topology, MAIN_HOST, WS_HOST, WS_PATH};

pub const CLASS: &str = "00-ingressclass.yaml";
pub const SERVICE: &str = "10-service.yaml";
pub const ENDPOINTS: &str = "20-endpointslice.yaml";
pub const SECRET: &str = "30-secret.yaml";
pub const INGRESS: &str = "40-ingress.yaml";
pub const CHURN: &str = "60-churn.yaml";
pub const WS: &str = "70-ws.yaml";
pub(crate) const BACKEND: &str = "backend";
pub(crate) const WS_SERVICE: &str = "ws-echo";
/// Many-routes Ingresses per file.
pub(crate) const ROUTES_PER_FILE: usize = 1000;

/// All manifests for `t`. `cert_pem`/`key_pem` are the PEM texts of the shared certificate.
pub fn files(t: &Topology, cert_pem: &str, key_pem: &str) -> Vec<File> {
    let mut out = vec![
        (CLASS.to_string(), ingress_class()),
        (SERVICE.to_string(), service(t)),
        (ENDPOINTS.to_string(), endpoint_slice(t)),
        (SECRET.to_string(), secret(cert_pem, key_pem)),
        (INGRESS.to_string(), main_ingress(t.policy_mix)),
    ];
    if let Routes::Many { hosts, paths } = t.routes {
        for (i, start) in (0..hosts).step_by(ROUTES_PER_FILE).enumerate() {
            let end = (start + ROUTES_PER_FILE).min(hosts);
            out.push((format!("50-routes-{i:03}.yaml"), many_routes(start..end, paths)));
        }
    }
    if !t.churn_hosts.is_empty() {
        out.push((CHURN.to_string(), churn_ingress(&t.churn_hosts)));
    }
    if let Some(addr) = t.ws_route {
        out.push((WS.to_string(), ws_route(addr)));
    }
    out
}

fn ingress_class() -> String {
    "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: gantry
spec:
  controller: gantry.dev/ingress-controller
"
    .to_string()
}

pub(crate) fn service(t: &Topology) -> String {
    let port = t.endpoints.first().map(|e| e.addr.port()).unwrap_or(80);
    service_named(BACKEND, port)
}

pub(crate) fn service_named(name: &str, target_port: u16) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
spec:
  type: ClusterIP
  ports:
  - name: http
    port: 80
    targetPort: {target_port}
    protocol: TCP
"
    )
}

pub(crate) fn endpoint_slice(t: &Topology) -> String {
    // One slice, one port; the endpoints differ by IP (127.0.0.1, .2, .3), like pods.
    let port = t.endpoints.first().map(|e| e.addr.port()).unwrap_or(80);
    slice_named(BACKEND, port, t.active_endpoints().map(|e| e.addr.ip()))
}

pub(crate) fn slice_named(
    service: &str,
    port: u16,
    addresses: impl Iterator<Item = std::net::IpAddr>,
) -> String {
    let mut y = format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {service}-1
  namespace: default
  labels:
    kubernetes.io/service-name: {service}
addressType: IPv4
ports:
- name: http
  port: {port}
  protocol: TCP
endpoints:
"
    );
    let mut any = false;
    for ip in addresses {
        any = true;
        let _ = writeln!(y, "- addresses: [\"{ip}\"]\n  conditions:\n    ready: true");
    }
    if !any {
        y = y.replace("endpoints:\n", "endpoints: []\n");
    }
    y
}

/// The WebSocket echo server as a second Service (`ws-echo`), its EndpointSlice and an Ingress
/// for [`WS_HOST`] path [`WS_PATH`], in one file.
fn ws_route(addr: std::net::SocketAddr) -> String {
    let mut y = service_named(WS_SERVICE, addr.port());
    y.push_str("---\n");
    y.push_str(&slice_named(WS_SERVICE, addr.port(), std::iter::once(addr.ip())));
    y.push_str("---\n");
    y.push_str(&ingress_header("ws"));
    y.push_str("  rules:\n");
    rule_to(&mut y, WS_HOST, &[WS_PATH.to_string()], WS_SERVICE);
    y
}

pub(crate) fn secret(cert_pem: &str, key_pem: &str) -> String {
    format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: bench-tls
  namespace: default
type: kubernetes.io/tls
data:
  tls.crt: {}
  tls.key: {}
",
        base64(cert_pem.as_bytes()),
        base64(key_pem.as_bytes())
    )
}

fn ingress_header(name: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: default
  annotations:
    nginx.ingress.kubernetes.io/ssl-redirect: \"false\"
spec:
  ingressClassName: gantry
"
    )
}

fn rule(y: &mut String, host: &str, paths: &[String]) {
    rule_to(y, host, paths, BACKEND);
}

fn rule_to(y: &mut String, host: &str, paths: &[String], service: &str) {
    let _ = writeln!(y, "  - host: {host}\n    http:\n      paths:");
    for p in paths {
        let _ = writeln!(
            y,
            "      - path: {p}
        pathType: Prefix
        backend:
          service:
            name: {service}
            port:
              number: 80"
        );
    }
}

fn main_ingress(policy_mix: bool) -> String {
    if policy_mix {
        use super::policy_mix::{ALLOW, ORIGIN, PATH, RPS};
        let y = ingress_header("bench").replace(
            "  annotations:\n",
            &format!(
                "  annotations:
    nginx.ingress.kubernetes.io/use-regex: \"true\"
    nginx.ingress.kubernetes.io/rewrite-target: \"/$1\"
    nginx.ingress.kubernetes.io/enable-cors: \"true\"
    nginx.ingress.kubernetes.io/cors-allow-origin: \"{ORIGIN}\"
    nginx.ingress.kubernetes.io/whitelist-source-range: \"{ALLOW}\"
    nginx.ingress.kubernetes.io/limit-rps: \"{RPS}\"
"
            ),
        );
        let mut y = y;
        let _ = writeln!(
            y,
            "  tls:\n  - hosts: [\"{MAIN_HOST}\"]\n    secretName: bench-tls\n  rules:"
        );
        let _ = writeln!(
            y,
            "  - host: {MAIN_HOST}\n    http:\n      paths:\n      - path: {PATH}\n        pathType: ImplementationSpecific\n        backend:\n          service:\n            name: backend\n            port:\n              number: 80"
        );
        return y;
    }
    let mut y = ingress_header("bench");
    let _ = writeln!(
        y,
        "  tls:\n  - hosts: [\"{MAIN_HOST}\"]\n    secretName: bench-tls\n  rules:"
    );
    rule(&mut y, MAIN_HOST, &["/".to_string()]);
    y
}

fn many_routes(hosts: std::ops::Range<usize>, paths: usize) -> String {
    let path_list: Vec<String> = (0..paths).map(|p| format!("/p{p}")).collect();
    let mut y = String::with_capacity(hosts.len() * (400 + paths * 130));
    for h in hosts {
        y.push_str("---\n");
        y.push_str(&ingress_header(&format!("routes-{h}")));
        y.push_str("  rules:\n");
        rule(&mut y, &many_host(h), &path_list);
    }
    y
}

fn churn_ingress(hosts: &[String]) -> String {
    let mut y = ingress_header("churn");
    y.push_str("  rules:\n");
    for h in hosts {
        rule(&mut y, h, &["/".to_string()]);
    }
    y
}

/// Standard base64 with padding (Secret `data`).
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{file, topology};
    use super::super::Endpoint;
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn ingresses_are_ours_and_serve_plain_http_next_to_tls() {
        let files = files(&topology(), "CERT", "KEY");
        let ing = file(&files, INGRESS);
        assert!(ing.contains("ingressClassName: gantry"));
        assert!(ing.contains("nginx.ingress.kubernetes.io/ssl-redirect: \"false\""));
        assert!(ing.contains("secretName: bench-tls") && ing.contains("- host: localhost"));
        assert!(file(&files, CLASS).contains("controller: gantry.dev/ingress-controller"));
        let secret = file(&files, SECRET);
        assert!(secret.contains("type: kubernetes.io/tls") && secret.contains("tls.crt: Q0VSVA=="));
        let eps = file(&files, ENDPOINTS);
        assert!(eps.contains("kubernetes.io/service-name: backend") && eps.contains("port: 19000"));
        assert!(eps.contains("- addresses: [\"127.0.0.1\"]"));
        assert_eq!(files.len(), 5);
    }

    #[test]
    fn endpoint_slices_list_only_active_endpoints() {
        let mut t = topology();
        t.endpoints[0].active = false;
        t.endpoints.push(Endpoint {
            addr: "127.0.0.2:19000".parse().unwrap(),
            active: true,
        });
        let eps = endpoint_slice(&t);
        assert!(!eps.contains("127.0.0.1") && eps.contains("127.0.0.2"));
        t.endpoints[1].active = false;
        assert!(endpoint_slice(&t).contains("endpoints: []"));
    }

    #[test]
    fn many_routes_split_into_files_of_a_thousand_ingresses() {
        let mut t = topology();
        t.routes = Routes::Many {
            hosts: 2500,
            paths: 10,
        };
        let files = files(&t, "C", "K");
        let routes: Vec<&File> = files
            .iter()
            .filter(|(n, _)| n.starts_with("50-routes-"))
            .collect();
        assert_eq!(routes.len(), 3);
        assert_eq!(routes[2].1.matches("kind: Ingress\n").count(), 500);
        assert_eq!(routes[0].1.matches("pathType: Prefix").count(), 10_000);
        assert!(routes[2].1.contains("- host: h2499.example") && routes[2].1.contains("path: /p9\n"));
    }

    #[test]
    fn the_websocket_route_is_a_second_service_with_its_own_slice_and_ingress() {
        let mut t = topology();
        assert!(files(&t, "C", "K").iter().all(|(n, _)| n != WS));
        t.ws_route = Some("127.0.0.1:19500".parse().unwrap());
        let files = files(&t, "C", "K");
        let ws = file(&files, WS);
        assert_eq!(ws.matches("---\n").count(), 2);
        assert!(
            ws.contains("kind: Service\nmetadata:\n  name: ws-echo\n") && ws.contains("targetPort: 19500")
        );
        assert!(ws.contains("name: ws-echo-1") && ws.contains("kubernetes.io/service-name: ws-echo"));
        assert!(ws.contains("port: 19500") && ws.contains("- addresses: [\"127.0.0.1\"]"));
        assert!(ws.contains("ingressClassName: gantry") && ws.contains("- host: ws.localhost"));
        assert!(ws.contains("- path: /ws\n") && ws.contains("name: ws-echo\n            port:"));
        // The main backend is untouched.
        assert!(file(&files, INGRESS).contains("name: backend\n            port:"));
        assert!(!file(&files, SERVICE).contains("ws-echo"));
    }

    #[test]
    fn churn_hosts_get_their_own_ingress() {
        let mut t = topology();
        t.churn_hosts = vec!["churn-1.example".into(), "churn-2.example".into()];
        let files = files(&t, "C", "K");
        let churn = file(&files, CHURN);
        assert_eq!(churn.matches("- host: churn-").count(), 2);
        assert!(churn.contains("name: churn\n"));
    }

    #[test]
    fn the_policy_mix_is_written_as_annotations_on_a_regex_path() {
        let mut t = topology();
        t.policy_mix = true;
        let files = files(&t, "CERT", "KEY");
        let ing = file(&files, INGRESS);
        for a in [
            "use-regex: \"true\"",
            "rewrite-target: \"/$1\"",
            "enable-cors: \"true\"",
            "cors-allow-origin: \"https://app.example\"",
            "whitelist-source-range: \"127.0.0.0/8\"",
            "limit-rps: \"1000000\"",
            "ssl-redirect: \"false\"",
        ] {
            assert!(
                ing.contains(&format!("nginx.ingress.kubernetes.io/{a}")),
                "{a} in {ing}"
            );
        }
        assert!(ing.contains("path: /(.*)\n        pathType: ImplementationSpecific"));
    }
}
