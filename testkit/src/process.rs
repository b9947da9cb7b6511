//! External tools the end-to-end tests run beside Gantry (Prometheus, Chromium, an OpenTelemetry
//! Collector): where to find them, and a guard that kills one when the test ends.

use std::{path::PathBuf, process::Child};

/// A child process killed (and reaped) when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The tool's path: `$env_var`, else `name` on `PATH`. `None` (after saying why) when it is absent
/// and tools are not required; a panic when `GANTRY_REQUIRE_TOOLS` is set. The hint on how to
/// get it is `apt-get install <name>` (see [`tool_or`] for another).
pub fn tool(name: &str, env_var: &str) -> Option<PathBuf> {
    tool_or(name, env_var, &format!("apt-get install {name}"))
}

/// Like [`tool`], with `how` saying how to get the tool (a build script, say).
pub fn tool_or(name: &str, env_var: &str, how: &str) -> Option<PathBuf> {
    let found = std::env::var_os(env_var).map(PathBuf::from).or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
    });
    match found {
        Some(path) => Some(path),
        None if std::env::var_os("GANTRY_REQUIRE_TOOLS").is_some() => {
            panic!(
                "{name} is required (GANTRY_REQUIRE_TOOLS is set) but not on PATH nor in {env_var} ({how})"
            )
        }
        None => {
            eprintln!("SKIPPED: {name} is not installed ({how}); set GANTRY_REQUIRE_TOOLS=1 to fail instead");
            None
        }
    }
}
