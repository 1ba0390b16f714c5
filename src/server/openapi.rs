//! The OpenAPI 3.1 document of the JSON API, derived from the wire types and the handlers'
//! annotations (`utoipa`), served at `/api/openapi.json`.

use axum::response::IntoResponse;
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{handlers, openai};

#[derive(OpenApi)]
#[openapi(
    info(title = "easel", description = "Text to image: queue a job, follow it, fetch the PNG. Errors are `{kind, message, retryAfterSecs}` with the kind's status; `/v1/images/generations` speaks OpenAI's Images API."),
    paths(
        handlers::generate,
        handlers::status,
        handlers::cancel,
        handlers::events,
        handlers::image,
        handlers::preview,
        handlers::models,
        handlers::healthz,
        handlers::readyz,
        handlers::metrics,
        openai::generate,
    ),
    modifiers(&BearerKeys),
)]
struct ApiDoc;

/// `/v1/` may need `Authorization: Bearer <key>` (the `api_keys` setting).
struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// The document, built once.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /api/openapi.json`
pub async fn serve() -> impl IntoResponse {
    static DOCUMENT: std::sync::LazyLock<serde_json::Value> =
        std::sync::LazyLock::new(|| serde_json::to_value(document()).unwrap_or_default());
    Json(DOCUMENT.clone())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_json_route_is_in_the_document() {
        let doc = serde_json::to_value(super::document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
        for path in ["/api/generate", "/api/status/{id}", "/api/jobs/{id}", "/api/jobs/{id}/events", "/api/images/{file}", "/api/models", "/v1/images/generations", "/readyz"] {
            assert!(doc["paths"][path].is_object(), "{path} is missing");
        }
        let kinds = &doc["components"]["schemas"]["ErrorKind"]["enum"];
        assert!(kinds.as_array().is_some_and(|k| k.iter().any(|k| k == "idempotency_mismatch")), "{kinds}");
    }
}
