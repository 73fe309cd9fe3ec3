//! Entry point: parse arguments, set up logging, bind, hand over to `segserve::run`.

use anyhow::Context;
use clap::Parser;
use segserve::config::{Cli, Command, LogFormat, ServeConfig};
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

fn main() -> anyhow::Result<()> {
    // Before any thread exists: ONNX Runtime reads this when the library loads.
    std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_tracing(args.log_format);
            let config = ServeConfig::try_from(args)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(config.addr)
                    .await
                    .with_context(|| format!("cannot listen on {}", config.addr))?;
                // The bound address, not the configured one: with --port 0 the OS picks it.
                let addr = listener.local_addr().unwrap_or(config.addr);
                tracing::info!(%addr, "listening");
                segserve::run(config, listener, segserve::shutdown::shutdown_signal()).await
            })
        }
    }
}
