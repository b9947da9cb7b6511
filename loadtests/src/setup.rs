//! One-time setup: tools (apt-get), oha (cargo install, only for the handshake scenarios), the
//! Gantry release build, the shared certificate, and what the report says about the machine.

use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::config::CertFiles;
use crate::procs::{last_lines, run_bounded};
use crate::report::Machine;

/// `name` on PATH (plus the sbin directories, where Debian puts nginx and HAProxy).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    env::split_paths(&path)
        .chain(extra)
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).map(|m| m.is_file()).unwrap_or(false))
}

/// Whether the runner runs as root (reads the effective uid from /proc; no unsafe).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|v| v.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Paths of the external tools.
#[derive(Debug, Clone)]
pub struct Tools {
    pub nginx: PathBuf,
    pub haproxy: PathBuf,
    pub wrk: PathBuf,
    pub h2load: PathBuf,
    pub openssl: PathBuf,
}

/// (binary, Debian packages to try in order).
const APT_TOOLS: [(&str, &[&str]); 6] = [
    ("nginx", &["nginx-light", "nginx"]),
    ("haproxy", &["haproxy"]),
    ("wrk", &["wrk"]),
    ("h2load", &["nghttp2-client"]),
    ("openssl", &["openssl"]),
    ("taskset", &["util-linux"]),
];

/// Finds the tools, installing missing ones with apt-get unless `no_install`.
pub fn ensure_tools(no_install: bool, log_dir: &Path) -> Result<Tools> {
    let missing: Vec<(&str, &[&str])> = APT_TOOLS
        .into_iter()
        .filter(|(bin, _)| which(bin).is_none())
        .collect();
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|m| m.0).collect();
        if no_install {
            bail!("missing tools {names:?} and --no-install given");
        }
        if !is_root() {
            bail!(
                "missing tools {names:?}: run as root, or install them: apt-get install nginx-light haproxy wrk nghttp2-client"
            );
        }
        eprintln!("loadtests: installing {names:?} with apt-get (once)…");
        let mut updated = false;
        for (bin, pkgs) in &missing {
            let mut done = false;
            for pkg in pkgs.iter() {
                for attempt in 0..2 {
                    if attempt == 1 {
                        if updated {
                            break;
                        }
                        apt(&["update", "-q"], log_dir)?;
                        updated = true;
                    }
                    if apt(&["install", "-y", "-q", "--no-install-recommends", pkg], log_dir).is_ok() {
                        done = which(bin).is_some();
                        break;
                    }
                }
                if done {
                    break;
                }
            }
            if !done {
                bail!(
                    "could not install {bin} (tried {pkgs:?}); see {}",
                    log_dir.join("apt.log").display()
                );
            }
        }
    }
    let get = |n: &str| which(n).with_context(|| format!("{n} not found after install"));
    Ok(Tools {
        nginx: get("nginx")?,
        haproxy: get("haproxy")?,
        wrk: get("wrk")?,
        h2load: get("h2load")?,
        openssl: get("openssl")?,
    })
}

