//! Gantry as the proxy with its routes written as Gateway API objects (`gantry-gateway`): the same
//! binary and flags as [`super::gantry`], the same Service, EndpointSlice and Secret files (byte
//! for byte, so endpoint churn rewrites the same file), but a GatewayClass
//! (`controllerName: gantry.dev/gateway-controller`), one Gateway and HTTPRoutes instead of the
//! IngressClass and Ingresses.
//!
//! The Gateway `bench` has a plain listener `http` on port 80 (Gantry's `--gateway-http-port`
//! default: it is served on `--http-addr` whatever that port is) and a TLS listener `https` on 443
//! for [`MAIN_HOST`] with the `bench-tls` Secret. Every HTTPRoute names the Gateway without a
//! section, so it attaches to every listener whose hostname it matches: the main route to both
//! (plain HTTP next to TLS, as `ssl-redirect: "false"` gives the Ingress), the other hosts to the
//! plain listener only, as their Ingresses have no `tls` section.
//!
//! Each Ingress has its HTTPRoute equivalent, file for file: the main host `/`, one HTTPRoute per
//! many-routes host with one PathPrefix rule per path (1,000 per file, like the Ingresses), the
//! churn hosts, the WebSocket route. The policy mix (regex path, rewrite, CORS, allow-list, rate
//! limit, all ingress-nginx annotations) has no Gateway API form: see [`unsupported`].

use std::fmt::Write;

use super::gantry::{
    endpoint_slice, secret, service, service_named, slice_named, BACKEND, ENDPOINTS, ROUTES_PER_FILE, SECRET,
    SERVICE, WS_SERVICE,
};
use super::{many_host, File, Routes, Topology, MAIN_HOST, WS_HOST, WS_PATH};

pub const CLASS: &str = "00-gatewayclass.yaml";
pub const GATEWAY: &str = "05-gateway.yaml";
pub const ROUTE: &str = "40-httproute.yaml";
pub const CHURN: &str = "60-churn.yaml";
pub const WS: &str = "70-ws.yaml";
/// The Gateway every route attaches to.
pub const GATEWAY_NAME: &str = "bench";

/// Why this topology cannot be written as Gateway API objects, if it cannot.
pub fn unsupported(t: &Topology) -> Option<&'static str> {
    t.policy_mix.then_some(
        "the policy mix is ingress-nginx annotations (regex path with rewrite-target, CORS, \
         whitelist-source-range, limit-rps) that have no Gateway API form",
    )
}

/// All manifests for `t` (see [`unsupported`]: the policy mix is not rendered).
pub fn files(t: &Topology, cert_pem: &str, key_pem: &str) -> Vec<File> {
    debug_assert!(unsupported(t).is_none(), "gantry-gateway cannot render {t:?}");
    let mut out = vec![
        (CLASS.to_string(), gateway_class()),
        (GATEWAY.to_string(), gateway()),
        (SERVICE.to_string(), service(t)),
        (ENDPOINTS.to_string(), endpoint_slice(t)),
        (SECRET.to_string(), secret(cert_pem, key_pem)),
        (ROUTE.to_string(), main_route()),
    ];
    if let Routes::Many { hosts, paths } = t.routes {
        for (i, start) in (0..hosts).step_by(ROUTES_PER_FILE).enumerate() {
            let end = (start + ROUTES_PER_FILE).min(hosts);
            out.push((format!("50-routes-{i:03}.yaml"), many_routes(start..end, paths)));
        }
    }
    if !t.churn_hosts.is_empty() {
        out.push((CHURN.to_string(), churn_route(&t.churn_hosts)));
    }
    if let Some(addr) = t.ws_route {
        out.push((WS.to_string(), ws_route(addr)));
    }
    out
}

fn gateway_class() -> String {
    "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: gantry
spec:
  controllerName: gantry.dev/gateway-controller
"
    .to_string()
}

fn gateway() -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: {GATEWAY_NAME}
  namespace: default
