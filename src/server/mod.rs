//! Server wiring: configuration -> store (migrated, interrupted jobs recovered) -> engine ->
//! worker -> router -> serve, and a graceful stop. Nothing but `main` imports this module.

mod client;
pub mod config;
mod error;
mod handlers;
mod rate_limit;
mod router;
mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use leptos::prelude::{get_configuration, LeptosOptions};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

pub use config::Config;
pub use state::AppState;

use crate::api::ModelSummary;
use crate::jobs::{self, JobService, JobStore, Painter, QueueLimits, SqliteStore, Worker};

/// The binary's entry: reads the configuration, binds the site address and serves until
/// SIGINT or SIGTERM.
pub async fn main() -> anyhow::Result<()> {
    let config = Config::load()?;
    init_logging(config.log_json);
    let leptos_options = get_configuration(Some("Leptos.toml")).context("reading Leptos.toml")?.leptos_options;
    let listener = TcpListener::bind(leptos_options.site_addr)
        .await
        .with_context(|| format!("binding {}", leptos_options.site_addr))?;
    let (models, painter): (Vec<ModelSummary>, Box<dyn Painter>) = (
        jobs::offered_models(&config.models_dir, &config.models)?,
        Box::new(jobs::EnginePainter::new(
            config.models_dir.clone(),
            config.device()?,
        )),
    );
    run(config, leptos_options, listener, models, painter, shutdown_signal()).await
}

/// Runs the whole server on `listener` until `shutdown` resolves, then stops gracefully:
/// no new jobs, event streams end, the running job finishes or is re-queued.
pub async fn run(
    config: Config,
    leptos_options: LeptosOptions,
    listener: TcpListener,
    models: Vec<ModelSummary>,
    painter: Box<dyn Painter>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        models.iter().any(|m| m.name == config.default_model),
        "the default model {:?} is not among the offered models ({})",
        config.default_model,
        models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    let store = SqliteStore::open(&config.data_dir).await?;
    let recovery = store.recover_interrupted(jobs::now_ms()).await.context("recovering interrupted jobs")?;
    if recovery != Default::default() {
        tracing::warn!(requeued = recovery.requeued, failed = recovery.failed, "recovered jobs interrupted by the last stop");
    }
    let service = JobService::new(
        Arc::new(store),
        QueueLimits {
            max_queued: config.max_queued,
            max_active_per_client: config.max_active_per_client,
            history_len: config.history_len,
        },
        models,
        config.default_model.clone(),
    );
    let worker = Worker::spawn(
        service.clone(),
        painter,
        config.default_model.clone(),
        Duration::from_secs(config.job_timeout_secs),
        tokio::runtime::Handle::current(),
    )?;
    let state = AppState { leptos_options, jobs: service.clone(), metrics: metrics_handle() };
    let app = router::app(state, &config);

    let addr = listener.local_addr()?;
    // Tests and scripts read this line to find an ephemeral port.
    tracing::info!("easel listening on http://{addr}");
    let stopping = service.clone();
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: refusing new jobs");
            stopping.stop_accepting();
        })
        .await
        .context("serving")?;
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    tokio::task::spawn_blocking(move || worker.shutdown(grace)).await?;
    tracing::info!("stopped");
    Ok(())
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colours only for a person at a terminal, not in files, pipes or CI logs.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// The Prometheus recorder, installed once per process.
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("easel_step_seconds".into()),
                    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
                )
                .expect("valid buckets")
                .build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}
