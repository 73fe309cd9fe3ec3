//! Entry point: parse arguments, set up logging, bind, hand over to `segserve::run`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use segserve::cli::{Cli, Command, LogFormat};
use segserve::config::ServeConfig;
use segserve::telemetry::{self, OtlpSettings};

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
            let otlp = OtlpSettings::from_flags(args.otlp_endpoint.clone(), args.otlp_protocol);
            let json = args.log_format == LogFormat::Json;
            // The gRPC exporter's channel lives on the runtime: made inside it, flushed (when
            // `telemetry` drops) before it shuts down.
            let rt = runtime()?;
            let telemetry = {
                let _in_runtime = rt.enter();
                telemetry::init(json, "info,ort=warn", otlp.as_ref())?
            };
            let config = ServeConfig::try_from(args)?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(config.addr)
                    .await
                    .with_context(|| format!("cannot listen on {}", config.addr))?;
                // The bound address, not the configured one: with --port 0 the OS picks it.
                let addr = listener.local_addr().unwrap_or(config.addr);
                tracing::info!(%addr, "listening");
                segserve::run(config, listener, segserve::shutdown::shutdown_signal()).await
            })?;
            drop(telemetry);
            Ok(ExitCode::SUCCESS)
        }
        // The offline commands log warnings only: stdout carries their results.
        Command::Predict(args) => {
            let _telemetry = telemetry::init(false, "warn,ort=error", None)?;
            let summary = runtime()?.block_on(segserve::cli::predict(args))?;
            eprintln!("segserve predict: {summary}");
            Ok(if summary.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Models(args) => {
            let _telemetry = telemetry::init(false, "warn,ort=error", None)?;
            Ok(if segserve::cli::models(args)? {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
