//! HTTP basic authentication against an htpasswd list (`auth-type: basic`).
//!
//! The hash formats are the ones the Apache `htpasswd` tool writes:
//!
//! - bcrypt (`htpasswd -B`): `$2y$`, also `$2a$` and `$2b$`, verified by the `bcrypt` crate. The
//!   cost is bounded at [`MAX_BCRYPT_COST`] when the list is parsed, so that a Secret cannot make
//!   every request of a route burn seconds of CPU.
//! - MD5-crypt (`htpasswd -m`, the tool's default): `$apr1$salt$hash`, and the same algorithm
//!   under the `$1$` prefix that `openssl passwd -1` writes (nginx accepts both).
//! - SHA-1 (`htpasswd -s`): `{SHA}base64(sha1(password))`.
//!
//! Refused when the list is parsed, never accepted at request time: crypt(3) DES (`htpasswd -d`,
//! which keeps only 8 characters of a password), plain text (`htpasswd -p`, nginx's `{PLAIN}`),
//! and the formats nginx would hand to the system `crypt()` that Gantry does not implement (`$5$`,
//! `$6$`, `{SSHA}`, bcrypt's legacy `$2x$`). Each error says how to re-create the entry.
//!
//! Every digest comparison is constant time: all bytes are compared whatever the first
//! difference (bcrypt's is done by the `bcrypt` crate).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, StatusCode};
use md5::{Digest as _, Md5};
use sha1::Sha1;

use super::{local_response, LocalResponse};

/// The highest bcrypt cost accepted. Each step doubles the work of checking a password: cost 14
/// (what ingress-nginx's own e2e tests use) is about a second of one core; `htpasswd -B` writes 5.
pub const MAX_BCRYPT_COST: u32 = 14;

/// Basic authentication of one route: a request without valid credentials gets 401 with
/// `WWW-Authenticate: Basic realm="<realm>"`.
///
/// Equal policies compare equal whatever their caches hold, so an unchanged Secret never causes a
/// swap (and the policy, with its cache, is kept across swaps).
#[derive(Clone, Debug)]
pub struct BasicAuth {
    /// `WWW-Authenticate` value, built once.
    challenge: HeaderValue,
    pub users: Arc<Htpasswd>,
    verified: Arc<Verified>,
}

impl PartialEq for BasicAuth {
    fn eq(&self, other: &Self) -> bool {
        self.challenge == other.challenge && self.users == other.users
    }
}

impl Eq for BasicAuth {}

/// The `Authorization` values that verified, by their SHA-256.
///
/// bcrypt is slow on purpose: one check of a cost-5 hash (what `htpasswd -B` writes) takes about
/// 2 ms of the worker's CPU, and nginx pays it on every request. A browser sends the same header
/// with every request, so a hit here skips the hash. Only values that verified are kept, so a
/// client cannot fill it with guesses; it holds at most [`Verified::CAPACITY`] and starts over when
/// full. A change of the user list is a new policy with an empty cache, so a removed user or
/// password stops working with the next snapshot.
#[derive(Default)]
struct Verified {
    digests: Mutex<HashSet<[u8; 32]>>,
}

impl Verified {
    const CAPACITY: usize = 4096;

    fn digest(authorization: &[u8]) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, authorization);
        let mut out = [0; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    fn contains(&self, digest: &[u8; 32]) -> bool {
        self.lock().contains(digest)
    }

    fn insert(&self, digest: [u8; 32]) {
        let mut set = self.lock();
        if set.len() >= Self::CAPACITY {
            set.clear();
        }
        set.insert(digest);
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        // The set holds no invariant a panic could break.
        self.digests.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verified({} cached)", self.len())
    }
}

impl BasicAuth {
    /// `realm` is shown by browsers in the login prompt; a quote or control character in it is
    /// refused (the controller reports it).
    pub fn new(realm: &str, users: Arc<Htpasswd>) -> Result<Self, HtpasswdError> {
        if realm.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
            return Err(HtpasswdError::BadRealm);
        }
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{realm}\""))
            .map_err(|_| HtpasswdError::BadRealm)?;
        Ok(Self {
            challenge,
            users,
            verified: Arc::default(),
        })
    }

    /// `None` when the request carries valid credentials, else the 401.
    ///
    /// Valid means exactly one `Authorization` header, scheme `Basic` (any case), then the base64
    /// of `user:password` (the user is everything before the first colon: not empty, UTF-8; the
    /// password is any bytes, possibly none), the user in the list and the password matching its
    /// hash. Anything else (no header, another scheme, bad base64, no colon, an unknown user, a
    /// wrong password) gets the same 401 with the challenge.
    pub fn apply(&self, headers: &HeaderMap) -> Option<LocalResponse> {
        let mut one = headers.get_all(http::header::AUTHORIZATION).iter();
        let digest = match (one.next(), one.next()) {
            (Some(v), None) => Some(Verified::digest(v.as_bytes())),
            _ => None,
        };
        if digest.as_ref().is_some_and(|d| self.verified.contains(d)) {
            return None;
        }
        let valid = Credentials::from_headers(headers)
            .is_some_and(|c| c.user().is_some_and(|user| self.users.verify(user, c.password())));
        if valid {
            if let Some(d) = digest {
                self.verified.insert(d);
            }
            return None;
        }
        let mut resp = local_response(StatusCode::UNAUTHORIZED);
        resp.headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, self.challenge.clone());
        Some(resp)
    }
}

