//! What the annotations of an Ingress refer to: the Secrets and ConfigMaps a [`parse`] of them
//! reads (`auth-secret`, `custom-headers`, ...).
//!
//! Cluster mode watches exactly these objects, one by one (`sources::kube`): Gantry does not list
//! every Secret and ConfigMap of the cluster to find the few its Ingresses name.
//!
//! The list is not a second copy of the parsers' resolution rules (which name forms they take, the
//! default namespace, which cross-namespace references they allow): it is what [`parse`] itself
//! asks its [`References`] for when every object is missing, so it always follows the parsers. A
//! parser must therefore ask for every object it may read whether or not an earlier one was
//! found; the tests check that the list is the same when every object is present.

use std::{cell::RefCell, collections::BTreeMap};

use k8s_openapi::api::{
    core::v1::{ConfigMap, Secret},
    networking::v1::Ingress,
};

use super::{parse, References, PREFIX};
use crate::store::{Kind, ObjectKey, DEFAULT_NAMESPACE};

/// The Secrets and ConfigMaps the annotations of `ingress` refer to, sorted and without
/// duplicates: those a [`parse`] of its annotations would read. An Ingress without a namespace is
/// taken to be in `default`, as the store keys it.
pub fn references(ingress: &Ingress) -> Vec<(Kind, ObjectKey)> {
    let mut key = ObjectKey::of(&ingress.metadata);
    if key.namespace.is_empty() {
        key.namespace = DEFAULT_NAMESPACE.to_string();
    }
    references_of(&key, ingress.metadata.annotations.as_ref())
}

/// [`references`] of the Ingress `ingress` (its store key) with these annotations.
pub fn references_of(
    ingress: &ObjectKey,
    annotations: Option<&BTreeMap<String, String>>,
) -> Vec<(Kind, ObjectKey)> {
    if !annotations
        .into_iter()
        .flatten()
        .any(|(k, _)| k.starts_with(PREFIX))
    {
        return Vec::new();
    }
    let recorder = Recorder::default();
    parse(ingress, annotations, &recorder);
    recorder.into_sorted()
}

/// A [`References`] that holds nothing (or, in tests, an empty object of every name) and writes
/// down what it was asked for.
#[derive(Default)]
struct Recorder {
    asked: RefCell<Vec<(Kind, ObjectKey)>>,
    /// Answer every lookup with an empty object instead of none (tests only).
    #[cfg(test)]
    present: Option<(Secret, ConfigMap)>,
}

impl Recorder {
    fn into_sorted(self) -> Vec<(Kind, ObjectKey)> {
        let mut asked = self.asked.into_inner();
        asked.sort();
        asked.dedup();
        asked
    }

    fn ask(&self, kind: Kind, namespace: &str, name: &str) {
        self.asked
            .borrow_mut()
            .push((kind, ObjectKey::new(namespace, name)));
    }
}

impl References for Recorder {
    fn secret(&self, namespace: &str, name: &str) -> Option<&Secret> {
        self.ask(Kind::Secret, namespace, name);
        #[cfg(test)]
        if let Some((secret, _)) = &self.present {
            return Some(secret);
        }
        None
    }

