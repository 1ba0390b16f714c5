//! Errors into responses: one status per kind, a JSON body `{kind, message, retryAfterSecs}`,
//! and `Retry-After` where waiting helps.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE, LOCATION, REFERER, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use leptos::server_fn::error::ServerFnUrlError;
use serde::de::DeserializeOwned;
use url::Url;

use crate::api::{ApiError, ErrorKind, REFUSED_FORM_PARAM};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry = self.retry_after_secs;
        let mut response = (status, Json(self)).into_response();
        if let Some(secs) = retry {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// `Json<T>` whose rejections are categorized API errors instead of plain text.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(from_rejection(rejection)),
        }
    }
}

fn from_rejection(rejection: JsonRejection) -> ApiError {
    let detail = rejection.body_text();
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(ErrorKind::PayloadTooLarge, "The request body is too large."),
        StatusCode::UNPROCESSABLE_ENTITY => {
            ApiError::new(ErrorKind::InvalidParams, format!("The request's fields are not valid: {detail}"))
        }
        _ => ApiError::new(ErrorKind::BadRequest, format!("The request is not valid JSON: {detail}")),
    }
}

/// Server functions answer every error with 500; this gives it its kind's status (and
/// `Retry-After`), as the JSON API does. Redirects (a plain form post's errors) pass untouched.
pub async fn statuses_from_kinds(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    if response.status() != StatusCode::INTERNAL_SERVER_ERROR {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return ApiError::internal().into_response();
    };
    match serde_json::from_slice::<ApiError>(&bytes) {
        Ok(error) => error.into_response(),
        Err(_) => Response::from_parts(parts, bytes.into()),
    }
}

/// A plain HTML form post (no JavaScript) that is refused goes back to its page with the error
/// in the URL, as leptos does for the server function's own errors, and with the fields the
/// visitor sent, so the page shows the error and keeps what was typed. This covers errors
/// answered before the server function runs too (the rate limiter's 429).
pub async fn form_errors_back_to_page(State(max_body): State<usize>, req: Request, next: Next) -> Response {
    let (is_form, accepts_html, referer) = {
        let header = |name| req.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_string);
        (
            header(CONTENT_TYPE).is_some_and(|v| v.starts_with("application/x-www-form-urlencoded")),
            header(ACCEPT).is_some_and(|v| v.contains("text/html")),
            header(REFERER),
        )
    };
    let (Some(referer), true) = (referer, is_form && accepts_html) else {
        return next.run(req).await;
    };
    let path = req.uri().path().to_string();
    let (parts, body) = req.into_parts();
    let Ok(form) = axum::body::to_bytes(body, max_body).await else {
        let error = ApiError::new(ErrorKind::PayloadTooLarge, "The form is too large.");
        return back_to_page(&referer, &path, error, b"");
    };
    let response = next.run(Request::from_parts(parts, form.clone().into())).await;
    let status = response.status();
    if status.is_success() {
        return response;
    }
    if status.is_redirection() {
        // The server function's own error: leptos already put it in the URL; add the fields.
        let location = response.headers().get(LOCATION).and_then(|v| v.to_str().ok());
        return match location.filter(|l| l.contains("__err=")).and_then(|l| Url::parse(l).ok()) {
            Some(mut url) => {
                keep_form(&mut url, &form);
                Redirect::to(url.as_str()).into_response()
            }
            None => response,
        };
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return ApiError::internal().into_response();
    };
    match serde_json::from_slice::<ApiError>(&bytes) {
        Ok(error) => back_to_page(&referer, &path, error, &form),
        Err(_) => Response::from_parts(parts, bytes.into()),
    }
}

fn back_to_page(referer: &str, path: &str, error: ApiError, form: &[u8]) -> Response {
    match ServerFnUrlError::new(path, error.clone()).to_url(referer) {
        Ok(mut url) => {
            keep_form(&mut url, form);
            Redirect::to(url.as_str()).into_response()
        }
        Err(_) => error.into_response(),
    }
}

/// The largest refused form carried back in the redirect URL: beyond, the URL would outgrow
/// what browsers and proxies accept, so the fields are dropped and only the error goes back.
const MAX_FORM_IN_URL: usize = 4 * 1024;

fn keep_form(url: &mut Url, form: &[u8]) {
    if form.len() <= MAX_FORM_IN_URL {
        url.query_pairs_mut().append_pair(REFUSED_FORM_PARAM, &String::from_utf8_lossy(form));
    }
}

/// Middleware: a request's body must have arrived within `limit` (a client sending it a byte
/// at a time holds a connection). `max_body` is only a backstop well above the real limit,
/// which the routes apply with their own answers (the no-JS form goes back to its page). Only the arrival is timed: a handler cut off midway could
/// leave work done but unanswered (a job queued, its client told it failed).
pub async fn request_deadline(State((limit, max_body)): State<(Duration, usize)>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let body = match tokio::time::timeout(limit, axum::body::to_bytes(body, max_body)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return ApiError::new(ErrorKind::PayloadTooLarge, "The request body is too large.").into_response(),
        Err(_) => {
            return ApiError::new(ErrorKind::RequestTimeout, format!("The request body took longer than {} s to arrive.", limit.as_secs()))
                .into_response()
        }
    };
    next.run(Request::from_parts(parts, body.into())).await
}
