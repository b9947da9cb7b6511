//! Cluster mode, the objects annotations refer to: the real `gantry` binary watching a real
//! kube-apiserver (envtest) reads the htpasswd Secret of `auth-secret` (written by the real
//! `htpasswd` tool) and the ConfigMap of `custom-headers`, watched one by one by name, and follows
//! them as they change, go away and come back. Each test has its own control plane and namespace.

use std::{collections::BTreeMap, process::Command, time::Duration};

use gantry_testkit::{cluster::*, gantry, objects::*, TestEnv};
use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, Secret},
        networking::v1::{Ingress, IngressClass},
    },
    ByteString,
};
use kube::api::{DeleteParams, PostParams};

const WAIT: Duration = Duration::from_secs(20);
const P: &str = "nginx.ingress.kubernetes.io/";

/// `htpasswd -nbB user password`: one bcrypt line, as the Apache tool writes it.
fn htpasswd_line(user: &str, password: &str) -> String {
    let out = Command::new("htpasswd")
        .args(["-nbB", user, password])
        .output()
        .expect("the htpasswd tool (apache2-utils) is installed");
    assert!(out.status.success(), "htpasswd failed: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string() + "\n"
}

fn opaque_secret(ns: &str, name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: meta(ns, name),
        type_: Some("Opaque".into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

fn config_map(ns: &str, name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: meta(ns, name),
        data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..ConfigMap::default()
    }
}

/// `ing` with these ingress-nginx annotations (names without the prefix), and no others.
fn annotated(mut ing: Ingress, pairs: &[(&str, &str)]) -> Ingress {
    ing.metadata.annotations = Some(
        pairs
            .iter()
            .map(|(k, v)| (format!("{P}{k}"), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    );
    ing
}

/// One answer: its status, the `X-Team` header (custom-headers) and the backend that served it.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    team: Option<String>,
    service: Option<String>,
}

/// A GET with `Host: host` over plain HTTP, or HTTPS when `https`, with basic credentials if given.
async fn request(
    g: &gantry_testkit::Gantry,
    host: &str,
    https: bool,
    creds: Option<(&str, &str)>,
) -> Result<Answer, String> {
    let req = if https {
        gantry_testkit::tls_client(host, g.https, false).get(format!("https://{host}/"))
    } else {
        gantry_testkit::plain_client()
            .get(g.url("/"))
            .header("host", host)
    };
    let req = match creds {
        Some((user, password)) => req.basic_auth(user, Some(password)),
        None => req,
    };
    let r = req.send().await.map_err(|e| format!("request failed: {e}"))?;
    let status = r.status().as_u16();
    let team = r
        .headers()
        .get("x-team")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    Ok(Answer {
        status,
        team,
        service: body["service"].as_str().map(str::to_string),
    })
}

/// Waits until a request's answer passes `check`; returns it.
async fn wait_for(
    g: &gantry_testkit::Gantry,
    what: &str,
    host: &str,
    https: bool,
    creds: Option<(&str, &str)>,
    check: impl Fn(&Answer) -> bool,
) -> Answer {
    eventually(g, WAIT, what, || async {
        let a = request(g, host, https, creds).await?;
        if check(&a) {
            Ok(a)
        } else {
            Err(format!("{a:?}"))
        }
    })
    .await
}

async fn wait_reference_watches(g: &gantry_testkit::Gantry, want: f64) {
    eventually(g, WAIT, &format!("{want} reference watches"), || async {
        match g.metric("gantry_kube_reference_watches", &[]).await {
            Some(n) if n == want => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

const ALICE: Option<(&str, &str)> = Some(("alice", "s3cret"));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_and_custom_headers_follow_the_secret_and_config_map_their_annotations_name() {
    let env = TestEnv::start_async().await.expect("control plane");
    let c = Cluster::new(&env, "refs").await;
    apply(&c.cluster_api::<IngressClass>(), &ingress_class()).await;
    let web = pod("web").await;
    c.backend("web", &[web.addr]).await;
    let htpasswd = htpasswd_line("alice", "s3cret");
    let secret = opaque_secret(&c.ns, "basic-auth", &[("auth", &htpasswd)]);
    apply(&c.api::<Secret>(), &secret).await;
    apply(
        &c.api::<ConfigMap>(),
        &config_map(&c.ns, "headers", &[("X-Team", "shop")]),
    )
    .await;
    let base = ingress(&c.ns, "private", CLASS, &[("private.example", "/", "web", 80)]);
    let protected = annotated(
        base.clone(),
        &[
            ("auth-type", "basic"),
            ("auth-secret", "basic-auth"),
            ("auth-realm", "Staff only"),
            ("custom-headers", "headers"),
        ],
    );
    apply(&c.api::<Ingress>(), &protected).await;

    // The objects named when Gantry starts are read before it is ready: the first snapshot already
    // asks for the password, and never fails closed for a Secret that is there.
    let g = gantry!().cluster(&env).start().await;
    let first = request(&g, "private.example", false, None).await.unwrap();
    assert_eq!(first.status, 401, "{first:?}\n{}", tail(&g.log_text(), 40));
    let ok = request(&g, "private.example", false, ALICE).await.unwrap();
    assert_eq!(
        ok,
        Answer {
            status: 200,
            team: Some("shop".into()),
            service: Some("web".into()),
        }
    );
    let wrong = request(&g, "private.example", false, Some(("alice", "nope")))
        .await
        .unwrap();
    assert_eq!(wrong.status, 401);
    assert_eq!(
        g.metric("gantry_kube_reference_watches", &[]).await,
        Some(2.0),
        "one watch per referenced object"
    );

    // The ConfigMap changes: so does the header.
    apply(
        &c.api::<ConfigMap>(),
        &config_map(&c.ns, "headers", &[("X-Team", "checkout")]),
    )
    .await;
    wait_for(
        &g,
        "the new X-Team header",
        "private.example",
        false,
        ALICE,
        |a| a.status == 200 && a.team.as_deref() == Some("checkout"),
    )
    .await;

    // The Secret is deleted: fail closed (503), with or without the password.
    c.api::<Secret>()
        .delete("basic-auth", &DeleteParams::default())
        .await
        .expect("delete the Secret");
    wait_for(
        &g,
        "503 without the Secret",
        "private.example",
        false,
        ALICE,
        |a| a.status == 503,
    )
    .await;
    assert_eq!(
        request(&g, "private.example", false, None).await.unwrap().status,
        503
    );

    // Created again: the password works again.
    c.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .expect("re-create the Secret");
    wait_for(
        &g,
        "200 with the Secret back",
        "private.example",
        false,
        ALICE,
        |a| a.status == 200 && a.service.as_deref() == Some("web"),
    )
    .await;
    assert_eq!(
        request(&g, "private.example", false, None).await.unwrap().status,
        401
    );

    // The annotations go: their watches stop, and the route is open and plain.
    apply(&c.api::<Ingress>(), &annotated(base, &[])).await;
    wait_for(
        &g,
        "open without annotations",
        "private.example",
        false,
        None,
        |a| a.status == 200 && a.team.is_none(),
    )
    .await;
    wait_reference_watches(&g, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_created_after_its_ingress_is_seen_and_a_tls_secret_named_by_an_annotation_stays() {
    let env = TestEnv::start_async().await.expect("control plane");
    let c = Cluster::new(&env, "late").await;
    apply(&c.cluster_api::<IngressClass>(), &ingress_class()).await;
    let web = pod("web").await;
    c.backend("web", &[web.addr]).await;
    let g = gantry!().cluster(&env).start().await;
    let htpasswd = htpasswd_line("alice", "s3cret");

    // An Ingress naming a Secret that does not exist yet fails closed...
    let late = annotated(
        ingress(&c.ns, "late", CLASS, &[("late.example", "/", "web", 80)]),
        &[("auth-type", "basic"), ("auth-secret", "late-auth")],
    );
    apply(&c.api::<Ingress>(), &late).await;
    wait_for(
        &g,
        "503 while the Secret is missing",
        "late.example",
        false,
        ALICE,
        |a| a.status == 503,
    )
    .await;
    // ... until the Secret is created.
    apply(
        &c.api::<Secret>(),
        &opaque_secret(&c.ns, "late-auth", &[("auth", &htpasswd)]),
    )
    .await;
    wait_for(
        &g,
        "200 once the Secret exists",
        "late.example",
        false,
        ALICE,
        |a| a.status == 200,
    )
    .await;
    assert_eq!(
        request(&g, "late.example", false, None).await.unwrap().status,
        401
    );

    // A kubernetes.io/tls Secret that is both the host's certificate and, with an `auth` key, the
    // password file: the TLS watch and the reference watch both see it.
    let mut site = tls_secret(&c.ns, "site", &["site.example", "first.cert.test"]);
    site.data
        .as_mut()
        .unwrap()
        .insert("auth".into(), ByteString(htpasswd.clone().into_bytes()));
    apply(&c.api::<Secret>(), &site).await;
    let site_ing = with_tls(
        ingress(&c.ns, "site", CLASS, &[("site.example", "/", "web", 80)]),
        &["site.example"],
        "site",
    );
    apply(
        &c.api::<Ingress>(),
        &annotated(
            site_ing.clone(),
            &[("auth-type", "basic"), ("auth-secret", "site")],
        ),
    )
    .await;
    wait_for(
        &g,
        "site.example over HTTPS with the password",
        "site.example",
        true,
        ALICE,
        |a| a.status == 200,
    )
    .await;
    assert_eq!(request(&g, "site.example", true, None).await.unwrap().status, 401);
    wait_reference_watches(&g, 2.0).await;

    // The annotation goes: its watch stops, but the certificate stays in the store (the TLS watch
    // still has it): no TLS diagnostic, and a new certificate in the Secret is served.
    apply(&c.api::<Ingress>(), &site_ing).await;
    wait_for(&g, "site.example open", "site.example", true, None, |a| {
        a.status == 200
    })
    .await;
    wait_reference_watches(&g, 1.0).await;
    // Past the rebuild that follows the stop (debounced: at most 500 ms).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let routes = g.routes().await;
    let site_diagnostics: Vec<&serde_json::Value> = routes["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["object"].as_str().is_some_and(|o| o.ends_with("/site")))
        .collect();
    assert!(site_diagnostics.is_empty(), "{site_diagnostics:#?}");
    let renewed = tls_secret(&c.ns, "site", &["site.example", "second.cert.test"]);
    apply(&c.api::<Secret>(), &renewed).await;
    eventually(&g, WAIT, "the renewed certificate served", || async {
        let r = gantry_testkit::tls_client("site.example", g.https, false)
            .get("https://site.example/")
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let names = gantry_testkit::served_cert_names(&r);
        if r.status() == 200 && names.iter().any(|n| n == "second.cert.test") {
            Ok(())
        } else {
            Err(format!("{} {names:?}", r.status()))
        }
    })
    .await;
}

/// `gantry check` with no `--manifests` reads the cluster its kubeconfig names, as serving it
/// would: the class's Ingresses, and the Secrets their annotations name (read one by one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gantry_check_reports_the_ingresses_of_a_live_cluster() {
    let env = TestEnv::start_async().await.expect("control plane");
    let c = Cluster::new(&env, "check").await;
    apply(&c.cluster_api::<IngressClass>(), &ingress_class()).await;
    let htpasswd = htpasswd_line("alice", "s3cret");
    apply(
        &c.api::<Secret>(),
        &opaque_secret(&c.ns, "basic-auth", &[("auth", &htpasswd)]),
    )
    .await;
    let ingresses = [
        annotated(
            ingress(&c.ns, "private", CLASS, &[("private.example", "/", "web", 80)]),
            &[("auth-type", "basic"), ("auth-secret", "basic-auth")],
        ),
        annotated(
            ingress(&c.ns, "missing", CLASS, &[("missing.example", "/", "web", 80)]),
            &[("auth-type", "basic"), ("auth-secret", "nowhere")],
        ),
        annotated(
            ingress(&c.ns, "slow", CLASS, &[("slow.example", "/", "web", 80)]),
            &[("limit-rate", "100")],
        ),
        annotated(
            ingress(&c.ns, "theirs", "nginx", &[("theirs.example", "/", "web", 80)]),
            &[("limit-rate", "100")],
        ),
    ];
    for ing in &ingresses {
        apply(&c.api::<Ingress>(), ing).await;
    }

    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("--kubeconfig")
        .arg(env.kubeconfig_path())
        .args(["--watch-namespace", &c.ns, "check", "--output", "json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a refused annotation exits 1\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    let names: Vec<&str> = report["ingresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ingress"].as_str().unwrap())
        .collect();
    let of = |name: &str| {
        let full = format!("{}/{name}", c.ns);
        report["ingresses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["ingress"] == full.as_str())
            .unwrap_or_else(|| panic!("{full} in {names:?}"))
            .clone()
    };
    assert_eq!(names.len(), 3, "only the class's Ingresses: {names:?}");
    let private = of("private");
    assert!(
        private["fails_closed"].is_null(),
        "the Secret was read: {private}"
    );
    assert!(
        private["annotations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["outcome"] == "honoured"),
        "{private}"
    );
    let missing = of("missing");
    assert!(
        missing["fails_closed"]
            .as_str()
            .is_some_and(|w| w.contains("nowhere")),
        "{missing}"
    );
    let slow = of("slow");
    assert_eq!(slow["annotations"][0]["outcome"], "refused", "{slow}");
    assert_eq!(report["summary"]["ok"], false);

    // A kubeconfig that names no reachable cluster is a clear error (exit 2), not an empty report.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("kubeconfig");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("--kubeconfig")
        .arg(&bad)
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gantry check:"));
}