    fn config_map(&self, namespace: &str, name: &str) -> Option<&ConfigMap> {
        self.ask(Kind::ConfigMap, namespace, name);
        #[cfg(test)]
        if let Some((_, config_map)) = &self.present {
            return Some(config_map);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    /// An Ingress `ns/web` (no namespace when `ns` is empty) with these annotations (names without
    /// the prefix).
    fn ingress(ns: &str, pairs: &[(&str, &str)]) -> Ingress {
        Ingress {
            metadata: ObjectMeta {
                namespace: (!ns.is_empty()).then(|| ns.to_string()),
                name: Some("web".into()),
                annotations: Some(
                    pairs
                        .iter()
                        .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..Ingress::default()
        }
    }

    fn secret(ns: &str, name: &str) -> (Kind, ObjectKey) {
        (Kind::Secret, ObjectKey::new(ns, name))
    }

    fn config_map(ns: &str, name: &str) -> (Kind, ObjectKey) {
        (Kind::ConfigMap, ObjectKey::new(ns, name))
    }

    /// Annotations as `(name without prefix, value)`, and what they refer to.
    type Case = (Vec<(&'static str, &'static str)>, Vec<(Kind, ObjectKey)>);

    /// The cases for an Ingress in namespace `team`.
    fn cases() -> Vec<Case> {
        vec![
            (vec![], vec![]),
            (vec![("ssl-redirect", "false"), ("use-regex", "true")], vec![]),
            // auth-secret: a name, or namespace/name in the Ingress's own namespace.
            (
                vec![("auth-type", "basic"), ("auth-secret", "passwords")],
                vec![secret("team", "passwords")],
            ),
            (
                vec![("auth-type", "basic"), ("auth-secret", "team/passwords")],
                vec![secret("team", "passwords")],
            ),
            (
                vec![
                    ("auth-type", "basic"),
                    ("auth-secret", "passwords"),
                    ("auth-secret-type", "auth-map"),
                    ("auth-realm", "Staff only"),
                ],
                vec![secret("team", "passwords")],
            ),
            // Another namespace is refused (ingress-nginx's default), so it is not read.
            (
                vec![("auth-type", "basic"), ("auth-secret", "other/passwords")],
                vec![],
            ),
            // Not read when the parser stops before it: no auth-type, digest, a bad name or a bad
            // auth-secret-type.
            (vec![("auth-secret", "passwords")], vec![]),
            (
                vec![("auth-type", "digest"), ("auth-secret", "passwords")],
                vec![],
            ),
            (vec![("auth-type", "basic"), ("auth-secret", "a/b/c")], vec![]),
            (
                vec![("auth-type", "basic"), ("auth-secret", "Not_A_Name")],
                vec![],
            ),
            (
                vec![
                    ("auth-type", "basic"),
                    ("auth-secret", "passwords"),
                    ("auth-secret-type", "auth-bogus"),
                ],
                vec![],
            ),
            // custom-headers: a ConfigMap of the Ingress's namespace.
            (
                vec![("custom-headers", "headers")],
                vec![config_map("team", "headers")],
            ),
            (
                vec![("custom-headers", "team/headers")],
                vec![config_map("team", "headers")],
            ),
            (vec![("custom-headers", "other/headers")], vec![]),
            (vec![("custom-headers", "")], vec![]),
            // auth-proxy-set-headers: a ConfigMap of the Ingress's namespace, read with auth-url
            // (even an invalid one: every problem is reported at once), not without.
            (
                vec![
                    ("auth-url", "http://auth.team.svc/check"),
                    ("auth-proxy-set-headers", "auth-headers"),
                ],
                vec![config_map("team", "auth-headers")],
            ),
            (
                vec![
                    ("auth-url", "http://bad..host/check"),
                    ("auth-proxy-set-headers", "team/auth-headers"),
                ],
                vec![config_map("team", "auth-headers")],
            ),
            (vec![("auth-proxy-set-headers", "auth-headers")], vec![]),
            (
                vec![
                    ("auth-url", "http://auth.team.svc/check"),
                    ("auth-proxy-set-headers", "other/auth-headers"),
                ],
                vec![],
            ),
            // proxy-ssl-secret: namespace/name only, the Ingress's namespace, for an HTTPS backend.
            (
                vec![
                    ("backend-protocol", "HTTPS"),
                    ("proxy-ssl-secret", "team/backend-tls"),
                ],
                vec![secret("team", "backend-tls")],
            ),
            (
                vec![
                    ("backend-protocol", "HTTPS"),
                    ("proxy-ssl-secret", "other/backend-tls"),
                ],
                vec![],
            ),
            // Both, sorted by kind then key.
            (
                vec![
                    ("custom-headers", "headers"),
                    ("auth-type", "basic"),
                    ("auth-secret", "passwords"),
                ],
                vec![secret("team", "passwords"), config_map("team", "headers")],
            ),
        ]
    }

    #[test]
    fn references_follow_the_parsers_resolution_rules() {
        for (pairs, want) in cases() {
            assert_eq!(references(&ingress("team", &pairs)), want, "{pairs:?}");
        }
    }

    #[test]
    fn an_ingress_without_a_namespace_refers_to_objects_in_default() {
        let ing = ingress("", &[("auth-type", "basic"), ("auth-secret", "passwords")]);
        assert_eq!(references(&ing), [secret("default", "passwords")]);
        // Naming default explicitly is the Ingress's own namespace too.
        let ing = ingress("", &[("custom-headers", "default/headers")]);
        assert_eq!(references(&ing), [config_map("default", "headers")]);
    }

    #[test]
    fn other_annotations_and_an_ingress_without_any_refer_to_nothing() {
        let mut ing = ingress("team", &[]);
        ing.metadata.annotations = None;
        assert!(references(&ing).is_empty());
        let mut ing = ingress("team", &[]);
        ing.metadata.annotations = Some(BTreeMap::from([(
            "example.com/auth-secret".to_string(),
            "passwords".to_string(),
        )]));
        assert!(references(&ing).is_empty());
    }

    /// What the parsers ask for does not depend on what they find: the list made with every object
    /// missing is the list of every object they would read when all are there.
    #[test]
    fn the_parsers_ask_for_the_same_objects_whether_or_not_they_are_found() {
        for (pairs, want) in cases() {
            let ing = ingress("team", &pairs);
            let key = ObjectKey::new("team", "web");
            let recorder = Recorder {
                present: Some((Secret::default(), ConfigMap::default())),
                ..Recorder::default()
            };
            parse(&key, ing.metadata.annotations.as_ref(), &recorder);
            assert_eq!(recorder.into_sorted(), want, "{pairs:?}");
        }
    }

    /// What the store-backed parse reads is what `references` lists: with exactly those objects in
    /// the store, the Ingress does not fail closed for want of one.
    #[test]
    fn with_the_referenced_objects_present_nothing_is_missing() {
        use crate::{
            annotations::tests::{config_map as cm_object, opaque_secret, HTPASSWD_FOO_BAR},
            store::ObjectStore,
        };
        let ing = ingress(
            "team",
            &[
                ("auth-type", "basic"),
                ("auth-secret", "passwords"),
                ("custom-headers", "headers"),
            ],
        );
        let mut store = ObjectStore::new();
        for (kind, key) in references(&ing) {
            store.apply(match kind {
                Kind::Secret => opaque_secret(&key.namespace, &key.name, &[("auth", HTPASSWD_FOO_BAR)]),
                _ => cm_object(&key.namespace, &key.name, &[("X-Team", "team")]),
            });
        }
        let parsed = parse(
            &ObjectKey::new("team", "web"),
            ing.metadata.annotations.as_ref(),
            &store,
        );
        assert_eq!(parsed.fails_closed(), None, "{:#?}", parsed.reports);
        assert!(parsed.policies.basic_auth.is_some());
        assert!(parsed.policies.response_headers.is_some());
    }
}