spec:
  gatewayClassName: gantry
  listeners:
  - name: http
    protocol: HTTP
    port: 80
  - name: https
    protocol: HTTPS
    port: 443
    hostname: {MAIN_HOST}
    tls:
      mode: Terminate
      certificateRefs:
      - name: bench-tls
"
    )
}

/// An HTTPRoute for `hosts`, one PathPrefix rule per path, all to `service` port 80.
fn route(y: &mut String, name: &str, hosts: &[String], paths: &[String], service: &str) {
    let _ = write!(
        y,
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {name}
  namespace: default
spec:
  parentRefs:
  - name: {GATEWAY_NAME}
  hostnames:
"
    );
    for h in hosts {
        let _ = writeln!(y, "  - {h}");
    }
    y.push_str("  rules:\n");
    for p in paths {
        let _ = writeln!(
            y,
            "  - matches:
    - path: {{type: PathPrefix, value: {p}}}
    backendRefs:
    - {{name: {service}, port: 80}}"
        );
    }
}

fn main_route() -> String {
    let mut y = String::new();
    route(
        &mut y,
        GATEWAY_NAME,
        &[MAIN_HOST.to_string()],
        &["/".to_string()],
        BACKEND,
    );
    y
}

fn many_routes(hosts: std::ops::Range<usize>, paths: usize) -> String {
    let path_list: Vec<String> = (0..paths).map(|p| format!("/p{p}")).collect();
    let mut y = String::with_capacity(hosts.len() * (300 + paths * 110));
    for h in hosts {
        y.push_str("---\n");
        route(
            &mut y,
            &format!("routes-{h}"),
            &[many_host(h)],
            &path_list,
            BACKEND,
        );
    }
    y
}

fn churn_route(hosts: &[String]) -> String {
    let mut y = String::new();
    route(&mut y, "churn", hosts, &["/".to_string()], BACKEND);
    y
}