/// The user of a request's `Authorization: Basic` credentials, whether or not they are valid
/// (nginx's `$remote_user`, for external authentication's cache key).
pub(super) fn basic_user(headers: &HeaderMap) -> Option<String> {
    Credentials::from_headers(headers).and_then(|c| c.user().map(str::to_string))
}

/// Base64 as clients send it in `Authorization: Basic`: the standard alphabet, padding optional
/// (nginx's decoder does not insist on it either).
const BASIC_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decoded `Authorization: Basic` credentials.
struct Credentials {
    decoded: Vec<u8>,
    /// Position of the first colon in `decoded`.
    colon: usize,
}

impl Credentials {
    fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let value = values.next()?;
        if values.next().is_some() {
            // Two Authorization headers: which one a backend would read is anyone's guess.
            return None;
        }
        let bytes = value.as_bytes();
        let space = bytes.iter().position(|&b| b == b' ')?;
        let (scheme, rest) = bytes.split_at(space);
        if !scheme.eq_ignore_ascii_case(b"basic") {
            return None;
        }
        let token = trim_ows(rest);
        if token.is_empty() {
            return None;
        }
        let decoded = BASIC_BASE64.decode(token).ok()?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        Some(Self { decoded, colon })
    }

    /// The user: not empty, UTF-8 (the list's names are).
    fn user(&self) -> Option<&str> {
        let user = std::str::from_utf8(self.decoded.get(..self.colon)?).ok()?;
        (!user.is_empty()).then_some(user)
    }

    fn password(&self) -> &[u8] {
        self.decoded.get(self.colon + 1..).unwrap_or_default()
    }
}

fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// The users of an htpasswd file (or of an `auth-map` Secret), with their password hashes.
///
/// A user listed twice is checked against the first entry, as nginx does. `Debug` shows the users
/// and the kind of their hashes, never the hashes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Htpasswd {
    entries: BTreeMap<String, PasswordHash>,
}

impl fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(u, h)| (u, h.kind())))
            .finish()
    }
}

/// Why an htpasswd list cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HtpasswdError {
    /// A line of an htpasswd file, or the `line`-th entry of an auth-map (whose `why` names the
    /// user), cannot be used. `why` never contains the hash.
    #[error("line {line}: {why}")]
    Line { line: usize, why: String },
    #[error("no users")]
    Empty,
    #[error("the realm may not contain quotes, backslashes or control characters")]
    BadRealm,
}

impl Htpasswd {
    /// Parses an htpasswd file: `user:hash` per line (nginx's optional third `:comment` field is
    /// ignored). Blank lines and lines starting with `#` are skipped; any other line that is not
    /// a user with a supported hash is an error naming its line (1-based). No user at all is
    /// [`HtpasswdError::Empty`].
    pub fn parse(text: &str) -> Result<Self, HtpasswdError> {
        let mut users = Self::default();
        // A byte-order mark (a file saved by a Windows editor) is not part of the first user.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let error = |why: String| HtpasswdError::Line { line: index + 1, why };
            let Some((user, rest)) = line.split_once(':') else {
                return Err(error("expected `user:hash`, found no colon".into()));
            };
            // `user:hash:comment`: no supported hash contains a colon.
            let hash = rest.split_once(':').map_or(rest, |(hash, _comment)| hash);
            check_user(user).map_err(error)?;
            users.push(user, PasswordHash::parse(hash).map_err(error)?);
        }
        users.non_empty()
    }

    /// Users from `(user, hash)` pairs (an `auth-map` Secret: one key per user). Surrounding
    /// whitespace of a hash (a trailing newline from `echo`) is ignored. An error gives the
    /// 1-based position of the pair and names its user.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, HtpasswdError> {
        let mut users = Self::default();
        for (index, (user, hash)) in pairs.into_iter().enumerate() {
            let error = |why: String| HtpasswdError::Line {
                line: index + 1,
                why: format!("user {user:?}: {why}"),
            };
            check_user(user).map_err(error)?;
            users.push(user, PasswordHash::parse(hash.trim()).map_err(error)?);
        }
        users.non_empty()
    }

    /// Whether `user` exists and `password` matches its hash. A password with a NUL byte never
    /// matches: the `htpasswd` tool (C strings) cannot have hashed one, and bcrypt, which sees its
    /// input NUL-terminated, would take `"\0"` for the empty password.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        if password.contains(&0) {
            return false;
        }
        self.entries.get(user).is_some_and(|hash| hash.verify(password))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a user unless already listed (the first entry wins, as in nginx).
    fn push(&mut self, user: &str, hash: PasswordHash) {
        self.entries.entry(user.to_owned()).or_insert(hash);
    }

    fn non_empty(self) -> Result<Self, HtpasswdError> {
        if self.entries.is_empty() {
            Err(HtpasswdError::Empty)
        } else {
            Ok(self)
        }
    }
}

