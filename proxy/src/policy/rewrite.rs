//! `rewrite-target`: the path sent upstream, from the request path and a regex with captures.
//!
//! ingress-nginx writes `rewrite "(?i)<ingress path>" <target> break;`: the Ingress path is a
//! case-insensitive regex searched in the request path, and on a match the whole path is replaced
//! by the target with `$1`…`$9` substituted. The request's query string is kept: appended after the
//! target's own query with `&`, or dropped when the target ends with `?` (nginx's rules).
//!
//! Only numbered captures are substituted. The target is parsed once, by the controller, into
//! literal text and capture numbers; nothing else in it is interpreted.

use std::borrow::Cow;

use regex::Regex;

/// One compiled `rewrite-target`.
#[derive(Clone, Debug)]
pub struct Rewrite {
    regex: Regex,
    target: Vec<Piece>,
    /// The target as written, for display and comparison.
    source: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Capture(usize),
}

/// Why a `rewrite-target` cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RewriteError {
    #[error("the path is not a valid regular expression: {0}")]
    Regex(String),
    #[error("the target must be an absolute path starting with '/' (got {0:?})")]
    NotAbsolute(String),
    #[error("the target refers to ${0}, which is not a capture group of the path (it has {1})")]
    NoSuchCapture(usize, usize),
    #[error(
        "the target uses {0:?}: only $1 to $9 (capture groups) are substituted; nginx variables are not"
    )]
    Variable(String),
    #[error("the target contains a character not allowed in a URL: {0:?}")]
    BadCharacter(char),
}

impl PartialEq for Rewrite {
    fn eq(&self, other: &Self) -> bool {
        self.regex.as_str() == other.regex.as_str() && self.source == other.source
    }
}

impl Eq for Rewrite {}

impl Rewrite {
    /// Compiles the rewrite of a route whose (regex) path is `path` to `target`.
    pub fn new(path: &str, target: &str) -> Result<Self, RewriteError> {
        let regex = Regex::new(&format!("(?i){path}")).map_err(|e| RewriteError::Regex(e.to_string()))?;
        if !target.starts_with('/') {
            return Err(RewriteError::NotAbsolute(target.to_string()));
        }
        if let Some(c) = target.chars().find(|c| !is_url_char(*c)) {
            return Err(RewriteError::BadCharacter(c));
        }
        let groups = regex.captures_len() - 1;
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = target.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c != '$' {
                literal.push(c);
                continue;
            }
            match chars.peek() {
                Some((_, d)) if d.is_ascii_digit() => {
                    let n = d.to_digit(10).unwrap_or(0) as usize;
                    chars.next();
                    if n > groups || n == 0 {
                        return Err(RewriteError::NoSuchCapture(n, groups));
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Capture(n));
                }
                _ => {
                    let name: String = target[i..]
                        .chars()
                        .take_while(|c| *c == '$' || c.is_ascii_alphanumeric() || *c == '_' || *c == '{')
                        .collect();
                    return Err(RewriteError::Variable(name));
                }
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Self {
            regex,
            target: pieces,
            source: target.to_string(),
        })
    }

    /// The target as written.
    pub fn target(&self) -> &str {
        &self.source
    }

    /// The path and query to send upstream for a request with `path` and `query`, or `None` when
    /// the regex does not match (the request goes upstream unchanged).
    pub fn apply(&self, path: &str, query: Option<&str>) -> Option<String> {
        let caps = self.regex.captures(path)?;
        let mut out = String::with_capacity(self.source.len() + path.len());
        for piece in &self.target {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                Piece::Capture(n) => out.push_str(caps.get(*n).map_or("", |m| m.as_str())),
            }
        }
        if let Some(stripped) = out.strip_suffix('?') {
            // A target ending in `?` drops the request's query.
            out.truncate(stripped.len());
            return Some(out);
        }
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            out.push(if out.contains('?') { '&' } else { '?' });
            out.push_str(q);
        }
        Some(out)
    }
}