fn apt(args: &[&str], log_dir: &Path) -> Result<()> {
    let mut cmd = Command::new("apt-get");
    // Wait for another apt/dpkg (up to 5 minutes) instead of failing at once.
    cmd.args(["-o", "DPkg::Lock::Timeout=300"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive");
    let out = run_bounded("apt-get", cmd, Duration::from_secs(900))?;
    let log = format!("$ apt-get {}\n{}\n{}\n", args.join(" "), out.stdout, out.stderr);
    let path = log_dir.join("apt.log");
    let prev = fs::read_to_string(&path).unwrap_or_default();
    let _ = fs::write(&path, prev + &log);
    if !out.status.success() {
        bail!(
            "apt-get {} failed: {}",
            args.join(" "),
            last_lines(&out.stderr, 3)
        );
    }
    Ok(())
}

/// oha for the handshake scenarios: on PATH or in ~/.cargo/bin, else `cargo install oha --locked`
/// (about 5 minutes, once). `Err` says why the scenarios are skipped.
pub fn ensure_oha(no_install: bool, log_dir: &Path) -> Result<PathBuf, String> {
    let cargo_bin = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|d| d.join("bin/oha"));
    if let Some(p) = which("oha").or_else(|| cargo_bin.clone().filter(|p| p.is_file())) {
        return Ok(p);
    }
    if no_install {
        return Err("oha is not installed and --no-install was given".into());
    }
    eprintln!("loadtests: installing oha with `cargo install oha --locked` (about 5 minutes, once)…");
    let mut cmd = Command::new(cargo());
    cmd.args(["install", "oha", "--locked"]);
    match run_bounded("cargo install oha", cmd, Duration::from_secs(1800)) {
        Ok(out) => {
            let _ = fs::write(
                log_dir.join("oha-install.log"),
                format!("{}\n{}", out.stdout, out.stderr),
            );
            if !out.status.success() {
                return Err(format!(
                    "cargo install oha failed: {}",
                    last_lines(&out.stderr, 3)
                ));
            }
        }
        Err(e) => return Err(format!("cargo install oha: {e:#}")),
    }
    which("oha")
        .or_else(|| cargo_bin.filter(|p| p.is_file()))
        .ok_or_else(|| "cargo install oha succeeded but no oha binary was found".into())
}

fn cargo() -> PathBuf {
    env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

/// The workspace root and cargo's target directory (`cargo metadata`; falls back to the source tree).
pub fn workspace_dirs() -> (PathBuf, PathBuf) {
    let fallback_root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut cmd = Command::new(cargo());
    cmd.args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(&fallback_root);
    if let Ok(out) = run_bounded("cargo metadata", cmd, Duration::from_secs(60)) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&out.stdout) {
            let root = v
                .get("workspace_root")
                .and_then(|x| x.as_str())
                .map(PathBuf::from);
            let target = v
                .get("target_directory")
                .and_then(|x| x.as_str())
                .map(PathBuf::from);
            if let (Some(r), Some(t)) = (root, target) {
                return (r, t);
            }
        }
    }
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| fallback_root.join("target"));
    (fallback_root, target)
}

/// A gantry binary that serves `--manifests`, and which optional flags it has.
#[derive(Debug, Clone)]
pub struct GantryBin {
    pub path: PathBuf,
    /// `--access-log` exists (we pass `--access-log=false`).
    pub access_log_flag: bool,
}

/// Builds Gantry (`cargo build --release -p gantry`) unless told not to, and checks that the binary
/// serves `--manifests`. `Err` says why Gantry is "not available".
pub fn gantry(
    root: &Path,
    target: &Path,
    no_build: bool,
    bin: Option<&Path>,
    log_dir: &Path,
) -> Result<GantryBin, String> {
    let path = match bin {
        Some(b) => b.to_path_buf(),
        None => {
            if !no_build {
                eprintln!("loadtests: cargo build --release -p gantry …");
                let mut cmd = Command::new(cargo());
                cmd.args(["build", "--release", "-p", "gantry"]).current_dir(root);
                let out = run_bounded("cargo build gantry", cmd, Duration::from_secs(3600))
                    .map_err(|e| format!("cargo build --release -p gantry: {e:#}"))?;
                let _ = fs::write(log_dir.join("gantry-build.log"), &out.stderr);
                if !out.status.success() {
                    let errors: Vec<&str> = out
                        .stderr
                        .lines()
                        .filter(|l| l.starts_with("error"))
                        .take(3)
                        .collect();
                    return Err(format!(
                        "cargo build --release -p gantry failed: {} (log: {})",
                        if errors.is_empty() {
                            last_lines(&out.stderr, 3)
                        } else {
                            errors.join("; ")
                        },
                        log_dir.join("gantry-build.log").display()
                    ));
                }
            }
            target.join("release/gantry")
        }
    };
    if !path.is_file() {
        return Err(format!("no gantry binary at {}", path.display()));
    }
    let mut cmd = Command::new(&path);
    cmd.arg("--help");
    let help = run_bounded("gantry --help", cmd, Duration::from_secs(20)).map_err(|e| format!("{e:#}"))?;
    let text = format!("{}{}", help.stdout, help.stderr);
    check_gantry_help(&text).map(|access_log_flag| GantryBin {
        path,
        access_log_flag,
    })
}

