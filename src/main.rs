//! Entry point: parse arguments, set up logging, bind, hand over to `segserve::run`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use segserve::cli::{Cli, Command, LogFormat};
use segserve::config::ServeConfig;
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn main() -> anyhow::Result<ExitCode> {
    segserve::alloc::tune();
    // Before any thread exists: ONNX Runtime reads this when the library loads.
    std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_tracing(args.log_format, "info,ort=warn");
            let config = ServeConfig::try_from(args)?;
            runtime()?.block_on(async move {
                let listener = tokio::net::TcpListener::bind(config.addr)
                    .await
                    .with_context(|| format!("cannot listen on {}", config.addr))?;
                // The bound address, not the configured one: with --port 0 the OS picks it.
                let addr = listener.local_addr().unwrap_or(config.addr);
                tracing::info!(%addr, "listening");
                segserve::run(config, listener, segserve::shutdown::shutdown_signal()).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        // The offline commands log warnings only: stdout carries their results.
        Command::Predict(args) => {
            init_tracing(LogFormat::Text, "warn,ort=error");
            let summary = runtime()?.block_on(segserve::cli::predict(args))?;
            eprintln!("segserve predict: {summary}");
            Ok(if summary.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Models(args) => {
            init_tracing(LogFormat::Text, "warn,ort=error");
            Ok(if segserve::cli::models(args)? {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