fn check_user(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("empty user name".into());
    }
    if user.contains(':') {
        return Err("a user name may not contain a colon".into());
    }
    if user.chars().any(char::is_control) {
        return Err("a user name may not contain control characters".into());
    }
    Ok(())
}

/// One password hash, checked when the list is parsed so that verifying cannot fail.
#[derive(Clone, PartialEq, Eq)]
enum PasswordHash {
    /// `$2y$`, `$2a$`, `$2b$`: the whole hash string, for the `bcrypt` crate.
    Bcrypt(Box<str>),
    /// MD5-crypt: `$apr1$` or `$1$` (`magic`), up to 8 characters of salt, 22 of digest.
    Md5Crypt {
        magic: &'static str,
        salt: Box<[u8]>,
        digest: [u8; 22],
    },
    /// `{SHA}`: the 20 bytes of the SHA-1 digest.
    Sha1([u8; 20]),
}

/// The alphabet of crypt(3)'s base64 (MD5-crypt, DES crypt).
const CRYPT_ALPHABET: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn is_crypt_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'/'
}

const RECREATE: &str = "re-create it with htpasswd -B";

impl PasswordHash {
    fn kind(&self) -> &'static str {
        match self {
            Self::Bcrypt(_) => "bcrypt",
            Self::Md5Crypt { magic: "$1$", .. } => "md5-crypt",
            Self::Md5Crypt { .. } => "apr1",
            Self::Sha1(_) => "sha1",
        }
    }

    /// Recognizes a hash; the error says why it cannot be used, never quoting it.
    fn parse(hash: &str) -> Result<Self, String> {
        if hash.is_empty() {
            return Err(format!("empty password hash; {RECREATE}"));
        }
        if let Some(rest) = ["$2y$", "$2a$", "$2b$"]
            .iter()
            .find_map(|prefix| hash.strip_prefix(prefix))
        {
            return Self::parse_bcrypt(hash, rest);
        }
        if hash.starts_with("$2x$") {
            return Err(format!(
                "unsupported hash (bcrypt $2x$, the variant that reproduces an old bug); {RECREATE}"
            ));
        }
        if let Some(rest) = hash.strip_prefix("$apr1$") {
            return Self::parse_md5_crypt("$apr1$", rest);
        }
        if let Some(rest) = hash.strip_prefix("$1$") {
            return Self::parse_md5_crypt("$1$", rest);
        }
        if let Some(b64) = hash.strip_prefix("{SHA}") {
            let digest = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .ok()
                .and_then(|d| <[u8; 20]>::try_from(d).ok())
                .ok_or_else(|| "malformed {SHA} hash: expected the base64 of 20 bytes".to_string())?;
            return Ok(Self::Sha1(digest));
        }
        let unsupported = if hash.starts_with("$5$") {
            "SHA-256-crypt $5$"
        } else if hash.starts_with("$6$") {
            "SHA-512-crypt $6$"
        } else if hash.starts_with("{SSHA}") {
            "{SSHA}"
        } else if hash.starts_with("{PLAIN}") {
            "plain text"
        } else if hash.len() == 13 && hash.bytes().all(is_crypt_char) {
            "crypt"
        } else if hash.starts_with('$') || hash.starts_with('{') {
            "unknown format"
        } else {
            // What `htpasswd -p` writes: the password itself.
            "plain text"
        };
        Err(format!("unsupported hash ({unsupported}); {RECREATE}"))
    }

    /// `hash` is the whole `$2y$NN$<53 chars>`; `rest` what follows the version.
    fn parse_bcrypt(hash: &str, rest: &str) -> Result<Self, String> {
        let malformed = || "malformed bcrypt hash: expected $2y$<cost>$<53 characters>".to_string();
        let (cost, salt_and_digest) = rest.split_once('$').ok_or_else(malformed)?;
        if cost.len() != 2 || !cost.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let cost: u32 = cost.parse().map_err(|_| malformed())?;
        if salt_and_digest.len() != 53 || !salt_and_digest.bytes().all(is_crypt_char) {
            return Err(malformed());
        }
        // Decode both parts now, as the crate will when verifying, so that a hash that cannot
        // be checked is refused here rather than failing every request.
        let (salt, digest) = salt_and_digest.split_at(22);
        let salt_ok = bcrypt::BASE_64.decode(salt).is_ok_and(|s| s.len() == 16);
        let digest_ok = bcrypt::BASE_64.decode(digest).is_ok_and(|d| d.len() == 23);
        if !salt_ok || !digest_ok {
            return Err(malformed());
        }
        if cost < 4 {
            return Err(malformed());
        }
        if cost > MAX_BCRYPT_COST {
            return Err(format!(
                "bcrypt cost {cost} is above the limit of {MAX_BCRYPT_COST}: checking the password \
                 would cost every request seconds of CPU; re-create it with htpasswd -B \
                 (cost 5) or -B -C {MAX_BCRYPT_COST} at most"
            ));
        }
        Ok(Self::Bcrypt(hash.into()))
    }

    /// `rest` is `salt$digest`.
    fn parse_md5_crypt(magic: &'static str, rest: &str) -> Result<Self, String> {
        let malformed = || format!("malformed {magic} hash: expected {magic}<salt>$<22 characters>");
        let (salt, digest) = rest.split_once('$').ok_or_else(malformed)?;
        if salt.is_empty() || salt.len() > 8 || !salt.bytes().all(is_crypt_char) {
            return Err(malformed());
        }
        let digest: [u8; 22] = digest.as_bytes().try_into().map_err(|_| malformed())?;
        if !digest.iter().all(|&b| is_crypt_char(b)) {
            return Err(malformed());
        }
        Ok(Self::Md5Crypt {
            magic,
            salt: salt.as_bytes().into(),
            digest,
        })
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            // The crate compares in constant time; an error (none is possible for a hash that
            // passed `parse_bcrypt`) is a refusal.
            Self::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            Self::Md5Crypt { magic, salt, digest } => {
                constant_time_eq(&md5_crypt(password, magic.as_bytes(), salt), digest)
            }
            Self::Sha1(digest) => constant_time_eq(Sha1::digest(password).as_slice(), digest),
        }
    }
}

