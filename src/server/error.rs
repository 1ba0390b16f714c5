//! Errors into responses: one status per kind, a JSON body `{kind, message, retryAfterSecs}`,
//! and `Retry-After` where waiting helps.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::header::{ACCEPT, REFERER, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use leptos::server_fn::error::ServerFnUrlError;
use serde::de::DeserializeOwned;

use crate::api::{ApiError, ErrorKind};

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

/// A plain HTML form post (no JavaScript) that ends in an API error — a 429 from the rate
/// limiter, say, which answers before the server function can — goes back to its page with
/// the error in the URL, as leptos does for the server function's own errors, so the page can
/// show it instead of the browser showing raw JSON.
pub async fn form_errors_back_to_page(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let accepts_html = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/html"));
    let referer = req.headers().get(REFERER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let response = next.run(req).await;
    let (Some(referer), true) = (referer, accepts_html) else { return response };
    if response.status().is_success() || response.status().is_redirection() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return ApiError::internal().into_response();
    };
    let Ok(error) = serde_json::from_slice::<ApiError>(&bytes) else {
        return Response::from_parts(parts, bytes.into());
    };
    match ServerFnUrlError::new(path, error).to_url(&referer) {
        Ok(url) => Redirect::to(url.as_str()).into_response(),
        Err(_) => Response::from_parts(parts, bytes.into()),
    }
}
