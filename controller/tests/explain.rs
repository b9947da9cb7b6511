//! `gantry explain`: offline from a folder, and from a running Gantry's admin listener.

use std::process::Command;

use gantry_testkit::{gantry, objects::*, *};

fn manifests(dir: &std::path::Path) {
    write_manifest(
        dir,
        "shop.yaml",
        &[
            service_yaml("web", 80, None, &["127.0.0.1:9".parse().unwrap()]),
            service_yaml("api", 80, None, &["127.0.0.1:9".parse().unwrap()]),
            ingress_yaml("web", &[], &[("shop.example", "/", "Prefix", "web", 80)]),
            ingress_yaml(
                "api",
                &[
                    ("nginx.ingress.kubernetes.io/enable-cors", "true"),
                    ("nginx.ingress.kubernetes.io/limit-rps", "10"),
                ],
                &[
                    ("shop.example", "/api", "Prefix", "api", 80),
                    ("shop.example", "/api/v1", "Exact", "api", 80),
                ],
            ),
        ]
        .join("---\n"),
    );
}

fn explain(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("explain")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn explain_names_the_route_its_policies_and_why_the_others_lost() {
    let dir = tempfile::tempdir().unwrap();
    manifests(dir.path());
    let d = dir.path().to_str().unwrap();

    let (code, text, err) = explain(&["http://shop.example/api/users", "--manifests", d]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("served by: Prefix /api (Ingress default/api) -> default/api:80"),
        "{text}"
    );
    assert!(text.contains("CORS"), "{text}");
    assert!(text.contains("rate limit per client: 10/s"), "{text}");
    assert!(
        text.contains("Prefix / (Ingress default/web)") && text.contains("matched first"),
        "{text}"
    );
    assert!(
        text.contains("Exact /api/v1") && text.contains("not exactly this"),
        "{text}"
    );

    let (code, json, _) = explain(&["shop.example/api/v1", "--manifests", d, "--output", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["route"]["pathType"], "Exact");
    assert_eq!(v["route"]["ingress"], "default/api");

    let (code, text, _) = explain(&["http://other.example/", "--manifests", d]);
    assert_eq!(code, 1, "no route: a request would get 404");
    assert!(text.contains("nothing"), "{text}");

    let (code, _, err) = explain(&["http://shop.example/"]);
    assert_eq!(code, 2);
    assert!(err.contains("--manifests"), "{err}");
}

#[test]
fn explain_weighs_an_http_route_s_header_match_with_the_headers_given() {
    let dir = tempfile::tempdir().unwrap();
    manifests(dir.path());
    write_manifest(
        dir.path(),
        "gateway.yaml",
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: { name: gantry }
spec: { controllerName: gantry.dev/gateway-controller }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: gw, namespace: default }
spec:
  gatewayClassName: gantry
  listeners: [{ name: http, protocol: HTTP, port: 80 }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: beta, namespace: default }
spec:
  parentRefs: [{ name: gw }]
  hostnames: [shop.example]
  rules:
    - matches: [{ path: { value: / }, headers: [{ name: x-beta, value: "yes" }], method: POST }]
      backendRefs: [{ name: api, port: 80 }]
"#,
    );
    let d = dir.path().to_str().unwrap();
    let (code, text, err) = explain(&[
        "http://shop.example/home",
        "--manifests",
        d,
        "--method",
        "POST",
        "--header",
        "x-beta: yes",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains(
            "served by: Prefix / when POST, header x-beta=yes, plain HTTP only (HTTPRoute default/beta)"
        ),
        "{text}"
    );
    // Without the header, the Ingress's path serves it and the route says why it lost.
    let (code, text, _) = explain(&["http://shop.example/home", "--manifests", d, "--method", "POST"]);
    assert_eq!(code, 0);
    assert!(
        text.contains("served by: Prefix / (Ingress default/web)"),
        "{text}"
    );
    assert!(text.contains("HTTPRoute default/beta"), "{text}");

    let (code, _, err) = explain(&["http://shop.example/", "--manifests", d, "--header", "nocolon"]);
    assert_eq!(code, 2);
    assert!(err.contains("NAME:VALUE"), "{err}");
}

#[tokio::test]
async fn explain_asks_a_running_gantry_and_its_debug_endpoint_agrees() {
    let dir = tempfile::tempdir().unwrap();
    manifests(dir.path());
    let g = gantry!().manifests(dir.path()).start().await;
    let admin = g.admin.to_string();
    let url = "http://shop.example/api/users?x=1";
    let (code, json, err) =
        tokio::task::spawn_blocking(move || explain(&[url, "--admin", &admin, "--output", "json"]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{err}");
    let via_cli: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(via_cli["route"]["path"], "/api");
    let direct: serde_json::Value = plain_client()
        .get(format!(
            "http://{}/debug/explain?host=shop.example&path=/api/users",
            g.admin
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(direct["route"], via_cli["route"]);
    assert_eq!(direct["notChosen"], via_cli["notChosen"]);
}
