//! The first visit's page from memory. A visitor without a cookie who asks for `/` with no query
//! gets the same page every time: the models on offer (fixed for the process), an empty form, no
//! history. Rendering it is a full reactive render (most of a page request's time, perf says),
//! so it is rendered once per process and then served as bytes. Returning visitors (their
//! history, their last job) and a refused no-JS form coming back with its error are rendered as
//! before. The page carries leptos's per-render nonce, which nothing checks: easel sends no
//! Content-Security-Policy.

use std::sync::{Arc, OnceLock};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::jobs::Client;

/// A page larger than this is not kept (it never is: the page is about 6 kB).
const MAX_PAGE_BYTES: usize = 1024 * 1024;

#[derive(Clone, Default)]
pub struct FirstVisitPage(Arc<OnceLock<(HeaderMap, Bytes)>>);

/// Middleware on the pages: serves (and on the first such request, keeps) the first-visit page.
pub async fn first_visit_page(State(page): State<FirstVisitPage>, req: Request, next: Next) -> Response {
    let first_visit = req.method() == Method::GET
        && req.uri().path() == "/"
        && req.uri().query().is_none()
        && req.extensions().get::<Client>().is_some_and(|c| c.new_visitor);
    if !first_visit {
        return next.run(req).await;
    }
    if let Some((headers, body)) = page.0.get() {
        return (headers.clone(), body.clone()).into_response();
    }
    let response = next.run(req).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, MAX_PAGE_BYTES).await {
        Ok(bytes) => {
            let _ = page.0.set((parts.headers.clone(), bytes.clone()));
            Response::from_parts(parts, Body::from(bytes))
        }
        Err(e) => {
            tracing::error!(error = %e, "rendering the first-visit page failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
