//! When a request goes to the next endpoint: nginx's `proxy_next_upstream` (`proxy-next-upstream`,
//! `-tries`, `-timeout` in ingress-nginx).
//!
//! **The rule**, applied after every failed attempt (`Retry::allows`):
//!
//! 1. The failure's [`Condition`] must be one the policy lists (`error`, `timeout`,
//!    `invalid_header`, `http_5xx`...). `off` lists none: nothing is ever retried.
//! 2. Another attempt must be left: at most `tries` attempts in all (the first one included; 0 is
//!    no limit), at most one per endpoint of the backend (a request is never sent twice to the same
//!    endpoint, as nginx's own round robin never does; ingress-nginx's Lua balancer may pick the
//!    same endpoint again), and, with a `timeout`, only while less than that has passed since the
//!    first attempt began.
//! 3. When **nothing reached the endpoint** (the connection failed or timed out), the request goes
//!    to the next endpoint whatever its method and body: it is still untouched, even a body longer
//!    than Gantry reads ahead.
//! 4. When the request **was sent** (an error or timeout after writing began, an invalid response
//!    head, a response with a listed status), it is sent again only if it can be replayed (its body
//!    was empty, or was read ahead completely; never an upgrade) and
//!    - its method is idempotent (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE), or
//!    - `non_idempotent` is listed and the request has no body: a POST, PATCH, LOCK or any other
//!      method not known to be idempotent is **never sent again once its body was sent**.
//!
//! nginx treats only POST, LOCK and PATCH as non-idempotent and, with `non_idempotent`, resends
//! them even with a body; Gantry is stricter on both counts (an unknown method is not assumed
//! idempotent, and a body that reached a backend is never delivered twice).
//!
//! A response with a listed status is discarded only when a retry will happen; otherwise it is
//! returned to the client as it is.

use std::time::Duration;

use http::{Method, StatusCode};

bitflags::bitflags! {
    /// The conditions of `proxy_next_upstream`. `error` and `timeout` are split by whether the
    /// request had been sent: Gantry's default retries only failed connects.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct RetryOn: u16 {
        /// The connection to the endpoint failed (`error`).
        const CONNECT_ERROR = 1 << 0;
        /// The connection to the endpoint timed out (`timeout`).
        const CONNECT_TIMEOUT = 1 << 1;
        /// Sending the request or reading the response head failed (`error`).
        const ERROR = 1 << 2;
        /// No response head in time (`timeout`).
        const TIMEOUT = 1 << 3;
        /// An empty or invalid response head (`invalid_header`).
        const INVALID_HEADER = 1 << 4;
        const HTTP_500 = 1 << 5;
        const HTTP_502 = 1 << 6;
        const HTTP_503 = 1 << 7;
        const HTTP_504 = 1 << 8;
        const HTTP_403 = 1 << 9;
        const HTTP_404 = 1 << 10;
        const HTTP_429 = 1 << 11;
        /// Bodiless requests with a method not known to be idempotent may be resent (see the
        /// module's rule).
        const NON_IDEMPOTENT = 1 << 12;
    }
}

/// The statuses `proxy_next_upstream` can name.
const STATUS_FLAGS: [(u16, RetryOn); 7] = [
    (500, RetryOn::HTTP_500),
    (502, RetryOn::HTTP_502),
    (503, RetryOn::HTTP_503),
    (504, RetryOn::HTTP_504),
    (403, RetryOn::HTTP_403),
    (404, RetryOn::HTTP_404),
    (429, RetryOn::HTTP_429),
];

impl RetryOn {
    /// The conditions that can only arise once the request was sent.
    const AFTER_SEND: RetryOn = RetryOn::ERROR
        .union(RetryOn::TIMEOUT)
        .union(RetryOn::INVALID_HEADER)
        .union(RetryOn::STATUSES);
    /// Every `http_*` condition.
    pub const STATUSES: RetryOn = RetryOn::HTTP_500
        .union(RetryOn::HTTP_502)
        .union(RetryOn::HTTP_503)
        .union(RetryOn::HTTP_504)
        .union(RetryOn::HTTP_403)
        .union(RetryOn::HTTP_404)
        .union(RetryOn::HTTP_429);

    /// One word of nginx's `proxy_next_upstream` (`error` is both connect and later errors, and
    /// so is `timeout`); `off` is the empty set. `None` for anything else.
    pub fn from_word(word: &str) -> Option<RetryOn> {
        Some(match word {
            "error" => RetryOn::CONNECT_ERROR | RetryOn::ERROR,
            "timeout" => RetryOn::CONNECT_TIMEOUT | RetryOn::TIMEOUT,
            "invalid_header" => RetryOn::INVALID_HEADER,
            "non_idempotent" => RetryOn::NON_IDEMPOTENT,
            "off" => RetryOn::empty(),
            _ => {
                let code = word.strip_prefix("http_")?.parse::<u16>().ok()?;
                STATUS_FLAGS.iter().find(|(c, _)| *c == code)?.1
            }
        })
    }

