//! The chart, installed for real into a kube-apiserver (envtest), with the `gantry` binary run as the
//! chart's ServiceAccount:
//!
//! - RBAC is proved, not assumed: the controller runs with a token of the chart's ServiceAccount,
//!   bound only by the chart's own rendered roles, and routes (with the ConfigMap a `custom-headers`
//!   annotation names), writes Ingress status and Events; without the Secrets role it never
//!   becomes ready and says why.
//! - A ProxyConfig change (the upstream response timeout) changes behaviour without a restart, and
//!   invalid ProxyConfigs are refused by the API server.
//!
//! The pods of the chart's Deployment never run (envtest has no scheduler or kubelet): the binary
//! runs here, with the container args the chart renders (listen addresses aside) and the pod's
//! environment (POD_NAME, POD_NAMESPACE).

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use gantry::crd::{GoDuration, ProxyConfig};
use gantry_testkit::{cluster::*, gantry, objects::*, Echo, Gantry, TestEnv};
use k8s_openapi::api::{
    core::v1::{ConfigMap, Service},
    events::v1::Event,
    networking::v1::{Ingress, IngressClass},
};
use kube::{
    api::{ListParams, Patch, PatchParams},
    Api,
};

const RELEASE: &str = "gantry";
const NAMESPACE: &str = "ingress";
const WAIT: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn helm() -> PathBuf {
    let out = Command::new(repo().join("charts/install-helm.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run charts/install-helm.sh");
    assert!(out.status.success(), "charts/install-helm.sh failed");
    PathBuf::from(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .trim(),
    )
}

/// `helm template` of the chart with `--set` values.
fn render(set: &[&str]) -> String {
    let mut cmd = Command::new(helm());
    cmd.args(["template", RELEASE])
        .arg(repo().join("charts/gantry"))
        .args(["--namespace", NAMESPACE]);
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The container args of the rendered Deployment.
fn rendered_args(manifests: &str) -> Vec<String> {
    for doc in serde_norway::Deserializer::from_str(manifests) {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        if v["kind"] == "Deployment" {
            return v["spec"]["template"]["spec"]["containers"][0]["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
        }
    }
    panic!("no Deployment rendered")
}

fn kubectl(env: &TestEnv, args: &[&str], stdin: Option<&str>) -> String {
    let mut cmd = env.kubectl();
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl");
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubectl {args:?}: {text}");
    text
}

/// What `helm install` does here: the CRDs, then every rendered object (the Deployment stays
/// unscheduled). Returns the rendering.
fn install(env: &TestEnv, set: &[&str]) -> String {
    let crd = repo().join("charts/gantry/crds/gantry.dev_proxyconfigs.yaml");
    kubectl(env, &["apply", "-f", crd.to_str().unwrap()], None);
    kubectl(
        env,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/proxyconfigs.gantry.dev",
        ],
        None,
    );
    kubectl(env, &["create", "namespace", NAMESPACE], None);
    let manifests = render(set);
    kubectl(env, &["apply", "-f", "-"], Some(&manifests));
    manifests
}

/// A kubeconfig that authenticates with a fresh token of the chart's ServiceAccount.
fn service_account_kubeconfig(env: &TestEnv) -> PathBuf {
    let token = kubectl(
        env,
        &[
            "create",
            "token",
            RELEASE,
            "--namespace",
            NAMESPACE,
            "--duration=1h",
        ],
        None,
    );
    let path = env.dir().join("gantry-sa.kubeconfig");
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "envtest", "cluster": {
            "server": env.apiserver_url(),
            "certificate-authority": env.ca_cert_path(),
        }}],
        "users": [{"name": "gantry", "user": {"token": token.trim()}}],
        "contexts": [{"name": "gantry", "context": {"cluster": "envtest", "user": "gantry", "namespace": NAMESPACE}}],
        "current-context": "gantry",
    });
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    path
}