/// Characters a rewritten path may carry as written (RFC 3986 path, query and `%` escapes, plus
/// `$` for captures).
fn is_url_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/?%".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_captures_the_rest_of_the_path() {
        // docs/examples/rewrite: path /something(/|$)(.*), target /$2.
        let r = Rewrite::new("/something(/|$)(.*)", "/$2").unwrap();
        assert_eq!(r.apply("/something", None).unwrap(), "/");
        assert_eq!(r.apply("/something/", None).unwrap(), "/");
        assert_eq!(r.apply("/something/new", None).unwrap(), "/new");
        assert_eq!(r.apply("/something/new", Some("a=1")).unwrap(), "/new?a=1");
        assert_eq!(
            r.apply("/SOMETHING/new", None).unwrap(),
            "/new",
            "case-insensitive"
        );
        assert!(r.apply("/other", None).is_none());
    }

    #[test]
    fn a_plain_target_replaces_the_whole_path() {
        let r = Rewrite::new("/foo", "/").unwrap();
        assert_eq!(r.apply("/foo/bar", None).unwrap(), "/");
        let r = Rewrite::new("/api/(v[0-9]+)/(.*)", "/$2/$1").unwrap();
        assert_eq!(r.apply("/api/v2/users", None).unwrap(), "/users/v2");
    }

    #[test]
    fn the_query_follows_nginx_rules() {
        let r = Rewrite::new("/a(.*)", "/b?x=1").unwrap();
        assert_eq!(r.apply("/a", Some("y=2")).unwrap(), "/b?x=1&y=2");
        let r = Rewrite::new("/a(.*)", "/b?").unwrap();
        assert_eq!(r.apply("/a", Some("y=2")).unwrap(), "/b");
    }

    #[test]
    fn bad_targets_are_refused_with_a_reason() {
        assert_eq!(
            Rewrite::new("/a(.*)", "/$2").unwrap_err(),
            RewriteError::NoSuchCapture(2, 1)
        );
        assert!(
            matches!(Rewrite::new("/a", "/$host").unwrap_err(), RewriteError::Variable(v) if v == "$host")
        );
        assert!(matches!(
            Rewrite::new("/a(", "/").unwrap_err(),
            RewriteError::Regex(_)
        ));
        assert!(matches!(
            Rewrite::new("/a", "b").unwrap_err(),
            RewriteError::NotAbsolute(_)
        ));
        assert!(matches!(
            Rewrite::new("/a", "/b c").unwrap_err(),
            RewriteError::BadCharacter(' ')
        ));
        assert!(matches!(
            Rewrite::new("/a", "/b\";x").unwrap_err(),
            RewriteError::BadCharacter('"')
        ));
    }

    #[test]
    fn rewrites_compare_by_what_was_written() {
        assert_eq!(
            Rewrite::new("/a(.*)", "/$1").unwrap(),
            Rewrite::new("/a(.*)", "/$1").unwrap()
        );
        assert_ne!(
            Rewrite::new("/a(.*)", "/$1").unwrap(),
            Rewrite::new("/b(.*)", "/$1").unwrap()
        );
    }
}

/// How the Gateway API's `RequestRedirect` and `URLRewrite` filters change a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathModifier {
    /// `ReplaceFullPath`: the whole path becomes this.
    Full(String),
    /// `ReplacePrefixMatch`: the part of the path that the route's `PathPrefix` match matched
    /// (`matched`, as written in the match, without trailing slash) is replaced by `replacement`,
    /// on segment boundaries (`/foo` → `/bar` turns `/foo/x` into `/bar/x`, `/foo` into `/bar`).
    Prefix { matched: String, replacement: String },
}