    /// Whether a response with `status` is a listed failure.
    pub fn status(self, status: StatusCode) -> bool {
        self.intersects(RetryOn::STATUSES)
            && STATUS_FLAGS
                .iter()
                .any(|(code, flag)| status.as_u16() == *code && self.contains(*flag))
    }
}

/// Why an attempt failed, in `proxy_next_upstream`'s terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Connecting failed: nothing was sent.
    ConnectError,
    /// Connecting timed out: nothing was sent.
    ConnectTimeout,
    /// Sending the request or reading the response head failed.
    Error,
    /// No response head in time.
    Timeout,
    /// The response head was empty or invalid.
    InvalidHeader,
    /// The response had this (listed) status.
    Status(StatusCode),
}

impl Condition {
    /// Whether the request had been (at least partly) sent when this happened.
    pub fn sent(self) -> bool {
        !matches!(self, Condition::ConnectError | Condition::ConnectTimeout)
    }

    /// A bounded label for the retry metric.
    pub fn label(self) -> &'static str {
        match self {
            Condition::ConnectError => "connect_error",
            Condition::ConnectTimeout => "connect_timeout",
            Condition::Error => "error",
            Condition::Timeout => "timeout",
            Condition::InvalidHeader => "invalid_header",
            Condition::Status(s) => match s.as_u16() {
                500 => "http_500",
                502 => "http_502",
                503 => "http_503",
                504 => "http_504",
                403 => "http_403",
                404 => "http_404",
                429 => "http_429",
                _ => "http_other",
            },
        }
    }

    fn listed(self, on: RetryOn) -> bool {
        match self {
            Condition::ConnectError => on.contains(RetryOn::CONNECT_ERROR),
            Condition::ConnectTimeout => on.contains(RetryOn::CONNECT_TIMEOUT),
            Condition::Error => on.contains(RetryOn::ERROR),
            Condition::Timeout => on.contains(RetryOn::TIMEOUT),
            Condition::InvalidHeader => on.contains(RetryOn::INVALID_HEADER),
            Condition::Status(s) => on.status(s),
        }
    }
}

/// The retry policy of a route. `Copy`: it is three small numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Retry {
    pub on: RetryOn,
    /// Attempts in all, the first one included; 0 is no limit (but still one per endpoint).
    pub tries: u32,
    /// How long after the first attempt began a retry may still start; `None`: no limit.
    pub timeout: Option<Duration>,
}

impl Default for Retry {
    /// Gantry's behaviour without annotations: [`Retry::CONNECT_ONCE`].
    fn default() -> Self {
        Self::CONNECT_ONCE
    }
}

impl Retry {
    /// Gantry's default: a failed or timed-out connect goes once to another endpoint; nothing
    /// that reached a backend is sent again.
    pub const CONNECT_ONCE: Retry = Retry {
        on: RetryOn::CONNECT_ERROR.union(RetryOn::CONNECT_TIMEOUT),
        tries: 2,
        timeout: None,
    };

    /// ingress-nginx's defaults, for a route that sets some of the annotations only:
    /// `error timeout`, 3 tries, no time limit.
    pub const INGRESS_NGINX: Retry = Retry {
        on: RetryOn::CONNECT_ERROR
            .union(RetryOn::CONNECT_TIMEOUT)
            .union(RetryOn::ERROR)
            .union(RetryOn::TIMEOUT),
        tries: 3,
        timeout: None,
    };

    /// This policy without the conditions that need the request sent again (for requests that
    /// can never be replayed, such as upgrades).
    pub fn connect_only(self) -> Retry {
        Retry {
            on: self.on - RetryOn::AFTER_SEND,
            ..self
        }
    }

    /// The most attempts a request to a backend with `endpoints` endpoints gets (at least 1).
    pub fn max_attempts(&self, endpoints: usize) -> usize {
        if self.on.is_empty() {
            return 1;
        }
        let tries = if self.tries == 0 {
            usize::MAX
        } else {
            self.tries as usize
        };
        tries.min(endpoints).max(1)
    }

    /// Whether a failure after the request was sent could ever be retried for this method and
    /// body: decides whether a replay copy of the request is worth making before sending it.
    pub fn may_resend(&self, method: &Method, has_body: bool) -> bool {
        self.on.intersects(RetryOn::AFTER_SEND)
            && (is_idempotent(method) || (self.on.contains(RetryOn::NON_IDEMPOTENT) && !has_body))
    }

