//! `run`: the server's life from start to exit. Models load in the background (readiness
//! stays off until they are warm); the router is served on the main port, and on the probe
//! and gRPC ports when set; a shutdown signal drains, a failed load ends the process.

use std::future::Future;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::api::{self, AppState};
use crate::config::ServeConfig;
use crate::{budget, metrics, models};

/// Serves on `listener` until `shutdown` resolves, then drains: readiness goes 503 at once,
/// the listener stays open for `shutdown_drain` (so load balancers stop routing here; answers
/// then carry `Connection: close`), then closes, and in-flight requests get
/// `shutdown_timeout` to finish. A model that fails to load closes the listener at once and
/// is the error returned.
pub async fn run(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    budget::set_audit(config.audit_memory);
    let state = AppState::new(config.clone(), metrics::handle());
    tracing::info!(
        memory_budget_mib = state.budget.limit() >> 20,
        "memory budget for requests"
    );
    let (failed_tx, failed_rx) = oneshot::channel::<anyhow::Error>();
    let loader = state.clone();
    tokio::spawn(async move {
        match models::load(&loader.config.runtime).await {
            Ok(reg) => {
                let _ = loader.models.set(reg);
                loader.lifecycle.loaded();
            }
            Err(e) => {
                let _ = failed_tx.send(e);
            }
        }
    });
    let upkeep = metrics::spawn_upkeep(state.metrics.clone());

    // `closing` turns true when the listeners must stop accepting: after the drain delay
    // of a shutdown, or at once when loading failed (the task's result says which).
    let (closing_tx, closing) = watch::channel(false);
    let lifecycle = state.lifecycle.clone();
    let drain = config.shutdown_drain;
    let stopping = tokio::spawn(async move {
        let failed = tokio::select! {
            _ = shutdown => {
                lifecycle.drain();
                tracing::info!(drain_ms = drain.as_millis() as u64, "shutting down: readiness off, draining");
                tokio::time::sleep(drain).await;
                None
            }
            Ok(e) = failed_rx => {
                tracing::error!(error = %format!("{e:#}"), "startup failed");
                Some(e)
            }
        };
        let _ = closing_tx.send(true);
        tracing::info!("listener closed; waiting for in-flight requests");
        failed
    });
    let closed = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|c| *c).await;
    };

    let app = api::router(state.clone());
    let probes = match config.probe_addr {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on the probe port {addr}"))?;
            tracing::info!(%addr, "probes and metrics also served on their own port");
            let app = api::probe_router(state.clone());
            Some(tokio::spawn(api::server::serve_probes(
                l,
                app,
                std::future::pending(),
            )))
        }
        None => None,
    };
    let grpc = api::grpc::Gateway::new(state.clone());
    // The gRPC port is the main port twice over (its own connection caps): it stops
    // accepting when the main port does, and its calls finish under the same deadline.
    let second = match config.grpc_addr {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on the gRPC port {addr}"))?;
            tracing::info!(%addr, "gRPC (and the HTTP API) also served on its own port");
            Some(tokio::spawn(api::server::serve(
                l,
                app.clone(),
                grpc.clone(),
                config.connections,
                config.max_header_bytes,
                closed(closing.clone()),
            )))
        }
        None => None,
    };
    let server = api::server::serve(
        listener,
        app,
        grpc,
        config.connections,
        config.max_header_bytes,
        closed(closing.clone()),
    );
    let grace = config.shutdown_timeout;
    let deadline = async move {
        closed(closing).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        _ = server => {}
        _ = deadline => tracing::warn!(timeout_ms = grace.as_millis() as u64, "in-flight requests did not finish in time; exiting anyway"),
    }
    upkeep.abort();
    for task in [second, probes].into_iter().flatten() {
        task.abort();
    }
    // Both branches above end only after `closing` was sent, and the task ends right
    // after sending it.
    if let Some(e) = stopping.await.context("the shutdown task failed")? {
        return Err(e);
    }
    tracing::info!("shutdown complete");
    Ok(())
}
