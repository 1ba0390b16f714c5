//! The error kinds: one vocabulary for JSON, server functions, SSE and the UI.

use serde::{Deserialize, Serialize};
use leptos::server_fn::{
    codec::JsonEncoding,
    error::{FromServerFnError, ServerFnErrorErr},
};

/// What went wrong, as a machine-readable string (`snake_case` on the wire).
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
// Read by name through `parse`: one match instead of serde's per-format visitors (less WASM).
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum ErrorKind {
    InvalidPrompt,
    InvalidParams,
    BadRequest,
    PayloadTooLarge,
    RateLimited,
    QueueFull,
    Busy,
    Timeout,
    InferenceFailed,
    Cancelled,
    Interrupted,
    NotFound,
    /// The request may not do this (cancelling somebody else's job).
    Forbidden,
    /// An `Idempotency-Key` used before with another request body.
    IdempotencyMismatch,
    /// The job existed, and was deleted after the retention time.
    Expired,
    /// The request (its body, say) took longer than the server waits.
    RequestTimeout,
    NotReady,
    /// Only ever made in the browser: the server could not be reached.
    Network,
    Internal,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 19] = [
        Self::InvalidPrompt,
        Self::InvalidParams,
        Self::BadRequest,
        Self::PayloadTooLarge,
        Self::RateLimited,
        Self::QueueFull,
        Self::Busy,
        Self::Timeout,
        Self::InferenceFailed,
        Self::Cancelled,
        Self::Interrupted,
        Self::NotFound,
        Self::Forbidden,
        Self::IdempotencyMismatch,
        Self::Expired,
        Self::RequestTimeout,
        Self::NotReady,
        Self::Network,
        Self::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidPrompt => "invalid_prompt",
            Self::InvalidParams => "invalid_params",
            Self::BadRequest => "bad_request",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited => "rate_limited",
            Self::QueueFull => "queue_full",
            Self::Busy => "busy",
            Self::Timeout => "timeout",
            Self::InferenceFailed => "inference_failed",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
            Self::NotFound => "not_found",
            Self::Forbidden => "forbidden",
            Self::IdempotencyMismatch => "idempotency_mismatch",
            Self::Expired => "expired",
            Self::RequestTimeout => "request_timeout",
            Self::NotReady => "not_ready",
            Self::Network => "network",
            Self::Internal => "internal",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl TryFrom<String> for ErrorKind {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Self::parse(&name).ok_or_else(|| format!("unknown error kind `{name}`"))
    }
}

impl ErrorKind {
    /// The HTTP status a request failing with this kind answers with. Job outcomes
    /// (timeout, inference_failed, ...) are states of a job, not request failures: a status
    /// request for such a job still answers 200.
    pub fn http_status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::NotFound => 404,
            Self::Forbidden => 403,
            Self::IdempotencyMismatch => 422,
            Self::Expired => 410,
            Self::RequestTimeout => 408,
            Self::PayloadTooLarge => 413,
            Self::InvalidPrompt | Self::InvalidParams => 422,
            Self::RateLimited | Self::Busy => 429,
            Self::QueueFull | Self::NotReady => 503,
            Self::Timeout
            | Self::InferenceFailed
            | Self::Cancelled
            | Self::Interrupted
            | Self::Network
            | Self::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A categorized error with a sentence for people.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
#[serde(rename_all = "camelCase")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    /// Seconds to wait before trying again (rate_limited, queue_full, busy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error read from a URL, which anyone can write and link to: only its kind and (a
    /// bounded) wait are kept; the page says the rest in its own words.
    pub fn from_untrusted_url(self) -> Self {
        ApiError { kind: self.kind, message: String::new(), retry_after_secs: self.retry_after_secs.map(|s| s.min(3600)) }
    }

    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), retry_after_secs: None }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorKind::NotFound, format!("No {what} with that id."))
    }

    pub fn internal() -> Self {
        Self::new(ErrorKind::Internal, "The server hit an internal error; please try again.")
    }
}

impl FromServerFnError for ApiError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            ServerFnErrorErr::Request(e) => {
                Self::new(ErrorKind::Network, format!("Could not reach the server: {e}"))
            }
            // The same kind the JSON API gives a field of the wrong type or a missing one.
            ServerFnErrorErr::Args(e) | ServerFnErrorErr::MissingArg(e) => {
                Self::new(ErrorKind::InvalidParams, format!("The request's fields are not valid: {e}"))
            }
            ServerFnErrorErr::Deserialization(e) | ServerFnErrorErr::Response(e) => Self::new(
                ErrorKind::Network,
                format!("The server's answer could not be read: {e}"),
            ),
            other => Self::new(ErrorKind::Internal, other.to_string()),
        }
    }
}
