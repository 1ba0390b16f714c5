//! The router: the JSON API, the server functions, the pages and static files, with their
//! rate limits, body limits, client identification and HTTP metrics.

use std::convert::Infallible;
use std::time::Duration;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::Uri;
use axum::http::Method;
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::Response;
use axum::routing::{delete, get, on, post, MethodFilter};
use axum::Router;
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list_with_exclusions, handle_server_fns_with_context, LeptosRoutes};
use tower_http::limit::RequestBodyLimitLayer;

use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;

use super::config::Config;
use super::rate_limit::{Limits, Rule};
use super::state::{AppState, MinFreeDisk};
use crate::jobs::JobService;
use super::{client, embedded, error, handlers, openai, openapi, page_cache};
use crate::api::SUBMIT_FN_PATH;
use crate::app::{shell, App};

pub fn app(state: AppState, config: &Config, limits: &Limits) -> Router {

    let jobs = state.jobs.clone();
    let server_fn_context = move || provide_context(jobs.clone());

    // Server functions are mounted here rather than by `leptos_routes`, so that each sits
    // behind the same limiter as its JSON counterpart: submit shares `/api/generate`'s, the
    // others the reads' (a server fn #[middleware] would be rebuilt per request and never limit).
    let api_keys = openai::ApiKeys(Arc::new(config.api_keys.clone()));
    let mut submits = Router::new().route("/api/generate", post(handlers::generate)).route(
        "/v1/images/generations",
        post(openai::generate).layer::<_, Infallible>(from_fn_with_state(api_keys, openai::authorize)),
    );
    let mut reads = Router::new()
        .route("/api/status/{id}", get(handlers::status))
        .route("/api/jobs/{id}", delete(handlers::cancel))
        .route("/api/jobs/{id}/events", get(handlers::events))
        .route("/api/images/{file}", get(handlers::image))
        .route("/api/images/{id}/preview.png", get(handlers::preview))
        .route("/api/models", get(handlers::models))
        .route("/api/openapi.json", get(openapi::serve));
    let server_fns: Vec<_> = leptos::server_fn::axum::server_fn_paths().collect();
    for (path, method) in &server_fns {
        let context = server_fn_context.clone();
        let handler = move |req: Request| handle_server_fns_with_context(context.clone(), req);
        let filter = MethodFilter::try_from(method.clone()).expect("server functions use standard methods");
        let route = on(filter, handler)
            .layer::<_, Infallible>(from_fn(error::statuses_from_kinds))
            .layer::<_, Infallible>(from_fn(client::same_site_only))
            .layer::<_, Infallible>(RequestBodyLimitLayer::new(config.max_body_bytes));
        if *path == SUBMIT_FN_PATH {
            submits = submits.route(path, route);
        } else {
            reads = reads.route(path, route);
        }
    }
    let submits = limits
        .apply(submits, Rule::submits(config.submits_per_minute))
        .layer(from_fn_with_state(config.max_body_bytes, error::form_errors_back_to_page))
        .layer(from_fn(openai::errors_in_openai_shape));
    let reads = limits.apply(reads, Rule::reads(config.reads_per_second, config.read_burst));

    let excluded = server_fns.iter().map(|(path, _)| path.to_string()).collect();
    let routes = generate_route_list_with_exclusions(App, Some(excluded));
    let options = state.leptos_options.clone();
    // Pages (not their static files) and metrics count as reads too.
    let pages = Router::new()
        .leptos_routes_with_context(&state, routes, server_fn_context, move || shell(options.clone()))
        .layer(from_fn_with_state(page_cache::FirstVisitPage::default(), page_cache::first_visit_page));
    let pages = limits.apply(pages, Rule::reads(config.reads_per_second, config.read_burst));
    let site = pages.fallback(static_files);
    let metrics = limits.apply(Router::new().route("/metrics", get(handlers::metrics)), Rule::reads(config.reads_per_second, config.read_burst));

    Router::new()
        .merge(submits)
        .merge(reads)
        .merge(health())
        .merge(metrics)
        .merge(site)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(from_fn_with_state((Duration::from_secs(config.request_timeout_secs), config.max_body_bytes * 4 + 1024), error::request_deadline))
        .layer(from_fn(count_responses))
        .layer(from_fn_with_state(
            Arc::new(client::Identify { trusted: config.trusted_networks(), ipv6_prefix: config.ipv6_prefix }),
            client::identify,
        ))
        .with_state(state)
}

/// Health and readiness (never rate-limited: load balancers ask often).
fn health<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    JobService: FromRef<S>,
    MinFreeDisk: FromRef<S>,
{
    Router::new().route("/healthz", get(handlers::healthz)).route("/readyz", get(handlers::readyz))
}

/// Health, readiness and metrics alone, on a worker's own address.
pub fn ops<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    JobService: FromRef<S>,
    PrometheusHandle: FromRef<S>,
    MinFreeDisk: FromRef<S>,
{
    health().route("/metrics", get(handlers::metrics))
}

/// Counts responses by method and status. The method label comes from a fixed set: a label
/// taken from client input would let anyone create series without bound.
pub async fn count_responses(req: Request, next: Next) -> Response {
    let method = method_label(req.method());
    let response = next.run(req).await;
    metrics::counter!("easel_http_responses_total", "method" => method, "status" => response.status().as_u16().to_string())
        .increment(1);
    response
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_fall_into_a_fixed_set_of_labels() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"JUNK1").unwrap()), "other");
        assert_eq!(method_label(&Method::CONNECT), "other");
    }
}

/// Static files: from the site folder on disk when it has the file, else from the copy the
/// binary carries, else leptos' not-found page.
async fn static_files(uri: Uri, state: State<AppState>, req: Request) -> Response {
    let path = uri.path().trim_start_matches('/');
    let on_disk = !path.is_empty() && std::path::Path::new(&*state.leptos_options.site_root).join(path).is_file();
    if !on_disk {
        if let Some(found) = embedded::site_file(path, req.headers()) {
            return found;
        }
    }
    leptos_axum::file_and_error_handler::<AppState, _>(shell)(uri, state, req).await
}
