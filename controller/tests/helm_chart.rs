//! The Helm chart (`charts/gantry`): lint, render and check every option family, and have the real
//! API server accept every rendered manifest.
//!
//! Needs `helm`: `charts/install-helm.sh` builds the pinned version from its Go module once and
//! caches it (`GANTRY_HELM` names another binary). Nothing is skipped: without helm these tests
//! fail with the installer's error.
//!
//! The option families are the values files in `charts/gantry/ci/` (the chart-testing convention);
//! the default values are a family of their own.

use std::{
    collections::BTreeSet,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

use clap::Parser;
use serde_json::Value;

const RELEASE: &str = "gantry";
const NAMESPACE: &str = "ingress";
const FULLNAME: &str = "gantry";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    repo().join("charts/gantry")
}

/// The helm binary from `charts/install-helm.sh` (built once, then cached).
fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let out = Command::new(repo().join("charts/install-helm.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run charts/install-helm.sh");
        assert!(out.status.success(), "charts/install-helm.sh failed");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let path = PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("install-helm.sh prints the path")
                .trim(),
        );
        assert!(path.is_file(), "{} is not a file", path.display());
        path
    })
}

/// The option families: `(name, values file)`; the default values have no file.
fn families() -> Vec<(String, Option<PathBuf>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .expect("charts/gantry/ci")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = vec![("default".to_string(), None)];
    for f in files {
        let name = f
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches("-values.yaml")
            .to_string();
        out.push((name, Some(f)));
    }
    assert!(out.len() >= 9, "every option family has a values file: {out:?}");
    out
}

fn family(name: &str) -> Option<PathBuf> {
    let path = chart().join(format!("ci/{name}-values.yaml"));
    assert!(path.is_file(), "{}", path.display());
    Some(path)
}

/// `helm template` output, or helm's stderr when it fails.
fn template_raw(values: Option<&Path>, set: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(helm());
    cmd.args(["template", RELEASE])
        .arg(chart())
        .args(["--namespace", NAMESPACE]);
    if let Some(v) = values {
        cmd.arg("-f").arg(v);
    }
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("run helm template");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The rendered objects, as JSON values.
fn render(values: Option<&Path>, set: &[&str]) -> Rendered {
    let text = template_raw(values, set).unwrap_or_else(|e| panic!("helm template failed: {e}"));
    let mut objects = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("helm renders YAML");
        if !v.is_null() {
            objects.push(v);
        }
    }
    Rendered { text, objects }
}

struct Rendered {
    text: String,
    objects: Vec<Value>,
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn one(&self, kind: &str) -> &Value {
        let all = self.all(kind);
        assert_eq!(all.len(), 1, "one {kind} expected, got {}", all.len());
        all[0]
    }

    fn named(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    fn kinds(&self) -> BTreeSet<String> {
        self.objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap().to_string())
            .collect()
    }

    /// The controller's pod spec (Deployment or DaemonSet).
    fn pod(&self) -> &Value {
        let workload = self
            .objects
            .iter()
            .find(|o| o["kind"] == "Deployment" || o["kind"] == "DaemonSet")
            .expect("a workload");
        &workload["spec"]["template"]["spec"]
    }