    /// Whether an attempt that failed with `condition` goes to the next endpoint, given that
    /// another attempt is left (`more`), the request's method and whether it has a body, and
    /// whether a replay copy of it exists (`replayable`, only looked at when it was sent).
    pub fn allows(
        &self,
        condition: Condition,
        more: bool,
        method: &Method,
        has_body: bool,
        replayable: bool,
    ) -> bool {
        more && condition.listed(self.on)
            && (!condition.sent() || (replayable && self.may_resend(method, has_body)))
    }
}

/// RFC 9110 §9.2.2's idempotent methods. Anything else (POST, PATCH, LOCK, CONNECT, extension
/// methods) is not assumed idempotent.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(words: &str) -> RetryOn {
        words
            .split_whitespace()
            .map(|w| RetryOn::from_word(w).unwrap())
            .fold(RetryOn::empty(), |a, b| a | b)
    }

    fn policy(words: &str, tries: u32) -> Retry {
        Retry {
            on: on(words),
            tries,
            timeout: None,
        }
    }

    #[test]
    fn words_map_to_conditions() {
        assert_eq!(on("error timeout"), Retry::INGRESS_NGINX.on);
        assert!(on("http_503").status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!on("http_503").status(StatusCode::BAD_GATEWAY));
        assert!(!on("error").status(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(on("off"), RetryOn::empty());
        for bad in ["http_501", "http_", "Error", "5xx", ""] {
            assert_eq!(RetryOn::from_word(bad), None, "{bad}");
        }
    }

    #[test]
    fn attempts_are_bounded_by_tries_and_endpoints() {
        assert_eq!(Retry::CONNECT_ONCE.max_attempts(1), 1);
        assert_eq!(Retry::CONNECT_ONCE.max_attempts(5), 2);
        assert_eq!(policy("error", 3).max_attempts(2), 2);
        assert_eq!(policy("error", 1).max_attempts(5), 1);
        assert_eq!(policy("error", 0).max_attempts(7), 7);
        assert_eq!(policy("off", 5).max_attempts(5), 1);
        assert_eq!(policy("error", 3).max_attempts(0), 1);
    }

    #[test]
    fn the_rule() {
        let get = Method::GET;
        let post = Method::POST;
        let lock = Method::from_bytes(b"LOCK").unwrap();
        let p = policy("error timeout http_503", 3);
        let n = policy("error timeout http_503 non_idempotent", 3);
        let s503 = Condition::Status(StatusCode::SERVICE_UNAVAILABLE);
        // (policy, condition, method, has body, replayable) → allowed
        let cases: Vec<(&Retry, Condition, &Method, bool, bool, bool)> = vec![
            // Nothing sent: always, even a body that cannot be replayed.
            (&p, Condition::ConnectError, &post, true, false, true),
            (&p, Condition::ConnectTimeout, &post, true, false, true),
            // Sent, idempotent, replayable.
            (&p, s503, &get, false, true, true),
            (&p, Condition::Error, &get, false, true, true),
            (&p, Condition::Timeout, &Method::PUT, true, true, true),
            // Sent, not replayable.
            (&p, s503, &Method::PUT, true, false, false),
            // Not listed.
            (&p, Condition::InvalidHeader, &get, false, true, false),
            (
                &p,
                Condition::Status(StatusCode::BAD_GATEWAY),
                &get,
                false,
                true,
                false,
            ),
            // Non-idempotent without the flag: never once sent.
            (&p, s503, &post, false, true, false),
            (&p, s503, &post, true, true, false),
            // With the flag: only without a body.
            (&n, s503, &post, false, true, true),
            (&n, s503, &lock, false, true, true),
            (&n, s503, &post, true, true, false),
            (&n, Condition::Error, &Method::PATCH, true, true, false),
        ];
        for (policy, condition, method, body, replayable, allowed) in cases {
            assert_eq!(
                policy.allows(condition, true, method, body, replayable),
                allowed,
                "{:?} {condition:?} {method} body={body} replayable={replayable}",
                policy.on
            );
        }
        // No attempt left, or `off`: never.
        assert!(!p.allows(Condition::ConnectError, false, &get, false, true));
        assert!(!policy("off", 3).allows(Condition::ConnectError, true, &get, false, true));
        // The default retries connects only.
        let d = Retry::CONNECT_ONCE;
        assert!(d.allows(Condition::ConnectTimeout, true, &get, false, true));
        assert!(!d.allows(Condition::Error, true, &get, false, true));
        assert!(!d.may_resend(&get, false));
        // An upgrade keeps only the connect conditions.
        assert_eq!(
            n.connect_only().on,
            RetryOn::CONNECT_ERROR | RetryOn::CONNECT_TIMEOUT | RetryOn::NON_IDEMPOTENT
        );
    }
}
