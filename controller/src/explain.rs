//! `gantry explain URL`: which Ingress, rule, path and policies serve a URL, and why each other
//! rule for that host did not match.
//!
//! The answer is the data plane's own (`gantry_proxy::admin::explain_url`, the same code as the
//! admin listener's `/debug/explain`), run on a snapshot translated from a folder of manifests, or
//! fetched from a running Gantry's admin listener. The JSON document is `/debug/explain`'s:
//!
//! ```json
//! { "host": "shop.example", "path": "/api/users", "matchedHost": "shop.example",
//!   "route": { "host", "path", "pathType", "ingress", "backend", "endpoints", "policies": [..] },
//!   "defaultBackend": false, "answer": "...",
//!   "notChosen": [ { "host", "path", "pathType", "ingress", "backend", "endpoints", "policies",
//!                    "why" } ] }
//! ```

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use gantry_proxy::admin::explain_request;
use serde_json::Value;

use crate::{
    check::translate_dir,
    cli::{Args, ExplainArgs, OutputFormat},
};

/// A route serves the URL.
pub const EXIT_SERVED: i32 = 0;
/// Nothing serves it: a request would get 404.
pub const EXIT_NOT_SERVED: i32 = 1;
/// The question could not be answered (usage, I/O).
pub const EXIT_ERROR: i32 = 2;

/// Runs `gantry explain`; returns the exit status.
pub fn run(args: &Args, explain: &ExplainArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let request = match request_of(explain) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "gantry explain: {e}");
            return EXIT_ERROR;
        }
    };
    let answer = match (&explain.manifests, explain.admin) {
        (Some(dir), _) => {
            let class = explain.ingress_class.as_deref().unwrap_or(&args.ingress_class);
            translate_dir(args, class, dir)
                .and_then(|t| explain_request(&t.snapshot, &explain.url, &request.0, &request.1))
        }
        (None, Some(admin)) => ask(admin, explain),
        (None, None) => Err("give --manifests DIR, or --admin HOST:PORT of a running Gantry".into()),
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(err, "gantry explain: {e}");
            return EXIT_ERROR;
        }
    };
    let written = match explain.output {
        OutputFormat::Json => writeln!(out, "{answer:#}"),
        OutputFormat::Text => write_text(&answer, out),
    };
    if let Err(e) = written {
        let _ = writeln!(err, "gantry explain: {e}");
        return EXIT_ERROR;
    }
    if answer["route"].is_null() {
        EXIT_NOT_SERVED
    } else {
        EXIT_SERVED
    }
}

/// The method and headers `--method` and `--header` give.
fn request_of(explain: &ExplainArgs) -> Result<(http::Method, http::HeaderMap), String> {
    let method = http::Method::from_bytes(explain.method.as_bytes())
        .map_err(|_| format!("--method {:?} is not a method", explain.method))?;
    let mut headers = http::HeaderMap::new();
    for h in &explain.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("--header {h:?}: expected NAME:VALUE"))?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("--header {h:?}: invalid name"))?;
        let value = http::HeaderValue::from_str(value.trim())
            .map_err(|_| format!("--header {h:?}: invalid value"))?;
        headers.append(name, value);
    }
    Ok((method, headers))
}

/// `GET /debug/explain?url=...` (with `method=` and `header=` as given) on a running Gantry's
/// admin listener.
fn ask(admin: SocketAddr, explain: &ExplainArgs) -> Result<Value, String> {
    let enc =
        |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    let mut query = format!("url={}&method={}", enc(&explain.url), enc(&explain.method));
    for h in &explain.headers {
        query.push_str(&format!("&header={}", enc(h)));
    }
    let request = format!("GET /debug/explain?{query} HTTP/1.0\r\nHost: {admin}\r\n\r\n");
    let timeout = Duration::from_secs(5);
    let io = |e: io::Error| format!("admin {admin}: {e}");
    let mut s = TcpStream::connect_timeout(&admin, timeout).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.write_all(request.as_bytes()).map_err(io)?;
    let mut response = Vec::new();
    // An explanation is small; 4 MiB bounds a confused peer.
    s.take(4 << 20).read_to_end(&mut response).map_err(io)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("admin {admin}: not an HTTP response"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("admin {admin} answered {status}: {}", body.trim()));
    }
    serde_json::from_str(body).map_err(|e| format!("admin {admin}: {e}"))
}

/// The answer for people.
pub fn write_text(a: &Value, out: &mut dyn Write) -> io::Result<()> {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    writeln!(out, "{}{}", s(&a["host"]), s(&a["path"]))?;
    match a["matchedHost"].as_str() {
        Some(h) => writeln!(out, "  host rule: {h}")?,
        None => writeln!(out, "  host rule: none matches this host")?,
    }
    let rule = |r: &Value| {
        let source = match r["source"].as_str() {
            Some(source) => source.to_string(),
            None => format!("Ingress {}", s(&r["ingress"])),
        };
        let conditions = match r["conditions"].as_str() {
            Some(c) if !c.is_empty() => format!(" when {c}"),
            _ => String::new(),
        };
        format!(
            "{} {}{conditions} ({source}) -> {} ({} endpoints)",
            s(&r["pathType"]),
            s(&r["path"]),
            s(&r["backend"]),
            r["endpoints"].as_u64().unwrap_or(0)
        )
    };
    let route = &a["route"];
    if route.is_null() {
        writeln!(out, "  served by: nothing: {}", s(&a["answer"]))?;
    } else {
        let via = if a["defaultBackend"].as_bool() == Some(true) {
            " (the default backend)"
        } else {
            ""
        };
        writeln!(out, "  served by: {}{via}", rule(route))?;
        let policies = route["policies"].as_array().cloned().unwrap_or_default();
        if policies.is_empty() {
            writeln!(out, "  policies: none")?;
        } else {
            writeln!(out, "  policies, in the order they apply:")?;
            for p in policies {
                writeln!(out, "    - {}", s(&p))?;
            }
        }
    }
    let others = a["notChosen"].as_array().cloned().unwrap_or_default();
    if !others.is_empty() {
        writeln!(out, "  not chosen:")?;
        for o in others {
            writeln!(out, "    - {} [{}]: {}", rule(&o), s(&o["host"]), s(&o["why"]))?;
        }
    }
    Ok(())
}
