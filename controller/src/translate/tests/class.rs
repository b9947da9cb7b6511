//! Class selection: which Ingresses are ours.

use super::fixtures::*;
use crate::{
    store::{Object, ObjectKey},
    translate::{served_ingresses, ANNOTATION_INGRESS_CLASS},
};

const OTHER_CONTROLLER: &str = "k8s.io/ingress-nginx";

#[test]
fn class_selection_follows_class_name_ingress_class_default_class_and_legacy_annotation() {
    let ours = || ingress_class("internal").controller(CONTROLLER);
    let nginx = || ingress_class("nginx").controller(OTHER_CONTROLLER);
    let cases: Vec<(&str, Vec<Object>, IngressBuilder, bool)> = vec![
        (
            "ingressClassName equals our class name",
            objects![],
            ingress("i"),
            true,
        ),
        (
            "ingressClassName equals our class name even without an IngressClass object",
            objects![nginx()],
            ingress("i").class(CLASS),
            true,
        ),
        (
            "ingressClassName names an IngressClass of ours",
            objects![ours()],
            ingress("i").class("internal"),
            true,
        ),
        (
            "ingressClassName names another controller's class",
            objects![nginx()],
            ingress("i").class("nginx"),
            false,
        ),
        (
            "ingressClassName names a class that does not exist",
            objects![ours()],
            ingress("i").class("some-invalid-class-name"),
            false,
        ),
        (
            "no class and our IngressClass is the default",
            objects![ours().default_class()],
            ingress("i").no_class(),
            true,
        ),
        (
            "no class and our IngressClass is not the default",
            objects![ours()],
            ingress("i").no_class(),
            false,
        ),
        (
            "no class and another controller's class is the default",
            objects![ours(), nginx().default_class()],
            ingress("i").no_class(),
            false,
        ),
        (
            "no class and the legacy annotation names our class",
            objects![],
            ingress("i")
                .no_class()
                .annotation(ANNOTATION_INGRESS_CLASS, CLASS),
            true,
        ),
        (
            "no class and the legacy annotation names an IngressClass of ours",
            objects![ours()],
            ingress("i")
                .no_class()
                .annotation(ANNOTATION_INGRESS_CLASS, "internal"),
            true,
        ),
        (
            "the legacy annotation naming another class wins over our default class",
            objects![ours().default_class()],
            ingress("i")
                .no_class()
                .annotation(ANNOTATION_INGRESS_CLASS, "nginx"),
            false,
        ),
        (
            "ingressClassName wins over the legacy annotation",
            objects![nginx()],
            ingress("i")
                .class("nginx")
                .annotation(ANNOTATION_INGRESS_CLASS, CLASS),
            false,
        ),
        (
            "an empty ingressClassName counts as none",
            objects![ours().default_class()],
            ingress("i").class(""),
            true,
        ),
    ];
    for (case, mut objects, ing, want) in cases {
        objects.push(ing.host("a.example").prefix("/", "svc", 80).into());
        let store = store(objects.clone());
        let served = served_ingresses(&store, &opts());
        assert_eq!(
            served == [ObjectKey::new("default", "i")],
            want,
            "{case}: served {served:?}"
        );
        let snapshot = build(objects);
        assert_eq!(
            routed(&snapshot, "a.example", "/").is_some(),
            want,
            "{case}: routing"
        );
        assert!(
            want || snapshot.diagnostics.is_empty(),
            "{case}: other classes are ignored without diagnostics: {:?}",
            snapshot.diagnostics
        );
    }
}

#[test]
fn served_ingresses_are_listed_oldest_first() {
    let listed = store(objects![
        ingress("b"),
        ingress("new").created("2024-03-01T00:00:00Z"),
        ingress("old").created("2023-01-01T00:00:00Z"),
        ingress("a").ns("z"),
        ingress("other").class("nginx"),
    ]);
    let served: Vec<String> = served_ingresses(&listed, &opts())
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(served, ["default/old", "default/new", "default/b", "z/a"]);

    // Created in the same second (a bulk apply): by namespace, then name, whatever the order in
    // which they came.
    let same = "2024-01-01T00:00:00Z";
    let bulk = store(objects![
        ingress("c").ns("y").created(same),
        ingress("late").created("2024-01-01T00:00:01Z"),
        ingress("a").ns("y").created(same),
        ingress("b").ns("x").created(same),
        ingress("none"),
    ]);
    let served: Vec<String> = served_ingresses(&bulk, &opts())
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(served, ["x/b", "y/a", "y/c", "default/late", "default/none"]);
}
