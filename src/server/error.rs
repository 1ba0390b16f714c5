//! Errors into responses: one status per kind, a JSON body `{kind, message, retryAfterSecs}`,
//! and `Retry-After` where waiting helps.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header::RETRY_AFTER, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
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
