//! Decoding each object of a list or watch on its own.
//!
//! kube-runtime's watcher decodes a whole list page into `ObjectList<K>`: one object that does not
//! fit `K` fails the page, and with it every object of the kind. The Gateway API types are
//! generated with closed enumerations, so an object written against a newer Gateway API release
//! (a new filter type, a new path match type) would do exactly that. [`Lenient<K>`] decodes every
//! item separately: an item that does not fit keeps its metadata and the decoding error, and the
//! watcher turns it into a diagnostic on that one object (`InvalidObject`) while the others are
//! served.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{de::DeserializeOwned, Deserialize, Deserializer};

/// An object of kind `K`, or the metadata of one that could not be decoded as `K`.
// Not boxed: a `Lenient` only travels from the decoder to the store, where it is unpacked at once
// (as `store::Object` does).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Lenient<K> {
    Valid(K),
    Invalid { metadata: ObjectMeta, error: String },
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Anything JSON is accepted here; only the conversion to `K` may fail.
        let value = serde_json::Value::deserialize(d)?;
        Ok(match K::deserialize(&value) {
            Ok(k) => Lenient::Valid(k),
            Err(e) => Lenient::Invalid {
                metadata: value
                    .get("metadata")
                    .and_then(|m| ObjectMeta::deserialize(m).ok())
                    .unwrap_or_default(),
                error: e.to_string(),
            },
        })
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Lenient<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match self {
            Lenient::Valid(k) => k.meta(),
            Lenient::Invalid { metadata, .. } => metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Lenient::Valid(k) => k.meta_mut(),
            Lenient::Invalid { metadata, .. } => metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::api::HttpRoute;

    #[test]
    fn one_object_from_a_newer_release_does_not_fail_the_list() {
        let list = serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRouteList",
            "metadata": {"resourceVersion": "7"},
            "items": [
                {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                 "metadata": {"name": "good", "namespace": "a"},
                 "spec": {"rules": [{"filters": [{"type": "RequestHeaderModifier",
                          "requestHeaderModifier": {"set": [{"name": "x", "value": "1"}]}}]}]}},
                {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                 "metadata": {"name": "from-the-future", "namespace": "a"},
                 "spec": {"rules": [{"filters": [{"type": "Teleport"}]}]}}
            ]
        });
        let list: kube::core::ObjectList<Lenient<HttpRoute>> =
            serde_json::from_value(list).expect("the list decodes");
        assert!(matches!(&list.items[0], Lenient::Valid(r) if r.metadata.name.as_deref() == Some("good")));
        match &list.items[1] {
            Lenient::Invalid { metadata, error } => {
                assert_eq!(metadata.name.as_deref(), Some("from-the-future"));
                assert!(error.contains("Teleport"), "{error}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        assert_eq!(Lenient::<HttpRoute>::kind(&()), "HTTPRoute");
        assert_eq!(Lenient::<HttpRoute>::plural(&()), "httproutes");
    }
}
