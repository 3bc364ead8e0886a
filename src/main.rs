//! The `lossd` binary: parse the configuration, start tracing, serve.

use clap::Parser;
use lossd::config::{Command, Config, LogFormat};
use lossd::log::{BufferedLog, Fast, Style};
use tracing_subscriber::EnvFilter;

/// mimalloc: a request allocates and frees a few dozen small blocks (hyper, axum, the decode,
/// the response), and mimalloc's thread-local free lists take a seventh off the service's
/// instructions per small request against glibc's malloc, and large requests gain as well
/// (`BENCHMARKS.md`); it keeps freed memory for reuse, so the resident size after large
/// requests stays higher (README, "Memory").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    // The access log's lines are buffered and written by a thread of their own; the guard
    // writes out the rest when `main` returns.
    let (writer, _log_guard) = match BufferedLog::new(std::io::stdout()) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("lossd: cannot start the log writer: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Colours only for a terminal, not for a log file or a collector.
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    // The default formats' lines, written by lossd's own formatter (see `log::Fast`).
    let format = tracing_subscriber::fmt::format();
    match config.log_format {
        LogFormat::Json => fmt
            .json()
            .event_format(Fast::new(Style::Json, format.json()))
            .init(),
        LogFormat::Text => fmt.event_format(Fast::new(Style::Text, format)).init(),
    }
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
        tracing::info!(addr = %config.addr, "lossd listening");
        match lossd::serve(listener, config).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "server error");
                std::process::ExitCode::FAILURE
            }
        }
    })
}
