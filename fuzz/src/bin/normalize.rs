//! `normalize_path` and `normalize_host` on arbitrary input.
//!
//! Properties: never panic; an accepted value normalizes to itself again (idempotent); a
//! normalized path starts with '/'; a normalized path holds only ASCII; a normalized host has no
//! port, no uppercase and no trailing dot (unless it is a bracketed IPv6 literal).
use gantry_proxy::normalize::{normalize_host, normalize_path};

fn check_path(raw: &str) {
    let Ok(once) = normalize_path(raw) else { return };
    assert!(
        once.starts_with('/'),
        "normalize_path({raw:?}) = {once:?} does not start with '/'"
    );
    assert!(once.is_ascii(), "normalize_path({raw:?}) = {once:?} is not ASCII");
    match normalize_path(&once) {
        Ok(twice) => assert_eq!(
            once, twice,
            "normalize_path is not idempotent on {raw:?}: {once:?} then {twice:?}"
        ),
        Err(e) => panic!("normalize_path({raw:?}) = {once:?}, which is then refused: {e:?}"),
    }
}

fn check_host(raw: &str) {
    let Ok(once) = normalize_host(raw) else { return };
    assert!(
        !once.bytes().any(|b| b.is_ascii_uppercase()),
        "normalize_host({raw:?}) = {once:?} has uppercase"
    );
    if !once.starts_with('[') {
        assert!(
            !once.contains(':'),
            "normalize_host({raw:?}) = {once:?} kept a port"
        );
        assert!(
            !once.ends_with('.'),
            "normalize_host({raw:?}) = {once:?} ends with a dot"
        );
    }
    match normalize_host(&once) {
        Ok(twice) => assert_eq!(
            once, twice,
            "normalize_host is not idempotent on {raw:?}: {once:?} then {twice:?}"
        ),
        Err(e) => panic!("normalize_host({raw:?}) = {once:?}, which is then refused: {e:?}"),
    }
}

fn run(data: &[u8]) {
    // Every input is tried as a path and as a host, as &str when it is UTF-8 and lossily decoded.
    let lossy = String::from_utf8_lossy(data);
    if let Ok(s) = std::str::from_utf8(data) {
        check_path(s);
        check_host(s);
    }
    check_path(&lossy);
    check_host(&lossy);
    // As a request path would arrive: with a leading '/' always present.
    let rooted = format!("/{lossy}");
    check_path(&rooted);
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        run(data);
    });
}
