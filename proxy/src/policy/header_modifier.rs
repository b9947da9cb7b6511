//! The Gateway API's `RequestHeaderModifier` and `ResponseHeaderModifier` filters: set, add and
//! remove headers by name. Names and values are validated by the controller into `http` types; the
//! data path copies them, it never parses them.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Header changes, applied in the Gateway API's order: set (replace every value), then add (append
/// a value), then remove.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderModifier {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderModifier {
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }

    /// `set a=1, add b=2, remove c`.
    pub fn describe(&self) -> String {
        let value = |v: &HeaderValue| v.to_str().unwrap_or("?").to_owned();
        let parts: Vec<String> = self
            .set
            .iter()
            .map(|(n, v)| format!("set {n}={}", value(v)))
            .chain(self.add.iter().map(|(n, v)| format!("add {n}={}", value(v))))
            .chain(self.remove.iter().map(|n| format!("remove {n}")))
            .collect();
        parts.join(", ")
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_add_appends_remove_removes() {
        let m = HeaderModifier {
            set: vec![(HeaderName::from_static("x-set"), HeaderValue::from_static("new"))],
            add: vec![(HeaderName::from_static("x-add"), HeaderValue::from_static("two"))],
            remove: vec![HeaderName::from_static("x-gone")],
        };
        let mut h = HeaderMap::new();
        h.append("x-set", HeaderValue::from_static("old1"));
        h.append("x-set", HeaderValue::from_static("old2"));
        h.insert("x-add", HeaderValue::from_static("one"));
        h.insert("x-gone", HeaderValue::from_static("bye"));
        m.apply(&mut h);
        assert_eq!(h.get_all("x-set").iter().collect::<Vec<_>>(), ["new"]);
        assert_eq!(h.get_all("x-add").iter().collect::<Vec<_>>(), ["one", "two"]);
        assert!(!h.contains_key("x-gone"));
        assert_eq!(m.describe(), "set x-set=new, add x-add=two, remove x-gone");
    }
}
