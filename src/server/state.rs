//! The one state every handler and server function reaches.

use axum::extract::FromRef;
use leptos::prelude::LeptosOptions;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::jobs::JobService;

#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub jobs: JobService,
    pub metrics: PrometheusHandle,
    /// How long `/v1/images/generations` waits for its images.
    pub openai_wait: std::time::Duration,
    /// Readiness fails below this many free bytes on the data disk.
    pub min_free_disk: MinFreeDisk,
    /// Open event streams and the job watchers behind them.
    pub streams: super::streams::Streams,
}

#[derive(Clone, Copy, Debug)]
pub struct MinFreeDisk(pub u64);

/// A worker-only process's state: health, readiness and metrics only.
#[derive(Clone, FromRef)]
pub struct OpsState {
    pub jobs: JobService,
    pub metrics: PrometheusHandle,
    pub min_free_disk: MinFreeDisk,
}
