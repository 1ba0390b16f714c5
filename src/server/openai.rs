//! OpenAI-compatible `POST /v1/images/generations`: OpenAI's request shape in, the same job
//! service out; it waits for the images and answers in OpenAI's shape, errors included, so the
//! official clients work unchanged. An optional bearer key (`api_keys`) guards it.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiJson;
use super::state::AppState;
use crate::api::{ApiError, ErrorKind, GenerateParams, JobState};
use crate::jobs::Client;

/// OpenAI's model names stand for the server's default model.
const OPENAI_MODELS: [&str; 3] = ["dall-e-2", "dall-e-3", "gpt-image-1"];
const MAX_IMAGES: u32 = 4;

/// The request: OpenAI's fields, plus easel's as extra fields. Unknown fields (quality, style)
/// are ignored, as they mean nothing here.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ImagesRequest {
    #[serde(default)]
    prompt: String,
    model: Option<String>,
    n: Option<u32>,
    size: Option<String>,
    response_format: Option<String>,
    /// Accepted and ignored: easel tells users apart by address and cookie.
    #[serde(rename = "user")]
    _user: Option<String>,
    #[serde(default)]
    negative_prompt: String,
    steps: Option<u32>,
    guidance: Option<f64>,
    seed: Option<u32>,
}

/// `POST /v1/images/generations`'s answer (for the OpenAPI document).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ImagesResponse {
    /// Unix seconds.
    created: u64,
    data: Vec<ImageData>,
}

/// One image: `url` or `b64_json`, as asked.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ImageData {
    url: Option<String>,
    b64_json: Option<String>,
    revised_prompt: String,
}

/// An error in OpenAI's shape (for the OpenAPI document).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorBody {
    error: OpenAiErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorDetail {
    message: String,
    #[serde(rename = "type")]
    kind: String,
    param: Option<String>,
    /// easel's error kind, or `invalid_api_key`.
    code: String,
}

/// An error in OpenAI's shape; `code` is easel's kind.
struct OpenAiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    code: String,
    param: Option<&'static str>,
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}});
        (self.status, Json(body)).into_response()
    }
}

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        let status = match e.kind {
            // OpenAI answers 400 for every invalid request.
            ErrorKind::InvalidPrompt | ErrorKind::InvalidParams | ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            // A job that ran and failed is the server's failure.
            ErrorKind::Timeout | ErrorKind::InferenceFailed | ErrorKind::Interrupted | ErrorKind::Cancelled => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            kind => StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        };
        let kind = match status.as_u16() {
            429 => "rate_limit_error",
            401 => "authentication_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        OpenAiError { status, message: e.message, kind, code: e.kind.as_str().to_string(), param: None }
    }
}

fn invalid(param: &'static str, message: impl Into<String>) -> OpenAiError {
    OpenAiError {
        status: StatusCode::BAD_REQUEST,
        message: message.into(),
        kind: "invalid_request_error",
        code: ErrorKind::InvalidParams.as_str().to_string(),
        param: Some(param),
    }
}

/// `POST /v1/images/generations`: one job per image, run one after another (each client has
/// its own limit of active jobs), then the images by URL or inline.
#[utoipa::path(
    post,
    path = "/v1/images/generations",
    tag = "openai",
    request_body = ImagesRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body within 24 h answers the same images")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The images", body = ImagesResponse),
        (status = 400, description = "Invalid request (kind in `code`)", body = OpenAiErrorBody),
        (status = 401, description = "Missing or wrong API key", body = OpenAiErrorBody),
        (status = 408, description = "The body did not arrive in time", body = OpenAiErrorBody),
        (status = 410, description = "An Idempotency-Key's job was deleted after the retention time", body = OpenAiErrorBody),
        (status = 413, description = "Body too large", body = OpenAiErrorBody),
        (status = 422, description = "An Idempotency-Key used with another body", body = OpenAiErrorBody),
        (status = 429, description = "Rate limited, or too many active jobs", body = OpenAiErrorBody),
        (status = 500, description = "Painting failed", body = OpenAiErrorBody),
        (status = 503, description = "Queue full, or not ready", body = OpenAiErrorBody),
    )
)]
pub async fn generate(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ImagesRequest>,
) -> Result<Json<Value>, Response> {
    let fail = |e: OpenAiError| e.into_response();
    let n = request.n.unwrap_or(1);
    if !(1..=MAX_IMAGES).contains(&n) {
        return Err(fail(invalid("n", format!("n must be between 1 and {MAX_IMAGES}."))));
    }
    let inline = match request.response_format.as_deref().unwrap_or("url") {
        "url" => false,
        "b64_json" => true,
        _ => return Err(fail(invalid("response_format", "response_format must be \"url\" or \"b64_json\"."))),
    };
    let (width, height) = match request.size.as_deref() {
        None | Some("auto") => (None, None),
        Some(size) => match size.split_once('x').map(|(w, h)| (w.parse::<u32>(), h.parse::<u32>())) {
            Some((Ok(w), Ok(h))) => (Some(w), Some(h)),
            _ => return Err(fail(invalid("size", format!("size must be WIDTHxHEIGHT, such as \"512x512\", not {size:?}.")))),
        },
    };
    let model = request.model.clone().filter(|m| !OPENAI_MODELS.contains(&m.as_str()));
    let idempotency_key = headers.get("idempotency-key").map(|v| v.to_str().unwrap_or(""));
    let base = site_url(&headers, &state);

    let mut data = Vec::new();
    for i in 0..n {
        let params = GenerateParams {
            prompt: request.prompt.clone(),
            negative_prompt: request.negative_prompt.clone(),
            width,
            height,
            steps: request.steps,
            guidance: request.guidance,
            seed: request.seed.map(|s| s.wrapping_add(i)),
            model: model.clone(),
            webhook: None,
        };
        // Each image's job has a key of its own under the request's key.
        let key = idempotency_key.map(|k| if k.is_empty() { String::new() } else { format!("{k}#{i}") });
        let submitted =
            state.jobs.submit_idempotent(&params, &client, key.as_deref()).await.map_err(|e| fail(e.into()))?;
        let done = state.jobs.wait_until_ended(&submitted.job_id, state.openai_wait).await.map_err(|e| fail(e.into()))?;
        match done.state {
            JobState::Completed { image_url, .. } => {
                let item = if inline {
                    let png = state.jobs.image(&done.job_id).await.map_err(|e| fail(e.into()))?;
                    json!({"b64_json": base64::engine::general_purpose::STANDARD.encode(png), "revised_prompt": done.params.prompt})
                } else {
                    json!({"url": format!("{base}{image_url}"), "revised_prompt": done.params.prompt})
                };
                data.push(item);
            }
            JobState::Failed { error } => return Err(fail(ApiError::new(error.kind, error.message).into())),
            _ => return Err(fail(ApiError::new(ErrorKind::Cancelled, "The image was cancelled before it was painted.").into())),
        }
    }
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Ok(Json(json!({"created": created, "data": data})))
}