    fn args(&self) -> Vec<String> {
        self.pod()["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    }

    /// Every `(namespace or "*", apiGroup, resource, verb)` the RBAC objects grant.
    fn grants(&self) -> BTreeSet<(String, String, String, String)> {
        let mut out = BTreeSet::new();
        for role in self
            .objects
            .iter()
            .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
        {
            let scope = role["metadata"]["namespace"].as_str().unwrap_or("*").to_string();
            let name = role["metadata"]["name"].as_str().unwrap();
            let bound = self.objects.iter().any(|b| {
                (b["kind"] == "ClusterRoleBinding" || b["kind"] == "RoleBinding")
                    && b["roleRef"]["name"] == name
                    && b["roleRef"]["kind"] == role["kind"]
                    && b["metadata"]["namespace"] == role["metadata"]["namespace"]
                    && b["subjects"][0]["name"] == FULLNAME
            });
            assert!(
                bound,
                "{} {name} is bound to the chart's ServiceAccount",
                role["kind"]
            );
            for rule in role["rules"].as_array().unwrap() {
                for group in rule["apiGroups"].as_array().unwrap() {
                    for res in rule["resources"].as_array().unwrap() {
                        for verb in rule["verbs"].as_array().unwrap() {
                            out.insert((
                                scope.clone(),
                                group.as_str().unwrap().to_string(),
                                res.as_str().unwrap().to_string(),
                                verb.as_str().unwrap().to_string(),
                            ));
                        }
                    }
                }
            }
        }
        out
    }

    /// The scopes (`*` = cluster-wide) in which `resource` may be listed.
    fn list_scopes(&self, resource: &str) -> BTreeSet<String> {
        self.grants()
            .into_iter()
            .filter(|(_, _, r, v)| r == resource && v == "list")
            .map(|(s, ..)| s)
            .collect()
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn helm_lint_strict_passes_for_the_defaults_and_every_option_family() {
    for (name, values) in families() {
        let mut cmd = Command::new(helm());
        cmd.args(["lint", "--strict", "--namespace", NAMESPACE])
            .arg(chart());
        if let Some(v) = &values {
            cmd.arg("-f").arg(v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "helm lint --strict ({name}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn container_args_are_flags_the_gantry_binary_accepts() {
    for (name, values) in families() {
        let r = render(values.as_deref(), &[]);
        let mut argv = vec!["gantry".to_string()];
        argv.extend(r.args());
        let parsed = gantry::cli::Args::try_parse_from(&argv);
        let args = match parsed {
            Ok(args) => args,
            Err(e) => panic!("{name}: {argv:?}: {e}"),
        };
        // Parsed is not enough: the settings must pass the same check the binary makes before
        // it starts.
        if let Err(e) = args.proxy_config() {
            panic!("{name}: {argv:?}: gantry would refuse to start: {e}");
        }
    }
    // A negative control: flags that parse but that the binary refuses are caught here.
    let r = render(None, &["controller.extraArgs={--idle-timeout=0s}"]);
    let mut argv = vec!["gantry".to_string()];
    argv.extend(r.args());
    let args = gantry::cli::Args::try_parse_from(&argv).expect("--idle-timeout=0s parses");
    assert!(args.proxy_config().is_err(), "{argv:?}");
}

#[test]
fn default_values_render_an_ingress_in_front_of_the_cluster() {
    let r = render(None, &[]);
    assert_eq!(
        r.kinds(),
        set(&[
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "IngressClass",
            "PodDisruptionBudget",
            "ProxyConfig",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ])
    );
    let deploy = r.one("Deployment");
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(deploy["metadata"]["namespace"], NAMESPACE);

    // Traffic: a LoadBalancer, 80/443 to the named container ports 8080/8443.
    let svc = r.named("Service", FULLNAME);
    assert_eq!(svc["spec"]["type"], "LoadBalancer");
    let ports: Vec<(i64, &str)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["port"].as_i64().unwrap(), p["targetPort"].as_str().unwrap()))
        .collect();
    assert_eq!(ports, [(80, "http"), (443, "https")]);
    let pod = r.pod();
    let container = &pod["containers"][0];
    let cports: Vec<(&str, i64)> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["containerPort"].as_i64().unwrap()))
        .collect();
    assert_eq!(cports, [("http", 8080), ("https", 8443), ("admin", 10254)]);

    // The IngressClass points at the chart's ProxyConfig.
    let class = r.one("IngressClass");
    assert_eq!(class["metadata"]["name"], "gantry");
    assert_eq!(class["spec"]["controller"], "gantry.dev/ingress-controller");
    assert_eq!(
        class["spec"]["parameters"],
        serde_json::json!({"apiGroup": "gantry.dev", "kind": "ProxyConfig", "name": FULLNAME, "scope": "Cluster"})
    );
    assert!(
        class["metadata"]["annotations"].is_null(),
        "not the default class unless asked"
    );
    assert_eq!(r.one("ProxyConfig")["metadata"]["name"], FULLNAME);

    // Flags: the class, the published Service, the election in the release namespace.
    let args = r.args();
    for want in [
        "--ingress-class=gantry",
        "--publish-service=ingress/gantry",
        "--election-namespace=ingress",
        "--election-id=gantry-leader",
        "--admin-addr=0.0.0.0:10254",
        "--shutdown-grace=30s",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
    }
    assert!(!args.iter().any(|a| a.starts_with("--watch-namespace")));

    // Security: non-root, read-only root, no capabilities, RuntimeDefault seccomp.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    // The token: not for every pod of the ServiceAccount, only for the controller's.
    assert_eq!(r.one("ServiceAccount")["automountServiceAccountToken"], false);
    assert_eq!(pod["automountServiceAccountToken"], true);

    // Probes on the admin port; the drain: preStop sleep, then SIGTERM and --shutdown-grace, all
    // inside the termination grace period.
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "admin");
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert_eq!((pre_stop, grace), (5, 40));
    assert!(grace > pre_stop + 30);

    let pdb = r.one("PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        r.one("Deployment")["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn rbac_is_least_privilege_with_secrets_cluster_wide_only_without_watch_namespaces() {
    let r = render(None, &[]);
    let grants = r.grants();
    let g = |scope: &str, group: &str, res: &str, verb: &str| {
        (
            scope.to_string(),
            group.to_string(),
            res.to_string(),
            verb.to_string(),
        )
    };
    let want: BTreeSet<_> = [
        g("*", "networking.k8s.io", "ingressclasses", "list"),
        g("*", "networking.k8s.io", "ingressclasses", "watch"),
        g("*", "gantry.dev", "proxyconfigs", "list"),
        g("*", "gantry.dev", "proxyconfigs", "watch"),
        g("*", "networking.k8s.io", "ingresses", "list"),
        g("*", "networking.k8s.io", "ingresses", "watch"),
        g("*", "networking.k8s.io", "ingresses/status", "update"),
        g("*", "networking.k8s.io", "ingresses/status", "patch"),
        g("*", "", "services", "list"),
        g("*", "", "services", "watch"),
        g("*", "discovery.k8s.io", "endpointslices", "list"),
        g("*", "discovery.k8s.io", "endpointslices", "watch"),
        g("*", "", "secrets", "list"),
        g("*", "", "secrets", "watch"),
        // Only the ConfigMaps annotations name (custom-headers) are read, each watched by name.
        g("*", "", "configmaps", "list"),
        g("*", "", "configmaps", "watch"),
        g("*", "events.k8s.io", "events", "create"),
        g("*", "events.k8s.io", "events", "patch"),
        // The Gateway API (gatewayAPI.enabled, the default).
        g("*", "gateway.networking.k8s.io", "gatewayclasses", "list"),
        g("*", "gateway.networking.k8s.io", "gatewayclasses", "watch"),
        g(
            "*",
            "gateway.networking.k8s.io",
            "gatewayclasses/status",
            "update",
        ),
        g("*", "gateway.networking.k8s.io", "gatewayclasses/status", "patch"),
        g("*", "", "namespaces", "list"),
        g("*", "", "namespaces", "watch"),
        g("*", "gateway.networking.k8s.io", "gateways", "list"),
        g("*", "gateway.networking.k8s.io", "gateways", "watch"),
        g("*", "gateway.networking.k8s.io", "httproutes", "list"),
        g("*", "gateway.networking.k8s.io", "httproutes", "watch"),
        g("*", "gateway.networking.k8s.io", "grpcroutes", "list"),
        g("*", "gateway.networking.k8s.io", "grpcroutes", "watch"),
        g("*", "gateway.networking.k8s.io", "referencegrants", "list"),
        g("*", "gateway.networking.k8s.io", "referencegrants", "watch"),
        g("*", "gateway.networking.k8s.io", "backendtlspolicies", "list"),
        g("*", "gateway.networking.k8s.io", "backendtlspolicies", "watch"),
        g("*", "gateway.networking.k8s.io", "gateways/status", "update"),
        g("*", "gateway.networking.k8s.io", "gateways/status", "patch"),
        g("*", "gateway.networking.k8s.io", "httproutes/status", "update"),
        g("*", "gateway.networking.k8s.io", "httproutes/status", "patch"),
        g("*", "gateway.networking.k8s.io", "grpcroutes/status", "update"),
        g("*", "gateway.networking.k8s.io", "grpcroutes/status", "patch"),
        g(
            "*",
            "gateway.networking.k8s.io",
            "backendtlspolicies/status",
            "update",
        ),
        g(
            "*",
            "gateway.networking.k8s.io",
            "backendtlspolicies/status",
            "patch",
        ),
        g(NAMESPACE, "coordination.k8s.io", "leases", "create"),
        g(NAMESPACE, "coordination.k8s.io", "leases", "get"),
        g(NAMESPACE, "coordination.k8s.io", "leases", "update"),
    ]
    .into_iter()
    .collect();
    assert_eq!(grants, want, "exactly what cluster mode uses, nothing more");
    let lease_role = r.named("Role", "gantry-leader");
    assert_eq!(
        lease_role["rules"][1]["resourceNames"],
        serde_json::json!(["gantry-leader"])
    );

    let r = render(family("watch-namespaces").as_deref(), &[]);
    for resource in ["secrets", "configmaps", "ingresses", "endpointslices"] {
        assert_eq!(r.list_scopes(resource), set(&["team-a", "team-b"]), "{resource}");
    }
    // The published Service lives in the release namespace, which is not watched: its own Role.
    assert_eq!(r.list_scopes("services"), set(&[NAMESPACE, "team-a", "team-b"]));
    assert!(
        !r.grants()
            .iter()
            .any(|(scope, _, res, _)| scope == "*" && (res == "secrets" || res == "configmaps")),
        "no cluster-wide Secret or ConfigMap access with watchNamespaces"
    );
    assert_eq!(r.list_scopes("ingressclasses"), set(&["*"]));
    assert!(r.list_scopes("nodes").is_empty());
    // Events where the objects are, and in `default` for the cluster-scoped ones.
    for verb in ["create", "patch"] {
        let scopes: BTreeSet<String> = r
            .grants()
            .into_iter()
            .filter(|(_, group, res, v)| group == "events.k8s.io" && res == "events" && v == verb)
            .map(|(s, ..)| s)
            .collect();
        assert_eq!(scopes, set(&["default", "team-a", "team-b"]), "{verb}");
    }
    let args = r.args();
    assert!(args.contains(&"--watch-namespace=team-a".to_string()));
    assert!(args.contains(&"--watch-namespace=team-b".to_string()));
    assert!(args.contains(&"--default-ssl-certificate=team-a/default-cert".to_string()));
}

#[test]
fn nodes_are_readable_only_in_node_port_mode_or_when_a_node_port_service_is_published() {
    let cases: Vec<(&str, Option<PathBuf>, bool)> = vec![
        ("defaults (LoadBalancer, endpoints mode)", None, false),
        ("node-port backend mode", family("node-port-mode"), true),
        ("NodePort Service published into status", family("nodeport"), true),
        (
            "DaemonSet with host ports, fixed status address",
            family("daemonset-hostports"),
            false,
        ),
    ];
    for (what, values, nodes) in cases {
        let r = render(values.as_deref(), &[]);
        let scopes = r.list_scopes("nodes");
        assert_eq!(!scopes.is_empty(), nodes, "{what}");
        if nodes {
            assert_eq!(scopes, set(&["*"]), "{what}");
        }
    }
    let r = render(family("node-port-mode").as_deref(), &[]);
    assert!(r.args().contains(&"--backend-mode=node-port".to_string()));
    // The chart's ProxyConfig asking for NodePort turns the flag (and so the Node watch) on too.
    let r = render(None, &["proxyConfig.spec.backendMode=NodePort"]);
    assert!(r.args().contains(&"--backend-mode=node-port".to_string()));
    assert_eq!(r.list_scopes("nodes"), set(&["*"]));
}

#[test]
fn daemonset_options_render_host_network_or_host_ports() {
    let r = render(family("daemonset-hostports").as_deref(), &[]);
    assert!(r.all("Deployment").is_empty());
    let ds = r.one("DaemonSet");
    assert_eq!(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1);
    let ports = &r.pod()["containers"][0]["ports"];
    assert_eq!(
        (ports[0]["containerPort"].as_i64(), ports[0]["hostPort"].as_i64()),
        (Some(8080), Some(80))
    );
    assert_eq!(
        (ports[1]["containerPort"].as_i64(), ports[1]["hostPort"].as_i64()),
        (Some(8443), Some(443))
    );
    assert!(r.pod()["hostNetwork"].is_null());
    assert_eq!(r.named("Service", FULLNAME)["spec"]["type"], "ClusterIP");
    let args = r.args();
    assert!(args.contains(&"--publish-status-address=203.0.113.10".to_string()));
    assert!(!args.iter().any(|a| a.starts_with("--publish-service")));
    assert_eq!(r.one("PodDisruptionBudget")["spec"]["maxUnavailable"], 1);

    let r = render(family("daemonset-hostnetwork").as_deref(), &[]);
    assert_eq!(r.pod()["hostNetwork"], true);
    assert_eq!(r.pod()["dnsPolicy"], "ClusterFirstWithHostNet");
    assert!(r.pod()["containers"][0]["ports"][0]["hostPort"].is_null());
    assert_eq!(
        r.pod()["tolerations"][0]["key"],
        "node-role.kubernetes.io/control-plane"
    );

    let err = template_raw(None, &["hostNetwork=true", "hostPorts.enabled=true"]).unwrap_err();
    assert!(err.contains("exclude each other"), "{err}");
}

#[test]
fn node_port_service_keeps_fixed_ports_annotations_and_traffic_policy() {
    let r = render(family("nodeport").as_deref(), &[]);
    let svc = r.named("Service", FULLNAME);
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Local");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);
    assert_eq!(svc["spec"]["ports"][1]["nodePort"], 30443);
    assert_eq!(svc["metadata"]["annotations"]["example.com/owner"], "platform");
    assert!(r.args().contains(&"--publish-service=ingress/gantry".to_string()));
}

#[test]
fn optional_objects_render_only_when_enabled() {
    let defaults = render(None, &[]);
    for kind in [
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "NetworkPolicy",
        "PrometheusRule",
    ] {
        assert!(defaults.all(kind).is_empty(), "{kind} is off by default");
    }
    assert!(
        defaults.all("ConfigMap").is_empty(),
        "the dashboard ConfigMap is off by default"
    );

    // The dashboard and the rules are the chart's files, verbatim.
    let r = render(family("observability").as_deref(), &[]);
    let dashboard = r.named("ConfigMap", "gantry-dashboard");
    assert_eq!(dashboard["metadata"]["namespace"], "monitoring");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json = dashboard["data"]["gantry.json"].as_str().unwrap();
    let file = std::fs::read_to_string(chart().join("dashboards/gantry.json")).unwrap();
    assert_eq!(json.trim_end(), file.trim_end());
    assert!(serde_json::from_str::<Value>(json).unwrap()["panels"].is_array());
    let rule = r.one("PrometheusRule");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let file: Value =
        serde_norway::from_str(&std::fs::read_to_string(chart().join("rules/gantry-rules.yaml")).unwrap())
            .unwrap();
    assert_eq!(
        rule["spec"], file,
        "the PrometheusRule's spec is rules/gantry-rules.yaml"
    );
    let alerts: Vec<&str> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    assert_eq!(
        alerts,
        [
            "GantryHighErrorRatio",
            "GantryCertificateExpiringSoon",
            "GantryConfigurationNotApplied",
            "GantryBackendWithoutEndpoints"
        ]
    );
    assert_eq!(
        r.one("ServiceMonitor")["spec"]["endpoints"][0]["honorLabels"],
        true
    );

    let r = render(family("servicemonitor").as_deref(), &[]);
    let sm = r.one("ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["namespace"], "monitoring");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "admin");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"],
        serde_json::json!([NAMESPACE])
    );
    let metrics = r.named("Service", "gantry-metrics");
    assert_eq!(metrics["spec"]["ports"][0]["port"], 10254);
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &metrics["metadata"]["labels"][k], v,
            "the ServiceMonitor selects the metrics Service"
        );
    }
    assert_ne!(
        r.named("Service", FULLNAME)["metadata"]["labels"]["app.kubernetes.io/role"],
        "metrics",
        "and not the traffic Service"
    );

    let r = render(family("hpa").as_deref(), &[]);
    let hpa = r.one("HorizontalPodAutoscaler");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    assert_eq!(hpa["spec"]["maxReplicas"], 12);
    assert_eq!(hpa["spec"]["metrics"].as_array().unwrap().len(), 2);
    assert!(
        r.one("Deployment")["spec"]["replicas"].is_null(),
        "the HPA owns replicas"
    );

    let r = render(family("networkpolicy").as_deref(), &[]);
    let np = r.one("NetworkPolicy");
    assert_eq!(np["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
    let rules = np["spec"]["ingress"].as_array().unwrap();
    assert!(rules[0]["from"].is_null(), "traffic ports from anywhere");
    assert_eq!(rules[1]["ports"][0]["port"], "admin");
    assert_eq!(
        rules[1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
}

#[test]
fn scheduling_values_and_the_proxy_config_spec_reach_the_objects() {
    let r = render(family("scheduling").as_deref(), &[]);
    let pod = r.pod();
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["tolerations"][0]["value"], "ingress");
    assert!(pod["affinity"]["nodeAffinity"].is_object());
    let spread = &pod["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(
        spread["labelSelector"]["matchLabels"],
        r.one("Deployment")["spec"]["selector"]["matchLabels"],
        "spread over the chart's own pods"
    );
    assert_eq!(pod["containers"][0]["resources"]["limits"]["memory"], "512Mi");
    assert_eq!(pod["terminationGracePeriodSeconds"], 75);
    assert_eq!(
        pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"],
        10
    );
    assert!(r.args().contains(&"--shutdown-grace=60s".to_string()));
    assert!(r.args().contains(&"--idle-timeout=120s".to_string()));
    let class = r.one("IngressClass");
    assert_eq!(
        class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"],
        "true"
    );
    let spec = &r.one("ProxyConfig")["spec"];
    assert_eq!(spec["upstreamResponseTimeout"], "120s");
    assert_eq!(spec["tlsMinVersion"], "1.3");
    assert_eq!(spec["hsts"]["includeSubDomains"], true);
}

#[test]
fn wrong_values_fail_at_template_time() {
    let cases: &[(&[&str], &str)] = &[
        (&["kind=StatefulSet"], "kind"),
        (&["service.type=External"], "type"),
        (&["controller.backendMode=nodeport"], "backendMode"),
        (&["replicaCount=two"], "replicaCount"),
        (
            &["controller.watchNamespaces[0]=Not_A_Namespace"],
            "watchNamespaces",
        ),
        (
            &["controller.defaultSslCertificate=just-a-name"],
            "defaultSslCertificate",
        ),
        (&["controller.ports.http=70000"], "http"),
        (&["controller.extraArgs[0]=no-dashes"], "extraArgs"),
        (&["controler.backendMode=endpoints"], "controler"),
        (&["service.nodePorts.http=80"], "http"),
        (&["image.digest=latest"], "digest"),
    ];
    for (set, mention) in cases {
        let err = template_raw(None, set).expect_err(&format!("{set:?} must be refused"));
        assert!(
            err.contains("values don't meet the specifications of the schema"),
            "{set:?}: {err}"
        );
        assert!(err.contains(mention), "{set:?}: the error names {mention}: {err}");
    }
    // Not a schema matter but a relation between values: the grace period must cover the drain.
    let err = template_raw(None, &["controller.terminationGracePeriodSeconds=30"]).unwrap_err();
    assert!(
        err.contains("must be larger than preStopSleepSeconds + shutdownGraceSeconds"),
        "{err}"
    );
    assert!(template_raw(None, &["controller.terminationGracePeriodSeconds=36"]).is_ok());
}

#[test]
fn the_chart_documents_every_value_and_runs_the_image_ci_builds() {
    let r = render(None, &[]);
    let image = r.pod()["containers"][0]["image"].as_str().unwrap().to_string();
    let chart_yaml = std::fs::read_to_string(chart().join("Chart.yaml")).unwrap();
    let app_version = chart_yaml
        .lines()
        .find_map(|l| l.strip_prefix("appVersion: "))
        .unwrap()
        .trim_matches('"');
    assert_eq!(image, format!("ghcr.io/gantry-dev/gantry:{app_version}"));
    assert_eq!(
        app_version,
        env!("CARGO_PKG_VERSION"),
        "the image runs this crate's version"
    );
    // CI builds the image with controller/build-image.sh, which tags it with the chart's
    // image.repository and appVersion (and checks its user, entrypoint and binary): the name
    // asserted here is the image CI built.
    let dockerfile = std::fs::read_to_string(repo().join("controller/Dockerfile")).unwrap();
    assert!(dockerfile.contains("USER 65532:65532"));

    // Every top-level value is in the README's table.
    let readme = std::fs::read_to_string(chart().join("README.md")).unwrap();
    let values: Value =
        serde_norway::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap()).unwrap();
    for key in values.as_object().unwrap().keys() {
        assert!(readme.contains(&format!("`{key}")), "README.md documents {key}");
    }
}

/// `kubectl apply --dry-run=server` of every family's rendering against a real API server, after the
/// chart's CRDs (and a stand-in for the Prometheus Operator's ServiceMonitor CRD) are installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendered_manifest_is_accepted_by_the_api_server() {
    let env = gantry_testkit::TestEnv::start_async().await.expect("envtest");
    let kubectl = |args: &[&str], stdin: Option<&str>| -> (bool, String) {
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
        (out.status.success(), text)
    };

    // CRDs first: the chart's own (what `helm install` applies from crds/), and the stand-in.
    let crds = [
        chart().join("crds/gantry.dev_proxyconfigs.yaml"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/servicemonitor-crd.yaml"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/prometheusrule-crd.yaml"),
    ];
    for crd in &crds {
        let (ok, out) = kubectl(&["apply", "-f", crd.to_str().unwrap()], None);
        assert!(ok, "{out}");
    }
    // The Gateway API's, for the optional GatewayClass.
    env.install_gateway_api_crds().expect("Gateway API CRDs");
    let (ok, out) = kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/proxyconfigs.gantry.dev",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
        ],
        None,
    );
    assert!(ok, "{out}");
    for ns in [NAMESPACE, "team-a", "team-b", "monitoring"] {
        let (ok, out) = kubectl(&["create", "namespace", ns], None);
        assert!(ok, "{out}");
    }

