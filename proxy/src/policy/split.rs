//! Weighted backends and request mirroring: the Gateway API's `backendRefs` with `weight`, and the
//! `RequestMirror` filter.

use std::sync::Arc;

use crate::backend::Backend;

/// A route's backends with their weights (`backendRefs`). The route's own `backend` is the first
/// entry's; with a split, each request draws a backend in proportion to the weights. A backend of
/// weight 0 gets nothing. A backend that could not be resolved (`Backend::invalid`) keeps its share
/// and answers 500, as the Gateway API requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightedBackends {
    pub backends: Vec<(u32, Arc<Backend>)>,
}

impl WeightedBackends {
    /// The sum of the weights.
    pub fn total(&self) -> u64 {
        self.backends.iter().map(|(w, _)| u64::from(*w)).sum()
    }

    /// `split: ns/a:80 (1), ns/b:80 (3, invalid)`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .backends
            .iter()
            .map(|(w, b)| {
                let invalid = if b.invalid { ", invalid: 500" } else { "" };
                format!("{} ({w}{invalid})", b.id)
            })
            .collect();
        format!("weighted backends: {}", parts.join(", "))
    }

    /// The backend of a draw in `0..total()`; `None` when every weight is 0.
    pub fn pick(&self, mut draw: u64) -> Option<&Arc<Backend>> {
        for (w, b) in &self.backends {
            let w = u64::from(*w);
            if draw < w {
                return Some(b);
            }
            draw -= w;
        }
        None
    }
}

/// Copies of requests sent to other backends (`RequestMirror`): their responses are discarded and
/// their failures never reach the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    pub backend: Arc<Backend>,
    /// The share of requests mirrored, in parts per million (1_000_000 is every request).
    pub per_million: u32,
}

impl Mirror {
    /// `mirror to ns/a:80 (50%)`.
    pub fn describe(&self) -> String {
        let share = f64::from(self.per_million) / 10_000.0;
        format!("mirror to {} ({share}% of requests)", self.backend.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendId;

    fn backend(name: &str) -> Arc<Backend> {
        Arc::new(Backend::new(
            BackendId {
                namespace: "ns".into(),
                service: name.into(),
                port: "80".into(),
            },
            vec![],
        ))
    }

    #[test]
    fn draws_follow_the_weights() {
        let split = WeightedBackends {
            backends: vec![(1, backend("a")), (0, backend("zero")), (3, backend("b"))],
        };
        assert_eq!(split.total(), 4);
        assert_eq!(split.pick(0).unwrap().id.service.as_ref(), "a");
        for draw in 1..4 {
            assert_eq!(split.pick(draw).unwrap().id.service.as_ref(), "b");
        }
        assert!(split.pick(4).is_none());
    }
}
