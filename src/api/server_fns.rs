//! Server functions for the UI, under their own `/sfn/` prefix (apart from the JSON API) with
//! fixed endpoints, so their URLs are the same in every checkout. Bodies are thin: they call
//! the job service, exactly as the JSON handlers do.

use leptos::prelude::*;

use super::{ApiError, GenerateParams, JobView, ModelSummary};

/// The submit function's URL (the router rate-limits it together with `/api/generate`).
pub const SUBMIT_FN_PATH: &str = "/sfn/submit";

/// The models on offer and the one used by default.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelsInfo {
    pub models: Vec<ModelSummary>,
    pub default_model: String,
}

#[cfg(feature = "ssr")]
mod ssr {
    use axum::http::{header::RETRY_AFTER, HeaderValue, StatusCode};
    use leptos::prelude::*;
    use leptos_axum::ResponseOptions;

    use crate::api::ApiError;
    use crate::jobs::{Client, JobService};

    pub fn jobs() -> Result<JobService, ApiError> {
        use_context::<JobService>().ok_or_else(ApiError::internal)
    }

    pub async fn client() -> Result<Client, ApiError> {
        let axum::Extension(client) = leptos_axum::extract::<axum::Extension<Client>>()
            .await
            .map_err(|_| ApiError::internal())?;
        Ok(client)
    }

    /// Gives an error its HTTP status and Retry-After, as the JSON API does — except for a
    /// plain HTML form post (no JavaScript), which server_fn answers with a 302 back to the
    /// page, the error in the URL: a status set here would replace that redirect.
    pub fn respond<T>(result: Result<T, ApiError>) -> Result<T, ApiError> {
        let html_form_post = use_context::<axum::http::request::Parts>().is_some_and(|parts| {
            parts
                .headers
                .get(axum::http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("text/html"))
        });
        if html_form_post {
            return result;
        }
        if let (Err(e), Some(response)) = (&result, use_context::<ResponseOptions>()) {
            response.set_status(StatusCode::from_u16(e.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
            if let Some(secs) = e.retry_after_secs {
                response.insert_header(RETRY_AFTER, HeaderValue::from(secs));
            }
        }
        result
    }
}

/// Queues a job and answers at once with its id and place in line.
#[server(prefix = "/sfn", endpoint = "submit")]
pub async fn submit_job(params: GenerateParams) -> Result<JobView, ApiError> {
    use self::ssr::*;
    let result = async { jobs()?.submit(&params, &client().await?).await }.await;
    respond(result)
}

#[server(prefix = "/sfn", endpoint = "status")]
pub async fn job_status(job_id: String) -> Result<JobView, ApiError> {
    use self::ssr::*;
    let result = async { jobs()?.status(&job_id).await }.await;
    respond(result)
}

#[server(prefix = "/sfn", endpoint = "cancel")]
pub async fn cancel_job(job_id: String) -> Result<JobView, ApiError> {
    use self::ssr::*;
    let result = async { jobs()?.cancel(&job_id).await }.await;
    respond(result)
}

/// This browser's recent jobs, newest first.
#[server(prefix = "/sfn", endpoint = "recent")]
pub async fn recent_jobs() -> Result<Vec<JobView>, ApiError> {
    use self::ssr::*;
    let result = async { jobs()?.recent(client().await?.visitor.as_deref()).await }.await;
    respond(result)
}

#[server(prefix = "/sfn", endpoint = "models")]
pub async fn list_models() -> Result<ModelsInfo, ApiError> {
    use self::ssr::*;
    let jobs = respond(jobs())?;
    Ok(ModelsInfo { models: jobs.models().to_vec(), default_model: jobs.default_model().to_string() })
}