impl PathModifier {
    /// The path that `path` (normalized, without query) becomes.
    ///
    /// `Prefix`, as the Gateway API's conformance tests expect (httproute-rewrite-path.go,
    /// httproute-redirect-path.go): the matched prefix is removed on a segment boundary and the
    /// replacement put in its place without doubling or losing the `/` between them:
    /// `/prefix/one` → `/one` turns `/prefix/one/two` into `/one/two`; `/strip-prefix` → `/`
    /// turns `/strip-prefix/three` into `/three` and `/strip-prefix` into `/`. A path that does not
    /// start with the matched prefix (it cannot, for the route's own requests) is left as it is.
    pub fn apply<'p>(&self, path: &'p str) -> Cow<'p, str> {
        match self {
            Self::Full(full) => Cow::Owned(full.clone()),
            Self::Prefix { matched, replacement } => {
                let matched = matched.trim_end_matches('/');
                let Some(rest) = path.strip_prefix(matched) else {
                    return Cow::Borrowed(path);
                };
                // `rest` is empty or starts with `/` when the prefix matched whole segments.
                if !(rest.is_empty() || rest.starts_with('/')) {
                    return Cow::Borrowed(path);
                }
                let replacement = replacement.trim_end_matches('/');
                let mut out = String::with_capacity(replacement.len() + rest.len() + 1);
                out.push_str(replacement);
                out.push_str(rest);
                if !out.starts_with('/') {
                    out.insert(0, '/');
                }
                Cow::Owned(out)
            }
        }
    }

    /// `path replaced by /x` or `path prefix /a replaced by /b`.
    pub fn describe(&self) -> String {
        match self {
            Self::Full(p) => format!("path replaced by {p}"),
            Self::Prefix { matched, replacement } => {
                format!("path prefix {matched} replaced by {replacement}")
            }
        }
    }
}

/// The Gateway API's `URLRewrite` filter: the host and path sent upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlRewrite {
    /// The `Host` sent upstream.
    pub hostname: Option<http::HeaderValue>,
    pub path: Option<PathModifier>,
}

#[cfg(test)]
mod path_modifier_tests {
    use super::PathModifier;

    fn prefix(matched: &str, replacement: &str) -> PathModifier {
        PathModifier::Prefix {
            matched: matched.into(),
            replacement: replacement.into(),
        }
    }

    #[test]
    fn prefixes_are_replaced_as_the_conformance_tests_expect() {
        // (matched, replacement, request path, path sent upstream): httproute-rewrite-path.go
        // first, then the trailing-slash corners.
        let cases = [
            ("/prefix/one", "/one", "/prefix/one/two", "/one/two"),
            ("/strip-prefix", "/", "/strip-prefix/three", "/three"),
            ("/strip-prefix", "/", "/strip-prefix", "/"),
            ("/strip-prefix", "/", "/strip-prefix/", "/"),
            (
                "/prefix/rewrite-path-and-modify-headers",
                "/prefix",
                "/prefix/rewrite-path-and-modify-headers/one",
                "/prefix/one",
            ),
            ("/foo/", "/bar", "/foo/x", "/bar/x"),
            ("/foo", "/bar/", "/foo/x", "/bar/x"),
            ("/foo", "/bar", "/foo", "/bar"),
            ("/foo", "/bar", "/foo/", "/bar/"),
            // The table of `HTTPPathModifier.ReplacePrefixMatch` in the API's documentation.
            ("/foo", "/xyz/", "/foo/bar", "/xyz/bar"),
            ("/foo/", "/xyz/", "/foo/bar", "/xyz/bar"),
            ("/foo", "/xyz", "/foo/", "/xyz/"),
            ("/foo", "", "/foo/bar", "/bar"),
            ("/foo", "", "/foo/", "/"),
            ("/foo", "", "/foo", "/"),
            ("/foo", "/", "/foo/", "/"),
            ("/foo", "/", "/foo", "/"),
            ("/", "/api", "/x/y", "/api/x/y"),
            ("/", "/api", "/", "/api/"),
            // Not on a segment boundary, or another prefix: untouched.
            ("/foo", "/bar", "/foobar", "/foobar"),
            ("/foo", "/bar", "/other", "/other"),
        ];
        for (matched, replacement, path, want) in cases {
            assert_eq!(
                prefix(matched, replacement).apply(path),
                want,
                "{matched} -> {replacement} on {path}"
            );
        }
    }

    #[test]
    fn a_full_path_replaces_everything() {
        assert_eq!(PathModifier::Full("/one".into()).apply("/full/one/two"), "/one");
    }
}