/// Starts the binary with the chart's container args, as the pod `pod` of the release namespace,
/// authenticated by `kubeconfig`; the listen addresses are free loopback ports instead.
fn spawn_as_pod(env: &TestEnv, args: &[String], kubeconfig: &Path, pod: &str) -> Gantry {
    let args = args.iter().filter(|a| {
        !["--http-addr=", "--https-addr=", "--admin-addr="]
            .iter()
            .any(|p| a.starts_with(p))
    });
    gantry!()
        .kubeconfig(env, kubeconfig)
        .args(args)
        .env("POD_NAME", pod)
        .env("POD_NAMESPACE", NAMESPACE)
        .log(env.dir().join(format!("{pod}.log")))
        .spawn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_service_account_and_roles_are_enough_and_the_secrets_role_is_needed() {
    let env = TestEnv::start_async().await.expect("control plane");
    let manifests = install(&env, &[]);
    let args = rendered_args(&manifests);
    let admin = env.client().await;
    let c = Cluster {
        client: admin.clone(),
        ns: env.new_namespace("shop").await,
    };

    // The application: a backend, its Ingress with TLS, and one Ingress with a missing Service.
    let web = pod("web").await;
    c.backend("web", &[web.addr]).await;
    apply(&c.api(), &tls_secret(&c.ns, "shop-tls", &["shop.example"])).await;
    // The ConfigMap its custom-headers annotation names: read with the chart's configmaps rule.
    let headers = ConfigMap {
        metadata: meta(&c.ns, "shop-headers"),
        data: Some([("X-Shop".to_string(), "yes".to_string())].into()),
        ..ConfigMap::default()
    };
    apply(&c.api(), &headers).await;
    let mut shop = with_tls(
        ingress(&c.ns, "shop", "gantry", &[("shop.example", "/", "web", 80)]),
        &["shop.example"],
        "shop-tls",
    );
    shop.metadata.annotations = Some(
        [(
            "nginx.ingress.kubernetes.io/custom-headers".to_string(),
            "shop-headers".to_string(),
        )]
        .into(),
    );
    apply(&c.api::<Ingress>(), &shop).await;
    apply(
        &c.api::<Ingress>(),
        &ingress(
            &c.ns,
            "broken",
            "gantry",
            &[("broken.example", "/", "missing", 80)],
        ),
    )
    .await;
    // A load balancer assigned the chart's Service an address (no cloud here: written as admin).
    Api::<Service>::namespaced(admin.clone(), NAMESPACE)
        .patch_status(
            RELEASE,
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}),
            ),
        )
        .await
        .expect("set the Service's load-balancer address");

    let kubeconfig = service_account_kubeconfig(&env);
    let g = spawn_as_pod(&env, &args, &kubeconfig, "gantry-0");
    g.wait_ready(Duration::from_secs(60)).await;

    // Routing over HTTPS (the host has TLS, so plain HTTP redirects), with the certificate from the
    // Secret: the Secrets role at work.
    let names = eventually(
        &g,
        WAIT,
        "shop.example served by web with the Secret's certificate and the ConfigMap's header",
        || async {
            let r = gantry_testkit::tls_client("shop.example", g.https, false)
                .get("https://shop.example/cart")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let names = gantry_testkit::served_cert_names(&r);
            let status = r.status();
            let header = r.headers().get("x-shop").cloned();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            if status == 200
                && body["service"] == "web"
                && names.iter().any(|n| n == "shop.example")
                && header.as_ref().is_some_and(|h| h == "yes")
            {
                Ok(names)
            } else {
                Err(format!("{status} {body} {names:?} x-shop: {header:?}"))
            }
        },
    )
    .await;
    assert_eq!(
        get(&g, "shop.example", "/cart").await.unwrap().0,
        308,
        "plain HTTP redirects"
    );
    assert!(names.contains(&"shop.example".to_string()));

    // Status: the chart's Service's address, written by the leader (Lease role, ingresses/status).
    eventually(&g, WAIT, "the published address in Ingress status", || async {
        match c.ingress_status("shop").await {
            s if s == ["203.0.113.7"] => Ok(()),
            s => Err(format!("{s:?}")),
        }
    })
    .await;
    let lease = kubectl(
        &env,
        &[
            "get",
            "lease",
            "gantry-leader",
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    assert_eq!(lease, "gantry-0");

    // Events about the broken Ingress (events.k8s.io create).
    eventually(
        &g,
        WAIT,
        "a ServiceNotFound Event on the broken Ingress",
        || async {
            let events = c
                .api::<Event>()
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let found = events.items.iter().any(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("broken")
                    && e.reason.as_deref() == Some("ServiceNotFound")
            });
            found
                .then_some(())
                .ok_or_else(|| format!("{} events", events.items.len()))
        },
    )
    .await;
    let log = g.log_text();
    assert!(
        !log.contains("forbidden"),
        "no request was refused:\n{}",
        tail(&log, 40)
    );
    drop(g);

    // Without the chart's Secrets role the controller cannot list TLS Secrets: it never becomes
    // ready, and its log names the refused request.
    kubectl(&env, &["delete", "clusterrolebinding", "gantry-secrets"], None);
    let g = spawn_as_pod(&env, &args, &kubeconfig, "gantry-1");
    let log = eventually(&g, WAIT, "a forbidden error about Secrets in the log", || async {
        let log = g.log_text();
        if log.contains("forbidden") && log.contains("secrets") {
            Ok(log)
        } else {
            Err("not yet".into())
        }
    })
    .await;
    let line = log
        .lines()
        .find(|l| l.contains("forbidden") && l.contains("secrets"))
        .unwrap();
    assert!(
        line.contains("system:serviceaccount:ingress:gantry") && line.contains("cannot list resource"),
        "the error says who may not do what: {line}"
    );
    let ready = gantry_testkit::plain_client()
        .get(format!("http://{}/readyz", g.admin))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(ready, 503, "not ready without the Secrets role");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_config_change_applies_without_a_restart_and_invalid_ones_are_refused() {
    let env = TestEnv::start_async().await.expect("control plane");
    let manifests = install(&env, &["proxyConfig.spec.upstreamResponseTimeout=500ms"]);
    let args = rendered_args(&manifests);
    let c = Cluster::new(&env, "slow").await;
    // Answers 200 after 1.5 s.
    let slow = Echo::builder("slow")
        .ip(host_ip())
        .delay(Duration::from_millis(1500))
        .start()
        .await;
    c.backend("slow", &[slow.addr]).await;
    apply(
        &c.api::<Ingress>(),
        &ingress(&c.ns, "slow", "gantry", &[("slow.example", "/", "slow", 80)]),
    )
    .await;
    // The class the chart made points at the chart's ProxyConfig.
    let class = Api::<IngressClass>::all(c.client.clone())
        .get("gantry")
        .await
        .unwrap();
    assert_eq!(class.spec.unwrap().parameters.unwrap().name, RELEASE);

    let kubeconfig = service_account_kubeconfig(&env);
    let g = spawn_as_pod(&env, &args, &kubeconfig, "gantry-0");
    g.wait_ready(Duration::from_secs(60)).await;
    let pid = g.child.as_ref().unwrap().id();

    // 500 ms against a backend that takes 1.5 s: 504.
    wait_status(&g, WAIT, "slow.example", "/", 504).await;

    // Raise the timeout in the ProxyConfig: the same process now waits for the answer.
    let pcs = Api::<ProxyConfig>::all(c.client.clone());
    let mut pc = pcs.get(RELEASE).await.unwrap();
    pc.spec.upstream_response_timeout = Some(GoDuration::new("5s"));
    pcs.replace(RELEASE, &Default::default(), &pc)
        .await
        .expect("update the ProxyConfig");
    wait_served_by(&g, WAIT, "slow.example", "/", "slow").await;
    assert_eq!(g.child.as_ref().unwrap().id(), pid, "no restart");

    // And back down: 504 again.
    let patch = |spec: serde_json::Value| serde_json::json!({"spec": spec});
    pcs.patch(
        RELEASE,
        &PatchParams::default(),
        &Patch::Merge(patch(serde_json::json!({"upstreamResponseTimeout": "1s"}))),
    )
    .await
    .expect("patch the ProxyConfig");
    wait_status(&g, WAIT, "slow.example", "/", 504).await;

    // Invalid values never reach the controller: the API server refuses them.
    for (spec, why) in [
        (
            serde_json::json!({"upstreamResponseTimeout": "0s"}),
            "must be greater than zero",
        ),
        (
            serde_json::json!({"upstreamResponseTimeout": "5 seconds"}),
            "spec.upstreamResponseTimeout",
        ),
        (serde_json::json!({"maxHeaderBytes": 1024}), "spec.maxHeaderBytes"),
        (serde_json::json!({"balancer": "Random"}), "spec.balancer"),
        (serde_json::json!({"tlsMinVersion": "1.1"}), "spec.tlsMinVersion"),
        (
            serde_json::json!({"defaultCertificate": {"name": "x"}}),
            "namespace",
        ),
    ] {
        let err = pcs
            .patch(
                RELEASE,
                &PatchParams::default(),
                &Patch::Merge(patch(spec.clone())),
            )
            .await
            .expect_err(&format!("{spec} must be refused"));
        let kube::Error::Api(e) = err else {
            panic!("{spec}: {err}")
        };
        assert_eq!(e.code, 422, "{spec}: {e:?}");
        assert!(e.message.contains(why), "{spec}: {}", e.message);
    }
    // The last accepted value still applies.
    wait_status(&g, WAIT, "slow.example", "/", 504).await;
    assert_eq!(g.child.as_ref().unwrap().id(), pid);
}
