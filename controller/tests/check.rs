//! `gantry check` as a user runs it: the built binary on a folder of manifests, its JSON document
//! and its exit status.

use std::{path::Path, process::Command};

use serde_json::Value;

const MANIFESTS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: app
  namespace: shop
  creationTimestamp: "2024-01-01T00:00:00Z"
  annotations:
    nginx.ingress.kubernetes.io/rewrite-target: /$2
    nginx.ingress.kubernetes.io/use-regex: "true"
    nginx.ingress.kubernetes.io/auth-type: basic
    nginx.ingress.kubernetes.io/auth-secret: basic-auth
    nginx.ingress.kubernetes.io/proxy-buffering: "on"
spec:
  ingressClassName: nginx
  rules:
  - host: shop.example
    http:
      paths:
      - path: /api(/|$)(.*)
        pathType: ImplementationSpecific
        backend: {service: {name: api, port: {number: 80}}}
---
apiVersion: v1
kind: Secret
metadata: {name: basic-auth, namespace: shop}
type: Opaque
stringData:
  auth: "foo:{SHA}Ys23Ag/5IOWqZCw9QGaVDdHwH00="
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {ports: [{name: http, port: 80}]}
"#;

const PROTECTED_BY_AUTH_URL: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: admin
  namespace: shop
  creationTimestamp: "2024-02-01T00:00:00Z"
  annotations:
    nginx.ingress.kubernetes.io/auth-url: http://oauth2-proxy.auth.svc/oauth2/auth
    nginx.ingress.kubernetes.io/auth-snippet: "proxy_set_header X-Team shop;"
    nginx.ingress.kubernetes.io/configuration-snippet: |
      more_set_headers "X-Frame-Options: DENY";
spec:
  ingressClassName: nginx
  rules:
  - host: admin.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
"#;

fn check(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("check")
        .arg("--manifests")
        .arg(dir)
        .args(extra)
        .output()
        .expect("run gantry check");
    (
        out.status.code().expect("exit status"),
        String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    )
}

fn outcomes(ingress: &Value) -> Vec<(String, String)> {
    ingress["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["annotation"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("nginx.ingress.kubernetes.io/")
                    .to_string(),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_clean_folder_exits_0_with_the_documented_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), MANIFESTS).unwrap();
    let (code, stdout, stderr) = check(dir.path(), &["--output", "json", "--ingress-class", "nginx"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let doc: Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["ingress_class"], "nginx");
    let ingresses = doc["ingresses"].as_array().unwrap();
    assert_eq!(ingresses.len(), 1);
    let app = &ingresses[0];
    assert_eq!(app["ingress"], "shop/app");
    assert_eq!(app["fails_closed"], Value::Null);
    assert_eq!(app["not_routed"], Value::Null);
    assert_eq!(
        outcomes(app),
        [
            ("auth-secret".to_string(), "honoured".to_string()),
            ("auth-type".into(), "honoured".into()),
            ("proxy-buffering".into(), "ignored".into()),
            ("rewrite-target".into(), "honoured".into()),
            ("use-regex".into(), "difference".into()),
        ]
    );
    for a in app["annotations"].as_array().unwrap() {
        let keys: Vec<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["annotation", "detail", "fails_closed", "outcome", "value"]);
    }
    // The Service has no EndpointSlice: a diagnostic of the Ingress, not an annotation problem.
    let diags = app["diagnostics"].as_array().unwrap();
    assert!(diags.iter().any(|d| d["reason"] == "NoEndpoints"), "{diags:?}");
    let summary = &doc["summary"];
    assert_eq!(summary["ingresses"], 1);
    assert_eq!(summary["honoured"], 3);
    assert_eq!(summary["difference"], 1);
    assert_eq!(summary["ignored"], 1);
    assert_eq!(summary["refused"], 0);
    assert_eq!(summary["invalid"], 0);
    assert_eq!(summary["fail_closed"], 0);
    assert_eq!(summary["ok"], true);
    assert!(doc["other_diagnostics"].as_array().unwrap().is_empty());
}