/// `Ok(has --access-log)` when the help text shows the flags the runner needs.
pub fn check_gantry_help(help: &str) -> Result<bool, String> {
    let missing: Vec<&str> = ["--manifests", "--http-addr", "--https-addr", "--admin-addr"]
        .into_iter()
        .filter(|f| !help.contains(f))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "gantry --help does not list {}: not serving manifests yet",
            missing.join(", ")
        ));
    }
    Ok(help.contains("--access-log"))
}

/// The shared certificate (ECDSA P-256, SAN localhost and 127.0.0.1), generated once with openssl.
pub fn ensure_cert(openssl: &Path, dir: &Path) -> Result<CertFiles> {
    fs::create_dir_all(dir)?;
    let files = CertFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        combined: dir.join("combined.pem"),
    };
    if !(files.cert.is_file() && files.key.is_file()) {
        let mut cmd = Command::new(openssl);
        cmd.args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "3650",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&files.key)
        .arg("-out")
        .arg(&files.cert);
        let out = run_bounded("openssl req", cmd, Duration::from_secs(60))?;
        if !out.status.success() {
            bail!("openssl req failed: {}", last_lines(&out.stderr, 3));
        }
    }
    let combined = fs::read_to_string(&files.cert)? + &fs::read_to_string(&files.key)?;
    fs::write(&files.combined, combined)?;
    Ok(files)
}

fn first_line_of(program: &Path, args: &[&str], pick: impl Fn(&str) -> bool) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args);
    match run_bounded("version", cmd, Duration::from_secs(20)) {
        Ok(o) => format!("{}\n{}", o.stdout, o.stderr)
            .lines()
            .find(|l| pick(l))
            .unwrap_or("")
            .trim()
            .to_string(),
        Err(_) => String::new(),
    }
}

/// What the report says about the machine and the tools.
pub fn machine(tools: &Tools, oha: Option<&Path>, root: &Path) -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let os_release = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let mut t = BTreeMap::new();
    t.insert(
        "nginx".into(),
        first_line_of(&tools.nginx, &["-v"], |l| l.contains("nginx/")).replace("nginx version: ", ""),
    );
    t.insert("haproxy".into(), {
        let l = first_line_of(&tools.haproxy, &["-v"], |l| l.contains("version"));
        l.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
            .replace(" version", "")
    });
    t.insert(
        "wrk".into(),
        first_line_of(&tools.wrk, &["-v"], |l| l.starts_with("wrk"))
            .split(" [")
            .next()
            .unwrap_or("")
            .to_string(),
    );
    t.insert(
        "h2load".into(),
        first_line_of(&tools.h2load, &["--version"], |l| l.contains("nghttp2")),
    );
    if let Some(oha) = oha {
        t.insert(
            "oha".into(),
            first_line_of(oha, &["--version"], |l| l.starts_with("oha")),
        );
    }
    let mut git = Command::new("git");
    git.args(["rev-parse", "--short", "HEAD"]).current_dir(root);
    Machine {
        cpus: cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count()
            .max(1),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_default(),
        mem_total_kb: meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0),
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        os: os_release
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .unwrap_or("")
            .trim_matches('"')
            .to_string(),
        tools: t
            .into_iter()
            .filter(|(_, v): &(String, String)| !v.is_empty())
            .collect(),
        gantry_commit: run_bounded("git", git, Duration::from_secs(10))
            .map(|o| o.stdout.trim().to_string())
            .unwrap_or_default(),
    }
}

/// UTC time of day as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, no date crate).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(secs)
}

pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days → civil date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_are_civil() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn gantry_help_must_list_the_flags_the_runner_passes() {
        let full = "Usage: gantry [OPTIONS]\n  --manifests <DIR>\n  --http-addr <ADDR>\n  --https-addr <ADDR>\n  --admin-addr <ADDR>\n  --access-log <BOOL>\n";
        assert_eq!(check_gantry_help(full), Ok(true));
        assert_eq!(
            check_gantry_help(&full.replace("  --access-log <BOOL>\n", "")),
            Ok(false)
        );
        assert!(check_gantry_help("Usage: gantry\n")
            .unwrap_err()
            .contains("--manifests"));
    }
}
