//! Annotations refused with a rule of their own: the snippets (raw nginx configuration, never
//! executed).
//!
//! A snippet is never run, but it is read: its directives name the typed annotation to use
//! instead, and an access directive in it (`allow`, `deny`, `auth_basic`, `auth_request`,
//! `satisfy`, `access_by_lua*`, or a `return` of 401 or 403) is a protection Gantry cannot honour,
//! so the Ingress fails closed.
//! `auth-snippet` always does (it only exists to change an authentication); a `modsecurity-snippet`
//! that turns the rule engine on does too (it asked for requests to be blocked).

use super::{Outcome, Parser, References};

/// Longest snippet read for directives; the rest is not looked at (it is never run anyway). An
/// annotation value is at most 256 KiB in a cluster.
const MAX_SNIPPET: usize = 256 * 1024;

/// nginx directives that decide who may pass.
const ACCESS_DIRECTIVES: [&str; 10] = [
    "allow",
    "deny",
    "auth_basic",
    "auth_basic_user_file",
    "auth_request",
    "auth_jwt",
    "satisfy",
    "access_by_lua",
    "access_by_lua_block",
    "access_by_lua_file",
];

/// Directives and the typed annotation that does the same.
const REPLACEMENTS: [(&str, &str); 17] = [
    ("more_set_headers", "custom-headers"),
    ("add_header", "custom-headers"),
    (
        "proxy_set_header",
        "upstream-vhost (for Host) or x-forwarded-prefix",
    ),
    ("rewrite", "rewrite-target"),
    ("return", "permanent-redirect or temporal-redirect (or app-root)"),
    ("client_max_body_size", "proxy-body-size"),
    ("proxy_read_timeout", "proxy-read-timeout"),
    ("proxy_send_timeout", "proxy-send-timeout"),
    ("proxy_connect_timeout", "proxy-connect-timeout"),
    ("allow", "allowlist-source-range"),
    ("deny", "denylist-source-range"),
    ("auth_basic", "auth-type: basic with auth-secret"),
    ("auth_basic_user_file", "auth-type: basic with auth-secret"),
    ("auth_request", "auth-url"),
    ("limit_req", "limit-rps or limit-rpm"),
    ("limit_conn", "limit-connections"),
    ("proxy_buffering", "nothing (Gantry streams)"),
];

pub(super) fn parse<R: References>(p: &mut Parser<'_, R>) {
    for name in ["configuration-snippet", "server-snippet"] {
        let Some(v) = p.value(name) else { continue };
        let directives = directives(v);
        let mut uses: Vec<String> = Vec::new();
        for d in &directives {
            if let Some((_, instead)) = REPLACEMENTS.iter().find(|(r, _)| r == d) {
                let line = format!("{d} → {instead}");
                if !uses.contains(&line) {
                    uses.push(line);
                }
            }
        }
        let mut access: Vec<&str> = directives
            .iter()
            .map(String::as_str)
            .filter(|d| ACCESS_DIRECTIVES.contains(d))
            .collect();
        if refuses_access(v) {
            access.push("return 401/403");
        }
        let mut why = String::from("never executed: Gantry runs no nginx configuration");
        if uses.is_empty() {
            why.push_str(
                "; write the typed annotations instead (gantry check --annotations-table lists them)",
            );
        } else {
            why.push_str(&format!("; use instead: {}", uses.join(", ")));
        }
        if access.is_empty() {
            why.push_str("; the Ingress is served without it");
            p.report(name, Outcome::Refused(why));
        } else {
            access.sort_unstable();
            access.dedup();
            why.push_str(&format!(
                "; it has the access directive(s) {}, a protection Gantry cannot honour: the Ingress fails closed",
                access.join(", ")
            ));
            p.report(name, Outcome::Refused(why.clone()));
            p.fail_closed(name, &why);
        }
    }

    if let Some(v) = p.value("modsecurity-snippet") {
        let engine_on = directive_lines(v).any(|line| {
            let mut words = line.split_whitespace();
            words
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case("SecRuleEngine"))
                && words.next().is_some_and(|w| w.eq_ignore_ascii_case("On"))
        });
        if engine_on {
            let why = "never executed: ModSecurity is not supported, and this snippet turns the rule engine on (SecRuleEngine On): the Ingress fails closed";
            p.report("modsecurity-snippet", Outcome::Refused(why.into()));
            p.fail_closed("modsecurity-snippet", why);
        } else {
            p.report(
                "modsecurity-snippet",
                Outcome::Refused(
                    "never executed: ModSecurity is not supported; the Ingress is served without it".into(),
                ),
            );
        }
    }
}

/// The statements of nginx configuration text, without comments, split on `;`, `{` and `}`.
fn directive_lines(text: &str) -> impl Iterator<Item = &str> {
    let text = match text.char_indices().nth(MAX_SNIPPET) {
        Some((i, _)) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .flat_map(|line| line.split([';', '{', '}']))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Whether a statement is `return 401` or `return 403` (an `if` that turns clients away).
fn refuses_access(text: &str) -> bool {
    directive_lines(text).any(|line| {
        let mut words = line.split_whitespace();
        words.next().is_some_and(|w| w.eq_ignore_ascii_case("return"))
            && matches!(words.next(), Some("401" | "403"))
    })
}

/// The directive names of nginx configuration text (the first word of each statement),
/// lowercase, in order.
fn directives(text: &str) -> Vec<String> {
    directive_lines(text)
        .filter_map(|s| s.split_whitespace().next())
        .map(str::to_ascii_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_the_first_words_of_statements() {
        let snippet = "more_set_headers \"Request-Id: $req_id\";\n# deny all;\nlocation /x { deny all; }\n  allow 10.0.0.0/8; return 403;";
        assert_eq!(
            directives(snippet),
            ["more_set_headers", "location", "deny", "allow", "return"]
        );
        assert!(refuses_access(
            "if ($http_x_forwarded_for !~ \"^10\\.\") { return 403; }"
        ));
        assert!(!refuses_access("return 301 https://$host$request_uri;"));
    }
}
