//! Server wiring: configuration -> store (SQLite migrated, or Redis) -> interrupted jobs
//! recovered -> engine -> worker -> router -> serve, and a graceful stop. A process is the site
//! with its worker, the site alone (`--no-worker`), or a worker alone (`easel worker`).
//! Nothing but `main` imports this module.

mod client;
pub mod config;
mod embedded;
mod error;
mod handlers;
mod listen;
mod openai;
mod openapi;
mod page_cache;
mod rate_limit;
mod router;
mod state;
mod streams;

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use leptos::prelude::{get_configuration, LeptosOptions};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

pub use config::{Config, Role};
pub use state::AppState;

use self::config::StoreKind;
use self::rate_limit::Limits;
use self::state::{MinFreeDisk, OpsState};
use crate::api::{ModelSummary, WebhookTargets};
use crate::webhooks;
use crate::jobs::{self, JobService, JobStore, Painter, QueueLimits, RedisSettings, RedisStore, SqliteStore, Worker, WorkerHandle};

/// The binary's entry: reads the configuration and runs this process's role (the site with its
/// worker, the site alone, or a worker alone) until SIGINT or SIGTERM.
pub async fn main() -> anyhow::Result<()> {
    let (config, role) = Config::load()?;
    init_logging(config.log_json);
    let paints = role == Role::Worker || config.worker;
    if config.default_model == embedded::DEFAULT_MODEL {
        match embedded::install_default_model(&config.models_dir) {
            Ok(true) => tracing::info!(dir = %config.models_dir.display(), "wrote the built-in model to the models folder"),
            Ok(false) => {}
            Err(e) => tracing::warn!("could not write the built-in model: {e:#}"),
        }
    }
    let models = jobs::offered_models(&config.models_dir, &config.models, paints)?;
    let painter: Box<dyn Painter> = Box::new(jobs::EnginePainter::new(config.models_dir.clone(), config.device()?));
    match role {
        Role::Worker => {
            let listener = TcpListener::bind(config.worker_addr)
                .await
                .with_context(|| format!("binding {}", config.worker_addr))?;
            run_worker(config, listener, models, painter, shutdown_signal()).await
        }
        Role::Web => {
            // Without a Leptos.toml (a copied binary) the built-in defaults and LEPTOS_* apply.
            let file = Path::new("Leptos.toml").is_file().then_some("Leptos.toml");
            let leptos_options = get_configuration(file).context("reading Leptos.toml")?.leptos_options;
            if file.is_none() && !embedded::has_site() {
                tracing::warn!("no Leptos.toml and no site inside the binary: run `cargo leptos build --release`");
            }
            let listener = TcpListener::bind(leptos_options.site_addr)
                .await
                .with_context(|| format!("binding {}", leptos_options.site_addr))?;
            run(config, leptos_options, listener, models, painter, shutdown_signal()).await
        }
    }
}