/// The WebSocket echo server: its Service and EndpointSlice exactly as for Ingress, and an
/// HTTPRoute for [`WS_HOST`] path [`WS_PATH`], in one file.
fn ws_route(addr: std::net::SocketAddr) -> String {
    let mut y = service_named(WS_SERVICE, addr.port());
    y.push_str("---\n");
    y.push_str(&slice_named(WS_SERVICE, addr.port(), std::iter::once(addr.ip())));
    y.push_str("---\n");
    route(
        &mut y,
        "ws",
        &[WS_HOST.to_string()],
        &[WS_PATH.to_string()],
        WS_SERVICE,
    );
    y
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::super::fixtures::{file, topology};
    use super::super::gantry;
    use super::*;

    /// Every YAML document of `text`, as JSON values.
    fn docs(text: &str) -> Vec<Value> {
        text.split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_norway::from_str::<Value>(d).unwrap_or_else(|e| panic!("{e}: {d}")))
            .collect()
    }

    fn all_docs(files: &[File]) -> Vec<Value> {
        files.iter().flat_map(|(_, t)| docs(t)).collect()
    }

    fn kinds(files: &[File]) -> Vec<String> {
        all_docs(files)
            .iter()
            .map(|d| d["kind"].as_str().unwrap().to_string())
            .collect()
    }

    /// (host, path, service) of every Ingress rule path.
    fn ingress_routes(files: &[File]) -> BTreeSet<(String, String, String)> {
        let mut out = BTreeSet::new();
        for d in all_docs(files).iter().filter(|d| d["kind"] == "Ingress") {
            assert_eq!(d["spec"]["ingressClassName"], "gantry");
            for r in d["spec"]["rules"].as_array().unwrap() {
                for p in r["http"]["paths"].as_array().unwrap() {
                    assert_eq!(p["pathType"], "Prefix");
                    assert_eq!(p["backend"]["service"]["port"]["number"], 80);
                    out.insert((
                        r["host"].as_str().unwrap().to_string(),
                        p["path"].as_str().unwrap().to_string(),
                        p["backend"]["service"]["name"].as_str().unwrap().to_string(),
                    ));
                }
            }
        }
        out
    }

    /// (host, path, service) of every HTTPRoute rule, checking each is attached to our Gateway.
    fn http_routes(files: &[File]) -> BTreeSet<(String, String, String)> {
        let mut out = BTreeSet::new();
        for d in all_docs(files).iter().filter(|d| d["kind"] == "HTTPRoute") {
            assert_eq!(d["apiVersion"], "gateway.networking.k8s.io/v1");
            assert_eq!(d["metadata"]["namespace"], "default");
            assert_eq!(
                d["spec"]["parentRefs"],
                serde_json::json!([{"name": GATEWAY_NAME}])
            );
            let hosts = d["spec"]["hostnames"].as_array().unwrap();
            assert!(
                !hosts.is_empty(),
                "no hostnames: the route would match every host"
            );
            for h in hosts {
                for r in d["spec"]["rules"].as_array().unwrap() {
                    let m = &r["matches"][0]["path"];
                    assert_eq!(m["type"], "PathPrefix");
                    let b = &r["backendRefs"][0];
                    assert_eq!(b["port"], 80);
                    out.insert((
                        h.as_str().unwrap().to_string(),
                        m["value"].as_str().unwrap().to_string(),
                        b["name"].as_str().unwrap().to_string(),
                    ));
                }
            }
        }
        out
    }

    /// The topology of every scenario shape at once: many routes, churn hosts, the WebSocket route.
    fn everything() -> Topology {
        let mut t = topology();
        t.routes = Routes::Many {
            hosts: 1200,
            paths: 3,
        };
        t.churn_hosts = super::super::churn_hosts(7);
        t.ws_route = Some("127.0.0.1:19500".parse().unwrap());
        t
    }

    #[test]
    fn the_class_is_ours_and_the_gateway_has_http_80_and_https_443_with_the_bench_secret() {
        let files = files(&topology(), "CERT", "KEY");
        assert_eq!(
            kinds(&files),
            [
                "GatewayClass",
                "Gateway",
                "Service",
                "EndpointSlice",
                "Secret",
                "HTTPRoute"
            ]
        );
        let class = &docs(file(&files, CLASS))[0];
        assert_eq!(class["spec"]["controllerName"], "gantry.dev/gateway-controller");
        let gw = &docs(file(&files, GATEWAY))[0];
        assert_eq!(gw["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(gw["spec"]["gatewayClassName"], class["metadata"]["name"]);
        assert_eq!(gw["metadata"]["name"], GATEWAY_NAME);
        let l = gw["spec"]["listeners"].as_array().unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            (&l[0]["name"], &l[0]["protocol"], &l[0]["port"]),
            (&"http".into(), &"HTTP".into(), &80.into())
        );
        assert!(l[0].get("hostname").is_none());
        assert_eq!(
            (&l[1]["name"], &l[1]["protocol"], &l[1]["port"]),
            (&"https".into(), &"HTTPS".into(), &443.into())
        );
        assert_eq!(l[1]["hostname"], MAIN_HOST);
        assert_eq!(l[1]["tls"]["certificateRefs"][0]["name"], "bench-tls");
        let secret = &docs(file(&files, SECRET))[0];
        assert_eq!(secret["metadata"]["name"], "bench-tls");
        let route = &docs(file(&files, ROUTE))[0];
        assert_eq!(route["spec"]["hostnames"], serde_json::json!([MAIN_HOST]));
        assert_eq!(route["spec"]["rules"][0]["matches"][0]["path"]["value"], "/");
        assert_eq!(route["spec"]["rules"][0]["backendRefs"][0]["name"], "backend");
    }

    #[test]
    fn services_endpoint_slices_and_the_secret_are_the_ingress_files_byte_for_byte() {
        let mut t = everything();
        t.endpoints.push(super::super::Endpoint {
            addr: "127.0.0.2:19000".parse().unwrap(),
            active: false,
        });
        let gw = files(&t, "CERT", "KEY");
        let ing = gantry::files(&t, "CERT", "KEY");
        for name in [SERVICE, ENDPOINTS, SECRET] {
            assert_eq!(file(&gw, name), file(&ing, name), "{name}");
        }
        // The WebSocket file: the same Service and slice, then the route.
        let (gw_ws, ing_ws) = (docs(file(&gw, WS)), docs(file(&ing, gantry::WS)));
        assert_eq!(gw_ws[..2], ing_ws[..2]);
        assert_eq!(
            (gw_ws[2]["kind"].as_str(), ing_ws[2]["kind"].as_str()),
            (Some("HTTPRoute"), Some("Ingress"))
        );
        // No Ingress machinery left.
        let k = kinds(&gw);
        assert!(!k.iter().any(|k| k == "Ingress" || k == "IngressClass"), "{k:?}");
    }

    #[test]
    fn every_ingress_host_and_path_has_an_httproute_equivalent() {
        let t = everything();
        let ing = ingress_routes(&gantry::files(&t, "C", "K"));
        let gw = http_routes(&files(&t, "C", "K"));
        // 1 main + 1200 x 3 many-routes + 10 churn + 1 WebSocket.
        assert_eq!(ing.len(), 1 + 3600 + 10 + 1);
        assert_eq!(gw, ing);
        assert!(gw.contains(&("ws.localhost".into(), "/ws".into(), "ws-echo".into())));
        assert!(gw.contains(&("h1199.example".into(), "/p2".into(), "backend".into())));
    }

    #[test]
    fn many_routes_split_into_the_same_files_one_httproute_per_host_one_rule_per_path() {
        let mut t = topology();
        t.routes = Routes::Many {
            hosts: 2500,
            paths: 10,
        };
        let gw = files(&t, "C", "K");
        let ing = gantry::files(&t, "C", "K");
        let names = |f: &[File]| -> Vec<String> {
            f.iter()
                .filter(|(n, _)| n.starts_with("50-routes-"))
                .map(|(n, _)| n.clone())
                .collect()
        };
        assert_eq!(
            names(&gw),
            ["50-routes-000.yaml", "50-routes-001.yaml", "50-routes-002.yaml"]
        );
        assert_eq!(names(&gw), names(&ing));
        for name in names(&gw) {
            let (g, i) = (docs(file(&gw, &name)), docs(file(&ing, &name)));
            assert_eq!(g.len(), i.len(), "{name}");
            for (g, i) in g.iter().zip(&i) {
                assert_eq!(g["kind"], "HTTPRoute");
                assert_eq!(g["metadata"]["name"], i["metadata"]["name"]);
                assert_eq!(g["spec"]["hostnames"][0], i["spec"]["rules"][0]["host"]);
                assert_eq!(g["spec"]["rules"].as_array().unwrap().len(), 10);
            }
        }
        assert_eq!(
            file(&gw, "50-routes-002.yaml")
                .matches("kind: HTTPRoute\n")
                .count(),
            500
        );
    }

    #[test]
    fn churn_hosts_share_one_httproute_and_change_only_its_file() {
        let mut t = topology();
        t.churn_hosts = super::super::churn_hosts(0);
        let before = files(&t, "C", "K");
        let churn = &docs(file(&before, CHURN))[0];
        assert_eq!(churn["metadata"]["name"], "churn");
        assert_eq!(churn["spec"]["hostnames"].as_array().unwrap().len(), 10);
        t.churn_hosts = super::super::churn_hosts(1);
        let after = files(&t, "C", "K");
        let changed: Vec<&str> = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.0.as_str())
            .collect();
        assert_eq!(changed, [CHURN]);
    }

    #[test]
    fn the_policy_mix_is_not_offered() {
        let mut t = topology();
        assert!(unsupported(&t).is_none());
        t.policy_mix = true;
        assert!(unsupported(&t).unwrap().contains("no Gateway API form"));
    }
}
