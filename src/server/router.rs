//! The router: the JSON API, the server functions, the pages and static files, with their
//! rate limits, body limits, client identification and HTTP metrics.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list_with_exclusions, handle_server_fns_with_context, LeptosRoutes};
use tower_http::limit::RequestBodyLimitLayer;

use super::config::Config;
use super::state::AppState;
use super::{client, error, handlers, rate_limit};
use crate::api::SUBMIT_FN_PATH;
use crate::app::{shell, App};

pub fn app(state: AppState, config: &Config) -> Router {
    let (submit_limit, submit_config) = rate_limit::submits(config.submits_per_minute);
    let (read_limit, read_config) = rate_limit::reads(config.reads_per_second, config.read_burst);
    rate_limit::spawn_cleanup(vec![submit_config, read_config]);

    let jobs = state.jobs.clone();
    let server_fn_context = move || provide_context(jobs.clone());

    // The submit server function is mounted here rather than by `leptos_routes`, so that it
    // shares the JSON submit route's limiter (a server fn #[middleware] would be rebuilt per
    // request and never limit).
    let submit_fn = {
        let context = server_fn_context.clone();
        move |req: Request| handle_server_fns_with_context(context.clone(), req)
    };
    let submits = Router::new()
        .route("/api/generate", post(handlers::generate))
        .route(SUBMIT_FN_PATH, post(submit_fn).layer(RequestBodyLimitLayer::new(config.max_body_bytes)))
        .layer(submit_limit)
        .layer(from_fn(error::form_errors_back_to_page));

    let reads = Router::new()
        .route("/api/status/{id}", get(handlers::status))
        .route("/api/jobs/{id}", delete(handlers::cancel))
        .route("/api/jobs/{id}/events", get(handlers::events))
        .route("/api/images/{file}", get(handlers::image))
        .route("/api/images/{id}/preview.png", get(handlers::preview))
        .route("/api/models", get(handlers::models))
        .layer(read_limit);

    let ops = Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics));

    let routes = generate_route_list_with_exclusions(App, Some(vec![SUBMIT_FN_PATH.to_string()]));
    let options = state.leptos_options.clone();
    let site = Router::new()
        .leptos_routes_with_context(&state, routes, server_fn_context, move || shell(options.clone()))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes));

    Router::new()
        .merge(submits)
        .merge(reads)
        .merge(ops)
        .merge(site)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(from_fn(count_responses))
        .layer(from_fn_with_state(Arc::new(config.trusted_networks()), client::identify))
        .with_state(state)
}

async fn count_responses(req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let response = next.run(req).await;
    metrics::counter!("easel_http_responses_total", "method" => method, "status" => response.status().as_u16().to_string())
        .increment(1);
    response
}