/// Runs the site on `listener` until `shutdown` resolves, with a worker unless `config.worker`
/// is off, then stops gracefully: no new jobs, event streams end, the running job finishes or
/// is re-queued.
pub async fn run(
    config: Config,
    leptos_options: LeptosOptions,
    listener: TcpListener,
    models: Vec<ModelSummary>,
    painter: Box<dyn Painter>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (service, limits) = open_jobs(&config, models).await?;
    if config.retention_secs > 0 {
        service.spawn_retention(Duration::from_secs(config.retention_secs));
    }
    if let Some(settings) = webhook_settings(&config)? {
        service.accept_webhooks(settings.targets.clone());
        webhooks::spawn(service.clone(), settings)?;
    }
    let worker = if config.worker {
        Some(start_worker(&config, &service, painter).await?)
    } else {
        // The workers are other processes; this one is ready when the store answers.
        service.set_web_ready();
        None
    };
    // A waiting image may stand in line behind others and then run up to its time limit.
    let openai_wait = Duration::from_secs(config.job_timeout_secs * 2 + 60);
    let min_free_disk = MinFreeDisk(config.min_free_disk_mb * 1024 * 1024);
    let streams = streams::Streams::new(
        service.clone(),
        streams::StreamLimits {
            per_client: config.sse_per_client,
            total: config.sse_total,
            lifetime: Duration::from_secs(config.sse_lifetime_secs),
        },
    );
    let state = AppState { leptos_options, jobs: service.clone(), metrics: metrics_handle(), openai_wait, min_free_disk, streams };
    let app = router::app(state, &config, &limits);

    let addr = listener.local_addr()?;
    // Tests and scripts read this line to find an ephemeral port.
    tracing::info!(store = store_name(&config), worker = config.worker, "starting");
    tracing::info!("easel listening on http://{addr}");
    serve(listener, app, &service, &config, shutdown).await?;
    if let Some(worker) = worker {
        stop_worker(worker, &config).await?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// A worker alone (`easel worker`): claims jobs from the shared store and paints them; HTTP
/// only for health, readiness and metrics, on `listener`.
pub async fn run_worker(
    config: Config,
    listener: TcpListener,
    models: Vec<ModelSummary>,
    painter: Box<dyn Painter>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (service, _) = open_jobs(&config, models).await?;
    let worker = start_worker(&config, &service, painter).await?;
    let app = router::ops()
        .layer(axum::middleware::from_fn(router::count_responses))
        .with_state(OpsState { jobs: service.clone(), metrics: metrics_handle(), min_free_disk: MinFreeDisk(config.min_free_disk_mb * 1024 * 1024) });
    let addr = listener.local_addr()?;
    tracing::info!(store = store_name(&config), "starting a worker");
    tracing::info!("easel worker listening on http://{addr}");
    serve(listener, app, &service, &config, shutdown).await?;
    stop_worker(worker, &config).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Webhooks are on when a signing secret is set.
fn webhook_settings(config: &Config) -> anyhow::Result<Option<webhooks::WebhookSettings>> {
    let Some(secret) = &config.webhook_secret else { return Ok(None) };
    Ok(Some(webhooks::WebhookSettings {
        secret: webhooks::Secret::parse(secret)?,
        targets: WebhookTargets::new(&config.webhook_allow_hosts),
        retry_after: config.webhook_retry_secs.iter().map(|s| Duration::from_secs(*s)).collect(),
        timeout: Duration::from_secs(config.webhook_timeout_secs),
    }))
}

/// The running job finishes within the grace period, or goes back in line.
async fn stop_worker(worker: WorkerHandle, config: &Config) -> anyhow::Result<()> {
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    tokio::task::spawn_blocking(move || worker.shutdown(grace)).await?;
    Ok(())
}

/// The store the configuration names, the job service over it, and where rate limits count.
async fn open_jobs(config: &Config, models: Vec<ModelSummary>) -> anyhow::Result<(JobService, Limits)> {
    anyhow::ensure!(
        models.iter().any(|m| m.name == config.default_model),
        "the default model {:?} is not among the offered models ({})",
        config.default_model,
        models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    let (store, limits): (Arc<dyn JobStore>, Limits) = match config.store_kind()? {
        StoreKind::Sqlite => (Arc::new(SqliteStore::open(&config.data_dir).await?), Limits::Local),
        StoreKind::Redis(url) => {
            let store = RedisStore::connect(RedisSettings {
                url,
                heartbeat: Duration::from_secs(config.heartbeat_secs),
                retention: Duration::from_secs(config.retention_secs),
                claim_wait: Duration::from_secs(1),
                max_run: Duration::from_secs(config.job_timeout_secs + config.heartbeat_secs),
            })
            .await?;
            let limits = Limits::Shared { conn: store.quick_connection().await?, prefix: store.prefix() };
            (Arc::new(store), limits)
        }
    };
    let service = JobService::new(
        store,
        QueueLimits {
            max_queued: config.max_queued,
            max_active_per_client: config.max_active_per_client,
            max_active_per_visitor: config.max_active_per_visitor,
            history_len: config.history_len,
        },
        models,
        config.default_model.clone(),
    );
    Ok((service, limits))
}

/// Recovers jobs a dead worker left running, then starts this process's worker.
async fn start_worker(config: &Config, service: &JobService, painter: Box<dyn Painter>) -> anyhow::Result<WorkerHandle> {
    let recovery = service.recover_interrupted().await.context("recovering interrupted jobs")?;
    if recovery != Default::default() {
        tracing::warn!(requeued = recovery.requeued, failed = recovery.failed, "recovered jobs interrupted by the last stop");
    }
    Worker::spawn(
        service.clone(),
        painter,
        config.default_model.clone(),
        Duration::from_secs(config.job_timeout_secs),
        tokio::runtime::Handle::current(),
    )
}

async fn serve(
    listener: TcpListener,
    app: axum::Router,
    service: &JobService,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stopping = service.clone();
    let limits = listen::ConnectionLimits {
        header_read: Duration::from_secs(config.header_read_timeout_secs),
        max_connections: config.max_connections,
        shutdown_deadline: Duration::from_secs(config.shutdown_deadline_secs),
    };
    listen::serve(listener, app, limits, async move {
        shutdown.await;
        tracing::info!("shutting down: refusing new jobs");
        stopping.stop_accepting();
    })
    .await
    .context("serving")
}

/// The store for logs, without a Redis password.
fn store_name(config: &Config) -> &'static str {
    match config.store_kind() {
        Ok(StoreKind::Redis(_)) => "redis",
        _ => "sqlite",
    }
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