/// Whether `a` and `b` are equal, looking at every byte whatever the first difference, so that
/// the time taken says nothing about how much of a digest matched. The lengths are those of the
/// format, not secret.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// MD5-crypt (Poul-Henning Kamp's algorithm; Apache's `apr1` is the same with `$apr1$` as the
/// magic string): the 22 characters after the salt.
///
/// Written here on the `md-5` crate rather than taken from `htpasswd-verify`, the crate made for
/// the job: that one depends on the unmaintained `rust-crypto`, which has RUSTSEC advisories.
fn md5_crypt(password: &[u8], magic: &[u8], salt: &[u8]) -> [u8; 22] {
    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();

    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(magic);
    ctx.update(salt);
    for chunk in password.chunks(16) {
        ctx.update(&alternate[..chunk.len()]);
    }
    // One byte per bit of the password's length: a NUL for a set bit, else the password's first
    // byte (the loop never runs for an empty password, which has no first byte).
    let first = password.first().copied().unwrap_or(0);
    let mut bits = password.len();
    while bits > 0 {
        ctx.update([if bits & 1 == 1 { 0 } else { first }]);
        bits >>= 1;
    }
    let mut digest = ctx.finalize();

    // 1000 rounds to slow down guessing.
    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round % 2 == 1 {
            ctx.update(password);
        } else {
            ctx.update(digest);
        }
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(password);
        }
        if round % 2 == 1 {
            ctx.update(digest);
        } else {
            ctx.update(password);
        }
        digest = ctx.finalize();
    }

    // crypt's base64: the bytes in this order, 3 at a time, 6 bits per character, low bits first.
    let d = digest;
    let mut out = [0u8; 22];
    let groups = [
        (d[0], d[6], d[12]),
        (d[1], d[7], d[13]),
        (d[2], d[8], d[14]),
        (d[3], d[9], d[15]),
        (d[4], d[10], d[5]),
    ];
    for (i, (a, b, c)) in groups.into_iter().enumerate() {
        let mut v = (u32::from(a) << 16) | (u32::from(b) << 8) | u32::from(c);
        for slot in &mut out[i * 4..i * 4 + 4] {
            *slot = CRYPT_ALPHABET[(v & 0x3f) as usize];
            v >>= 6;
        }
    }
    let mut v = u32::from(d[11]);
    for slot in &mut out[20..22] {
        *slot = CRYPT_ALPHABET[(v & 0x3f) as usize];
        v >>= 6;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fixtures written by Apache's htpasswd 2.4 (`htpasswd -nbB`, `-nbm`, `-nbs`, ...).
    const ALICE_BCRYPT: &str = "alice:$2y$05$spnySUnK2sKr7NuzQx6un.F/kkoEHFL4IM04asNGKYGmHRnoNpk3e"; // wonderland
    const BOB_APR1: &str = "bob:$apr1$FODc/SLr$9/uWBdLAuEFW8XNBSmwrB0"; // builder
    const CAROL_SHA: &str = "carol:{SHA}X9zPCbMFzMPlYX7+7QubnxKI7iM="; // singer
    const EMPTY_BCRYPT: &str = "empty:$2y$04$bW0JYNIpiisi1Vw.uxVB3u2NrCYarl4Q9F7/R5ZjNUYSJAoBliNgK"; // ""
    const EMPTY_APR1: &str = "emptymd5:$apr1$raS/f2gS$.epJq6dJTHtWwoIASrbjt/"; // ""
    const EMPTY_SHA: &str = "emptysha:{SHA}2jmj7l5rSw0yVb/vlWAYkK/YBwk="; // ""
    const COLONS_APR1: &str = "utf8:$apr1$T77Y/fkE$40FQ1FvcL5Bs1k42JoDAt/"; // pässwörd:with:colons
    const BINARY_APR1: &str = "binary:$apr1$8hnvb7iN$2ZolNJ5FmUjbCDIYMcvK10"; // b"pa\xffss"
    const LONG_APR1: &str = "long:$apr1$nPEdwSuh$hdjH230ZFnrndqVBGPjY4/"; // "a" x 100
    const LONG_BCRYPT: &str = "longb:$2y$04$2VL0JDEp4H4qLWR798Tg.OzvOz8qmU5gXG9Oj/Ox5ExgFh016rsEO"; // "a" x 100
    const MAX_COST: &str = "max:$2y$14$1jAv.xJRa8E3GetjGvq.dOI5jv78L1EXzeCgJuQ0TA4TBSz2jrO2u"; // x
    const SLOW: &str = "slow:$2y$15$4821eJffVek9cJiJ6Rd9SO1CcRPY3zbmf9/jL7XCG9vfzlPk1tnZO"; // x
    const DES: &str = "dave:eRe4P8745xhWI"; // htpasswd -d
    const PLAIN: &str = "erin:plain"; // htpasswd -p
                                      // `openssl passwd -1 -salt abcdefgh hello` and `openssl passwd -apr1 -salt abcdefgh hello`.
    const MD5_OPENSSL: &str = "frank:$1$abcdefgh$rwnEbRiN0agqVgZBovWNQ/";
    const APR1_OPENSSL: &str = "grace:$apr1$abcdefgh$cy3DSYyOwfhsyu7QOMQzd.";

    fn file(lines: &[&str]) -> Htpasswd {
        Htpasswd::parse(&lines.join("\n")).unwrap()
    }

    fn basic(user_pass: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        let value = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        );
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&value).unwrap(),
        );
        h
    }

    fn auth(lines: &[&str]) -> BasicAuth {
        BasicAuth::new("test auth", Arc::new(file(lines))).unwrap()
    }

    #[test]
    fn only_verified_credentials_are_remembered_and_a_new_list_starts_empty() {
        let a = auth(&[ALICE_BCRYPT, CAROL_SHA]);
        assert!(a.apply(&basic(b"alice:nope")).is_some());
        assert!(a.apply(&basic(b"mallory:x")).is_some());
        assert_eq!(a.verified.len(), 0, "failures are never cached");
        assert!(a.apply(&basic(b"alice:wonderland")).is_none());
        assert_eq!(a.verified.len(), 1);
        // The remembered value passes again; any other value is checked afresh.
        assert!(a.apply(&basic(b"alice:wonderland")).is_none());
        assert!(a.apply(&basic(b"alice:wonderlanD")).is_some());
        assert_eq!(a.verified.len(), 1);
        // Two Authorization headers are refused even when one of them was remembered.
        let mut two = basic(b"alice:wonderland");
        two.append(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic eA=="),
        );
        assert!(a.apply(&two).is_some());
        // Equal policies compare equal whatever their caches hold; a new user list (alice
        // removed) has its own, empty cache, so her remembered value no longer passes.
        assert_eq!(a, auth(&[ALICE_BCRYPT, CAROL_SHA]));
        let without_alice = auth(&[CAROL_SHA]);
        assert!(without_alice.apply(&basic(b"alice:wonderland")).is_some());
    }

    #[test]
    fn the_cache_of_verified_credentials_is_bounded() {
        let v = Verified::default();
        for i in 0..(Verified::CAPACITY + 10) {
            v.insert(Verified::digest(format!("Basic {i}").as_bytes()));
        }
        assert!(v.len() <= Verified::CAPACITY);
        assert!(v.contains(&Verified::digest(
            format!("Basic {}", Verified::CAPACITY + 9).as_bytes()
        )));
    }

    #[test]
    fn htpasswd_tool_hashes_verify() {
        let users = file(&[ALICE_BCRYPT, BOB_APR1, CAROL_SHA, MD5_OPENSSL, APR1_OPENSSL]);
        assert_eq!(users.len(), 5);
        assert!(users.verify("alice", b"wonderland"));
        assert!(users.verify("bob", b"builder"));
        assert!(users.verify("carol", b"singer"));
        assert!(users.verify("frank", b"hello"));
        assert!(users.verify("grace", b"hello"));
    }

    #[test]
    fn wrong_passwords_and_unknown_users_fail() {
        let users = file(&[ALICE_BCRYPT, BOB_APR1, CAROL_SHA, MD5_OPENSSL]);
        assert!(!users.verify("alice", b"Wonderland"));
        assert!(!users.verify("alice", b"wonderland "));
        assert!(!users.verify("bob", b"builde"));
        assert!(!users.verify("carol", b""));
        assert!(!users.verify("frank", b"hellO"));
        // A password right for another user.
        assert!(!users.verify("bob", b"wonderland"));
        assert!(!users.verify("mallory", b"wonderland"));
        assert!(!users.verify("", b""));
        assert!(!users.verify("Alice", b"wonderland"));
    }

    #[test]
    fn empty_passwords_verify_only_as_empty() {
        let users = file(&[EMPTY_BCRYPT, EMPTY_APR1, EMPTY_SHA]);
        for user in ["empty", "emptymd5", "emptysha"] {
            assert!(users.verify(user, b""), "{user}");
            assert!(!users.verify(user, b" "), "{user}");
            assert!(!users.verify(user, b"\0"), "{user}");
            assert!(!users.verify(user, b"\0\0"), "{user}");
        }
    }

    #[test]
    fn passwords_are_bytes() {
        let users = file(&[COLONS_APR1, BINARY_APR1, LONG_APR1, LONG_BCRYPT]);
        assert!(users.verify("utf8", "pässwörd:with:colons".as_bytes()));
        assert!(users.verify("binary", b"pa\xffss"));
        assert!(!users.verify("binary", "pa\u{ff}ss".as_bytes()));
        let long = [b'a'; 100];
        assert!(users.verify("long", &long));
        assert!(!users.verify("long", &long[..99]));
        // bcrypt looks at the first 72 bytes only, as htpasswd and crypt() do.
        assert!(users.verify("longb", &long));
        assert!(users.verify("longb", &long[..72]));
        assert!(!users.verify("longb", &long[..71]));
    }

    #[test]
    fn md5_crypt_matches_known_vectors() {
        // From the htpasswd fixtures: salt and digest as written.
        assert_eq!(
            &md5_crypt(b"builder", b"$apr1$", b"FODc/SLr"),
            b"9/uWBdLAuEFW8XNBSmwrB0"
        );
        assert_eq!(
            &md5_crypt(b"hello", b"$1$", b"abcdefgh"),
            b"rwnEbRiN0agqVgZBovWNQ/"
        );
        assert_eq!(&md5_crypt(b"", b"$apr1$", b"raS/f2gS"), b".epJq6dJTHtWwoIASrbjt/");
    }

    #[test]
    fn comments_blank_lines_crlf_and_comment_fields() {
        let text =
            format!("# users\r\n\r\n{ALICE_BCRYPT}\r\n   \n  # indented comment\n{BOB_APR1}:a comment\n");
        let users = Htpasswd::parse(&format!("\u{feff}{text}")).unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.verify("alice", b"wonderland"));
        assert!(users.verify("bob", b"builder"));
    }

    #[test]
    fn first_entry_of_a_user_wins() {
        let users = file(&[BOB_APR1, "bob:{SHA}X9zPCbMFzMPlYX7+7QubnxKI7iM="]);
        assert_eq!(users.len(), 1);
        assert!(users.verify("bob", b"builder"));
        assert!(!users.verify("bob", b"singer"));
    }

    fn line_error(text: &str) -> (usize, String) {
        match Htpasswd::parse(text) {
            Err(HtpasswdError::Line { line, why }) => (line, why),
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let (line, why) = line_error(&format!("# c\n{ALICE_BCRYPT}\n\nno-colon-here\n"));
        assert_eq!(line, 4);
        assert!(why.contains("colon"), "{why}");
        assert_eq!(line_error(":$apr1$FODc/SLr$9/uWBdLAuEFW8XNBSmwrB0").0, 1);
        assert!(line_error("bob:").1.contains("empty password hash"));
        assert!(line_error("bob:$apr1$FODc/SLr$short")
            .1
            .contains("malformed $apr1$"));
        assert!(line_error("bob:$apr1$toolongsalt$9/uWBdLAuEFW8XNBSmwrB0")
            .1
            .contains("malformed"));
        assert!(line_error("bob:$apr1$nodollar").1.contains("malformed"));
        assert!(line_error("carol:{SHA}notbase64!").1.contains("malformed {SHA}"));
        assert!(line_error("carol:{SHA}AAAA").1.contains("20 bytes"));
        assert!(line_error("alice:$2y$05$short").1.contains("malformed bcrypt"));
        assert!(
            line_error("alice:$2y$5$spnySUnK2sKr7NuzQx6un.F/kkoEHFL4IM04asNGKYGmHRnoNpk3e")
                .1
                .contains("malformed bcrypt")
        );
        assert!(
            line_error("alice:$2y$03$spnySUnK2sKr7NuzQx6un.F/kkoEHFL4IM04asNGKYGmHRnoNpk3e")
                .1
                .contains("malformed bcrypt")
        );
        // A salt whose last character carries bits bcrypt's base64 cannot hold.
        assert!(
            line_error("alice:$2y$05$spnySUnK2sKr7NuzQx6un/F/kkoEHFL4IM04asNGKYGmHRnoNpk3e")
                .1
                .contains("malformed bcrypt")
        );
    }

    #[test]
    fn unsupported_hashes_are_refused_with_a_way_out() {
        let (line, why) = line_error(&format!("{ALICE_BCRYPT}\n{DES}"));
        assert_eq!(line, 2);
        assert_eq!(why, "unsupported hash (crypt); re-create it with htpasswd -B");
        assert_eq!(
            line_error(PLAIN).1,
            "unsupported hash (plain text); re-create it with htpasswd -B"
        );
        assert!(line_error("erin:{PLAIN}secret").1.contains("(plain text)"));
        assert!(line_error("x:{SSHA}abcd").1.contains("({SSHA})"));
        assert!(line_error(
            "x:$6$abc$34O8oRzThM7onc3iRQAcdWBv2H/sMGJlnsnG6uIkasTEvQkG9apXR/oBhPpqIepkul8wg.bf4wxoel67eJND."
        )
        .1
        .contains("$6$"));
        assert!(line_error("x:$5$abc$def").1.contains("$5$"));
        assert!(
            line_error("x:$2x$05$spnySUnK2sKr7NuzQx6un.F/kkoEHFL4IM04asNGKYGmHRnoNpk3e")
                .1
                .contains("$2x$")
        );
        assert!(line_error("x:$argon2id$v=19$m=65536")
            .1
            .contains("unknown format"));
        // The hash itself never appears in an error.
        assert!(!line_error("erin:hunter2").1.contains("hunter2"));
        assert!(!line_error(DES).1.contains("eRe4P8745xhWI"));
    }

    #[test]
    fn bcrypt_cost_is_bounded() {
        assert_eq!(file(&[MAX_COST]).len(), 1);
        let (line, why) = line_error(&format!("{ALICE_BCRYPT}\n\n{SLOW}"));
        assert_eq!(line, 3);
        assert!(why.contains("bcrypt cost 15 is above the limit of 14"), "{why}");
        assert!(why.contains("seconds of CPU"), "{why}");
    }

    #[test]
    fn no_users_is_empty() {
        assert_eq!(Htpasswd::parse(""), Err(HtpasswdError::Empty));
        assert_eq!(Htpasswd::parse("# only comments\n\n"), Err(HtpasswdError::Empty));
        assert_eq!(Htpasswd::from_pairs([]), Err(HtpasswdError::Empty));
    }

    #[test]
    fn auth_map_pairs() {
        let users = Htpasswd::from_pairs([
            (
                "alice",
                "$2y$05$spnySUnK2sKr7NuzQx6un.F/kkoEHFL4IM04asNGKYGmHRnoNpk3e\n",
            ),
            ("bob", "$apr1$FODc/SLr$9/uWBdLAuEFW8XNBSmwrB0"),
        ])
        .unwrap();
        assert!(users.verify("alice", b"wonderland"));
        assert!(users.verify("bob", b"builder"));
        let err = Htpasswd::from_pairs([
            ("bob", "$apr1$FODc/SLr$9/uWBdLAuEFW8XNBSmwrB0"),
            ("dave", "eRe4P8745xhWI"),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: user \"dave\": unsupported hash (crypt); re-create it with htpasswd -B"
        );
        assert!(Htpasswd::from_pairs([("a:b", "{SHA}X9zPCbMFzMPlYX7+7QubnxKI7iM=")]).is_err());
        assert!(Htpasswd::from_pairs([("", "{SHA}X9zPCbMFzMPlYX7+7QubnxKI7iM=")]).is_err());
    }

    #[test]
    fn debug_never_shows_hashes() {
        let users = file(&[BOB_APR1, CAROL_SHA]);
        let shown = format!("{users:?}");
        assert!(
            shown.contains("bob") && shown.contains("apr1") && shown.contains("sha1"),
            "{shown}"
        );
        assert!(!shown.contains("FODc"), "{shown}");
    }

    #[test]
    fn valid_credentials_pass() {
        let a = auth(&[ALICE_BCRYPT, BOB_APR1, CAROL_SHA, EMPTY_SHA, COLONS_APR1]);
        assert!(a.apply(&basic(b"alice:wonderland")).is_none());
        assert!(a.apply(&basic(b"bob:builder")).is_none());
        assert!(a.apply(&basic(b"carol:singer")).is_none());
        assert!(a.apply(&basic(b"emptysha:")).is_none());
        // The password is everything after the first colon.
        assert!(a.apply(&basic("utf8:pässwörd:with:colons".as_bytes())).is_none());
        // Scheme in any case, extra spaces, padding left off.
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("bAsIc   Y2Fyb2w6c2luZ2Vy  "),
        );
        assert!(a.apply(&h).is_none());
        let mut h = HeaderMap::new();
        // base64("bob:builder") is "Ym9iOmJ1aWxkZXI=".
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic Ym9iOmJ1aWxkZXI"),
        );
        assert!(a.apply(&h).is_none());
    }

    fn assert_challenged(resp: Option<LocalResponse>) {
        let resp = resp.expect("a 401");
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"test auth\"");
        assert_eq!(resp.headers()["server"], "gantry");
    }

    #[test]
    fn missing_wrong_or_malformed_credentials_get_the_challenge() {
        let a = auth(&[ALICE_BCRYPT, BOB_APR1, CAROL_SHA]);
        assert_challenged(a.apply(&HeaderMap::new()));
        assert_challenged(a.apply(&basic(b"alice:Wonderland")));
        assert_challenged(a.apply(&basic(b"mallory:wonderland")));
        assert_challenged(a.apply(&basic(b"carol:")));
        assert_challenged(a.apply(&basic(b":singer")));
        assert_challenged(a.apply(&basic(b"carolsinger")));
        assert_challenged(a.apply(&basic(b"")));
        for bad in [
            "Basic",
            "Basic ",
            "Basic    ",
            "Basic !!!not-base64!!!",
            "Basic Y2Fyb2w6c2luZ2Vy=====",
            "Bearer Y2Fyb2w6c2luZ2Vy",
            "BasicY2Fyb2w6c2luZ2Vy",
            "Y2Fyb2w6c2luZ2Vy",
            "Digest username=\"carol\"",
            "",
        ] {
            let mut h = HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, HeaderValue::from_static(bad));
            assert_challenged(a.apply(&h));
        }
        // Two Authorization headers, even if both are right.
        let mut h = basic(b"carol:singer");
        h.append(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic Y2Fyb2w6c2luZ2Vy"),
        );
        assert_challenged(a.apply(&h));
    }

    #[test]
    fn non_utf8_is_refused_without_panic() {
        let a = auth(&[CAROL_SHA, BINARY_APR1]);
        // A user name that is not UTF-8.
        assert_challenged(a.apply(&basic(b"car\xffol:singer")));
        // A password that is not UTF-8 is just bytes: right for "binary", wrong for "carol".
        assert!(a.apply(&basic(b"binary:pa\xffss")).is_none());
        assert_challenged(a.apply(&basic(b"carol:sing\xff\xfe")));
        // A header value with bytes that are not ASCII.
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Basic \xff\xfe\xfd").unwrap(),
        );
        assert_challenged(a.apply(&h));
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_bytes(b"\xffasic Y2Fyb2w6c2luZ2Vy").unwrap(),
        );
        assert_challenged(a.apply(&h));
    }

    #[test]
    fn realms_with_quotes_or_controls_are_refused() {
        let users = Arc::new(file(&[CAROL_SHA]));
        assert_eq!(
            BasicAuth::new("a\"b", users.clone()),
            Err(HtpasswdError::BadRealm)
        );
        assert_eq!(
            BasicAuth::new("a\\b", users.clone()),
            Err(HtpasswdError::BadRealm)
        );
        assert_eq!(
            BasicAuth::new("a\nb", users.clone()),
            Err(HtpasswdError::BadRealm)
        );
        assert!(BasicAuth::new("Authentication Required - foo", users).is_ok());
    }

    #[test]
    fn constant_time_eq_compares_everything() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"xbc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