    for (name, values) in families() {
        let r = render(values.as_deref(), &[]);
        let (ok, out) = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&r.text));
        assert!(ok, "{name}: the API server refused the rendering:\n{out}");
        // Every object was seen by the server, none skipped.
        let applied = out.lines().filter(|l| l.contains("(server dry run)")).count();
        assert_eq!(applied, r.objects.len(), "{name}:\n{out}");
    }

    // The ProxyConfig's schema is the one the chart installs: a bad value from values.yaml is
    // refused by the API server (helm's own schema leaves the spec to the CRD).
    for (bad, why) in [
        (
            "proxyConfig.spec.upstreamResponseTimeout=0s",
            "must be greater than zero",
        ),
        (
            "proxyConfig.spec.upstreamResponseTimeout=soon",
            "spec.upstreamResponseTimeout",
        ),
        ("proxyConfig.spec.balancer=Random", "spec.balancer"),
        ("proxyConfig.spec.maxHeaderBytes=100", "spec.maxHeaderBytes"),
    ] {
        let r = render(None, &[bad]);
        let (ok, out) = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&r.text));
        assert!(!ok, "{bad} must be refused:\n{out}");
        assert!(out.contains(why), "{bad}: {out}");
    }
    // NOTES.txt, as `helm install` prints it (helm needs a reachable cluster even for a dry run).
    let out = Command::new(helm())
        .args([
            "install",
            RELEASE,
            "--dry-run=client",
            "--namespace",
            NAMESPACE,
            "--kubeconfig",
        ])
        .arg(env.kubeconfig_path())
        .arg(chart())
        .output()
        .unwrap();
    let notes = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(notes.contains("ingressClassName: gantry"), "{notes}");
    assert!(notes.contains("kubectl edit proxyconfig gantry"), "{notes}");
    assert!(notes.contains("get service gantry"), "{notes}");
}