#[test]
fn refused_annotations_exit_1_and_name_what_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), MANIFESTS).unwrap();
    std::fs::write(dir.path().join("admin.yaml"), PROTECTED_BY_AUTH_URL).unwrap();
    std::fs::write(dir.path().join("broken.yaml"), "kind: [unclosed\n").unwrap();
    let (code, stdout, stderr) = check(dir.path(), &["--output", "json", "--ingress-class", "nginx"]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    let names: Vec<&str> = doc["ingresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ingress"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shop/app", "shop/admin"], "oldest first");
    let admin = &doc["ingresses"][1];
    assert!(admin["fails_closed"].as_str().unwrap().contains("auth-snippet"));
    let find = |name: &str| {
        admin["annotations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["annotation"] == format!("nginx.ingress.kubernetes.io/{name}"))
            .unwrap()
            .clone()
    };
    // auth-url itself is honoured; the auth snippet beside it is what fails closed.
    let auth_url = find("auth-url");
    assert_eq!(auth_url["outcome"], "difference");
    assert_eq!(auth_url["fails_closed"], false);
    let auth_snippet = find("auth-snippet");
    assert_eq!(auth_snippet["outcome"], "refused");
    assert_eq!(auth_snippet["fails_closed"], true);
    assert!(auth_snippet["detail"]
        .as_str()
        .unwrap()
        .contains("never executed"));
    let snippet = admin["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["annotation"] == "nginx.ingress.kubernetes.io/configuration-snippet")
        .unwrap();
    assert_eq!(snippet["outcome"], "refused");
    assert_eq!(snippet["fails_closed"], false);
    assert!(snippet["detail"].as_str().unwrap().contains("custom-headers"));
    assert!(admin["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["reason"] == "AnnotationRefused"));
    assert_eq!(doc["summary"]["refused"], 2);
    assert_eq!(doc["summary"]["fail_closed"], 1);
    assert_eq!(doc["summary"]["ok"], false);
    let other = doc["other_diagnostics"].as_array().unwrap();
    let parse_error = other
        .iter()
        .find(|d| d["reason"] == "ManifestParseError")
        .unwrap_or_else(|| panic!("{other:?}"));
    // The object as text and in parts.
    assert_eq!(
        (
            &parse_error["object"],
            &parse_error["kind"],
            &parse_error["namespace"],
            &parse_error["name"],
            &parse_error["uid"]
        ),
        (
            &Value::from("File broken.yaml"),
            &Value::from("File"),
            &Value::Null,
            &Value::from("broken.yaml"),
            &Value::Null
        )
    );

    // The same as text, for people.
    let (code, text, _) = check(dir.path(), &["--ingress-class", "nginx"]);
    assert_eq!(code, 1);
    assert!(text.contains("Ingress shop/admin"), "{text}");
    assert!(text.contains("FAILS CLOSED"), "{text}");
    assert!(
        text.contains(
            "nginx.ingress.kubernetes.io/auth-snippet = \"proxy_set_header X-Team shop;\": refused:"
        ),
        "{text}"
    );
}

#[test]
fn usage_and_io_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = check(&dir.path().join("missing"), &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read manifest folder"), "{stderr}");
    // No folder and no cluster to read: an error that names both ways.
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("check")
        .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("GANTRY_KUBECONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--manifests") && stderr.contains("cluster"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["check", "--output", "yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
}

#[test]
fn an_empty_class_says_how_to_find_the_ingresses() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), MANIFESTS).unwrap();
    let (code, stdout, stderr) = check(dir.path(), &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stderr.contains("--ingress-class nginx"), "{stderr}");
}

#[test]
fn the_annotations_table_is_the_readme_s() {
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["check", "--annotations-table"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(table, gantry::annotations::markdown_table());
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    assert!(readme.contains(&table));
}
