//! The JSON API for scripts and other clients, plus health, readiness and metrics. Thin: each
//! handler reads the request, calls the job service and shapes the answer.

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::Stream;
use metrics_exporter_prometheus::PrometheusHandle;

use super::error::ApiJson;
use super::state::{AppState, MinFreeDisk};
use crate::api::{ApiError, GenerateParams, JobView, ModelSummary};
use crate::jobs::{Client, JobService};

/// `POST /api/generate`; an `Idempotency-Key` header makes a retry answer the same job.
#[utoipa::path(
    post,
    path = "/api/generate",
    tag = "jobs",
    request_body = GenerateParams,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body within 24 h answers the same job")),
    responses(
        (status = 202, description = "Queued; the answer carries the cancelToken", body = JobView),
        (status = 400, description = "Malformed JSON or request", body = ApiError),
        (status = 408, description = "The body did not arrive in time", body = ApiError),
        (status = 410, description = "Deleted after the retention time", body = ApiError),
        (status = 413, description = "Body too large", body = ApiError),
        (status = 422, description = "Invalid prompt or parameters, or an Idempotency-Key used with another body", body = ApiError),
        (status = 429, description = "Rate limited, or too many active jobs", body = ApiError),
        (status = 503, description = "Queue full, or not ready", body = ApiError)
    )
)]
pub async fn generate(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    headers: HeaderMap,
    ApiJson(params): ApiJson<GenerateParams>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let key = headers.get("idempotency-key").map(|v| v.to_str().unwrap_or(""));
    let view = state.jobs.submit_idempotent(&params, &client, key).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

#[utoipa::path(
    get,
    path = "/api/status/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 404, description = "No such job", body = ApiError),
        (status = 410, description = "Deleted after the retention time", body = ApiError),
        (status = 429, description = "Rate limited", body = ApiError)
    )
)]
pub async fn status(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<JobView>, ApiError> {
    Ok(Json(state.jobs.status(&id).await?))
}

/// `DELETE /api/jobs/{id}`: the submitter's cookie, or its token in `X-Cancel-Token` (or the
/// `cancelToken` query parameter).
#[utoipa::path(
    delete,
    path = "/api/jobs/{id}",
    tag = "jobs",
    params(
        ("id" = String, Path, description = "The job id"),
        ("X-Cancel-Token" = Option<String>, Header, description = "The cancelToken the submit answered with"),
        ("cancelToken" = Option<String>, Query, description = "The same, as a query parameter"),
    ),
    responses(
        (status = 200, description = "The job after the cancel (a running job stops within a step)", body = JobView),
        (status = 403, description = "Not the submitter's job", body = ApiError),
        (status = 404, description = "No such job", body = ApiError),
        (status = 410, description = "Deleted after the retention time", body = ApiError),
        (status = 429, description = "Rate limited", body = ApiError)
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Extension(client): Extension<Client>,
    Query(query): Query<CancelQuery>,
    headers: HeaderMap,
) -> Result<Json<JobView>, ApiError> {
    let token = headers.get("x-cancel-token").and_then(|v| v.to_str().ok()).map(str::to_string).or(query.cancel_token);
    Ok(Json(state.jobs.cancel(&id, client.visitor.as_deref(), token.as_deref()).await?))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelQuery {
    cancel_token: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/models",
    tag = "jobs",
    responses(
        (status = 200, description = "The models offered and their limits", body = Vec<ModelSummary>),
        (status = 429, description = "Rate limited", body = ApiError)
    )
)]
pub async fn models(State(state): State<AppState>) -> Json<Vec<ModelSummary>> {
    Json(state.jobs.models().to_vec())
}

/// `/api/images/{id}.png`: a finished image never changes, so it is cached for good.
#[utoipa::path(
    get,
    path = "/api/images/{file}",
    tag = "images",
    params(("file" = String, Path, description = "`<job id>.png`"), ("If-None-Match" = Option<String>, Header, description = "The ETag from before")),
    responses(
        (status = 200, description = "The PNG, with its parameters in a text chunk", content_type = "image/png"),
        (status = 304, description = "Not modified"),
        (status = 404, description = "No such job", body = ApiError),
        (status = 410, description = "Deleted after the retention time", body = ApiError),
        (status = 429, description = "Rate limited", body = ApiError)
    )
)]
pub async fn image(State(state): State<AppState>, Path(file): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let id = file.strip_suffix(".png").ok_or_else(|| ApiError::not_found("image"))?;
    let png = state.jobs.image(id).await?;
    let etag = format!("\"{id}\"");
    if headers.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == etag)) {
        return Ok((StatusCode::NOT_MODIFIED, [(ETAG, etag)]).into_response());
    }
    Ok((
        [
            (CONTENT_TYPE, HeaderValue::from_static("image/png")),
            (CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
            (ETAG, HeaderValue::from_str(&etag).map_err(|_| ApiError::internal())?),
        ],
        png,
    )
        .into_response())
}