/// The site's address as the client reached it, for absolute image URLs.
fn site_url(headers: &HeaderMap, state: &AppState) -> String {
    let header = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    let host = header(HOST.as_str()).map(str::to_string).unwrap_or_else(|| state.leptos_options.site_addr.to_string());
    let scheme = if header("x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https")) { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// The API keys that open `/v1/`; none: open to all.
#[derive(Clone, Debug, Default)]
pub struct ApiKeys(pub Arc<Vec<String>>);

/// Middleware: `Authorization: Bearer <one of the keys>`, when keys are set.
pub async fn authorize(State(keys): State<ApiKeys>, req: Request, next: Next) -> Response {
    if keys.0.is_empty() {
        return next.run(req).await;
    }
    let given = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|given| keys.0.iter().any(|key| same_secret(key.as_bytes(), given.trim().as_bytes()))) {
        return next.run(req).await;
    }
    let mut response = OpenAiError {
        status: StatusCode::UNAUTHORIZED,
        message: "Incorrect or missing API key: send `Authorization: Bearer <key>`.".into(),
        kind: "invalid_request_error",
        code: "invalid_api_key".into(),
        param: None,
    }
    .into_response();
    response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Compares without stopping at the first difference, so timing does not tell how much of a
/// guessed key was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: under `/v1/`, errors answered in easel's shape by the layers around the handler
/// (rate limit, body limit, JSON rejections) are answered in OpenAI's shape instead.
pub async fn errors_in_openai_shape(req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/v1/") {
        return next.run(req).await;
    }
    let response = next.run(req).await;
    if response.status().is_success() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return OpenAiError::from(ApiError::internal()).into_response();
    };
    match serde_json::from_slice::<ApiError>(&bytes) {
        Ok(error) => {
            let mut converted = OpenAiError::from(error).into_response();
            if let Some(retry) = parts.headers.get(axum::http::header::RETRY_AFTER) {
                converted.headers_mut().insert(axum::http::header::RETRY_AFTER, retry.clone());
            }
            converted
        }
        Err(_) => {
            let mut response = Response::from_parts(parts, Body::from(bytes));
            response.headers_mut().entry(CONTENT_TYPE).or_insert(HeaderValue::from_static("application/json"));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn easel_errors_take_openai_statuses_and_types() {
        let e = OpenAiError::from(ApiError::new(ErrorKind::InvalidPrompt, "empty"));
        assert_eq!((e.status, e.kind, e.code.as_str()), (StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_prompt"));
        let e = OpenAiError::from(ApiError::new(ErrorKind::RateLimited, "slow down"));
        assert_eq!((e.status.as_u16(), e.kind), (429, "rate_limit_error"));
        let e = OpenAiError::from(ApiError::new(ErrorKind::IdempotencyMismatch, "other body"));
        assert_eq!((e.status.as_u16(), e.kind), (422, "invalid_request_error"));
        let e = OpenAiError::from(ApiError::new(ErrorKind::Timeout, "too slow"));
        assert_eq!((e.status.as_u16(), e.kind), (500, "server_error"));
        assert!(same_secret(b"key-1", b"key-1"));
        assert!(!same_secret(b"key-1", b"key-2") && !same_secret(b"key-1", b"key-10"));
    }
}
