//! The `lossd` binary: parse the configuration, start tracing, serve.

use clap::Parser;
use lossd::config::{Command, Config};

/// mimalloc: a request allocates and frees a few dozen small blocks (hyper, axum, the decode,
/// the response), and mimalloc's thread-local free lists serve them with fewer instructions
/// than glibc's malloc (BENCHMARKS.md); it keeps freed memory for reuse, so the resident size
/// after large requests stays higher (docs/operations.md, Memory). See [`lossd::allocator`]
/// for why it is not the `mimalloc` crate's wrapper.
#[global_allocator]
static ALLOCATOR: lossd::allocator::Allocator = lossd::allocator::Allocator;

fn main() -> std::process::ExitCode {
    let config = Config::parse();
    match config.command {
        Some(Command::Healthcheck) => {
            return if lossd::healthcheck(config.addr) {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            };
        }
        Some(Command::Openapi) => {
            print!("{}", lossd::openapi::json());
            return std::process::ExitCode::SUCCESS;
        }
        Some(Command::Serve) | None => {}
    }
    // Kept until `main` returns, after `serve`: the lines still queued are written out then.
    let _log_guard = lossd::telemetry::init(config.log_format, &config.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lossd: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(config.addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(addr = %config.addr, error = %e, "cannot listen");
                return std::process::ExitCode::FAILURE;
            }
        };
        // The address bound, which differs from the one asked for when that had port 0.
        let addr = listener.local_addr().unwrap_or(config.addr);
        tracing::info!(%addr, "lossd listening");
        match lossd::serve(listener, config).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "server error");
                std::process::ExitCode::FAILURE
            }
        }
    })
}
