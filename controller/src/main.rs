//! The `gantry` binary: parse flags, set up logging and the runtime, run.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use clap::Parser;
use gantry::cli::{Args, Command, LogFormat};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc malloc: the proxy allocates small, short-lived buffers per request,
/// where glibc's allocator cost about 5% of CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    no_transparent_huge_pages();
    let args = Args::parse();
    if let Some(Command::Check(check)) = &args.command {
        // No runtime and no logging: the report is the output.
        let code = gantry::check::run(
            &args,
            check,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        );
        std::process::exit(code);
    }
    if let Some(Command::Explain(explain)) = &args.command {
        let code = gantry::explain::run(
            &args,
            explain,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        );
        std::process::exit(code);
    }
    let filter = EnvFilter::try_from_env("GANTRY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    // The control plane (sources, translation, status, admin) runs here; traffic runs on the
    // worker threads that `app::run` starts, one single-threaded runtime each.
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime
        .worker_threads(1)
        .thread_name("gantry-control")
        .enable_all();
    runtime.build()?.block_on(gantry::app::run(args))?;
    Ok(())
}

/// Turns transparent huge pages off for this process (`prctl(PR_SET_THP_DISABLE)`; its later
/// page faults get 4 KiB pages).
///
/// mimalloc reserves its heap as one large committed region and, by default, asks the kernel for
/// huge pages there (`MADV_HUGEPAGE`; the `no_thp` feature leaves that out, and this covers hosts
/// whose THP setting is `always`). With 2 MiB pages, a page stays resident while any object on it
/// lives, so a heap of many small, long-lived objects (the object store and the translated routes)
/// costs far more than its size: 238 MiB resident at ready with 10,000 Ingresses against 199 MiB
/// with 4 KiB pages (`cluster_bench`), and 45 against 31 MiB for an idle proxy. Failing (a kernel
/// without the call) changes only that.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("gantry: could not turn transparent huge pages off: {e}");
    }
}