/// `/api/images/{id}/preview.png`: the latest preview of a running job; never cached.
#[utoipa::path(
    get,
    path = "/api/images/{id}/preview.png",
    tag = "images",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The running job's latest preview", content_type = "image/png"),
        (status = 404, description = "No such job", body = ApiError),
        (status = 429, description = "Rate limited", body = ApiError)
    )
)]
pub async fn preview(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let png = state.jobs.preview(&id).await?;
    Ok(([(CONTENT_TYPE, "image/png"), (CACHE_CONTROL, "no-store")], png).into_response())
}

/// `/api/jobs/{id}/events`: the job's states as Server-Sent Events, ending at a terminal one.
/// Event names: queued, progress, completed, failed, cancelled; data: the job as JSON.
#[utoipa::path(
    get,
    path = "/api/jobs/{id}/events",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "Events queued, progress, completed, failed, cancelled; data: the job", content_type = "text/event-stream"),
        (status = 404, description = "No such job", body = ApiError),
        (status = 410, description = "Deleted after the retention time", body = ApiError),
        (status = 429, description = "Rate limited, or too many open event streams from this client", body = ApiError),
        (status = 503, description = "Too many open event streams in all, or shutting down", body = ApiError)
    )
)]
pub async fn events(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let events = state.streams.open(&id, client.ip).await?;
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is up", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready: the model is loaded (or this process has no worker) and the store answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready to take jobs", body = Object),
        (status = 503, description = "Model loading, store away, worker stuck or data disk nearly full", body = ApiError),
    )
)]
pub async fn readyz(State(jobs): State<JobService>, State(min_free): State<MinFreeDisk>) -> Response {
    if let Some(free) = jobs.free_disk_bytes().filter(|free| *free < min_free.0) {
        return ApiError::new(
            crate::api::ErrorKind::NotReady,
            format!("The data disk is nearly full ({} MB free).", free / (1024 * 1024)),
        )
        .into_response();
    }
    if !jobs.is_ready() {
        return ApiError::new(crate::api::ErrorKind::NotReady, "The model is still loading.").retry_after(5).into_response();
    }
    if jobs.is_stuck() {
        return ApiError::new(crate::api::ErrorKind::NotReady, "The worker is stuck inside a job past its time limit.").into_response();
    }
    if !jobs.store_reachable().await {
        return ApiError::new(crate::api::ErrorKind::NotReady, "The job store does not answer.").retry_after(5).into_response();
    }
    Json(serde_json::json!({ "ready": true, "model": jobs.default_model() })).into_response()
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 429, description = "Rate limited", body = ApiError)
    )
)]
pub async fn metrics(State(jobs): State<JobService>, State(handle): State<PrometheusHandle>) -> Response {
    match jobs.counts().await {
        Ok(counts) => {
            metrics::gauge!("easel_queue_depth").set(counts.queued as f64);
            for (status, n) in [
                ("queued", counts.queued),
                ("processing", counts.processing),
                ("completed", counts.completed),
                ("failed", counts.failed),
                ("cancelled", counts.cancelled),
            ] {
                metrics::gauge!("easel_jobs", "state" => status).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = format!("{e:#}"), "counting jobs for metrics failed"),
    }
    metrics::gauge!("easel_model_ready").set(if jobs.is_ready() { 1.0 } else { 0.0 });
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
}
