//! Server functions for the UI, under their own `/sfn/` prefix (apart from the JSON API) with
//! fixed endpoints, so their URLs are the same in every checkout. Bodies are thin: they call
//! the job service, exactly as the JSON handlers do; the router gives their errors the same
//! statuses as the JSON API's.

use leptos::prelude::*;

use super::{ApiError, GenerateParams, JobView, ModelSummary};

/// The submit function's URL (the router rate-limits it together with `/api/generate`).
pub const SUBMIT_FN_PATH: &str = "/sfn/submit";

/// The query parameter that brings a refused plain form's fields (URL-encoded, as posted) back
/// to its page beside the error, so the page can keep what the visitor typed.
pub const REFUSED_FORM_PARAM: &str = "__form";

/// The models on offer and the one used by default.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelsInfo {
    pub models: Vec<ModelSummary>,
    pub default_model: String,
}

#[cfg(feature = "ssr")]
mod ssr {
    use leptos::prelude::*;

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
}

/// Queues a job and answers at once with its id and place in line.
#[server(prefix = "/sfn", endpoint = "submit")]
pub async fn submit_job(params: GenerateParams) -> Result<JobView, ApiError> {
    use self::ssr::*;
    jobs()?.submit(&params, &client().await?).await
}

#[server(prefix = "/sfn", endpoint = "status")]
pub async fn job_status(job_id: String) -> Result<JobView, ApiError> {
    use self::ssr::*;
    jobs()?.status(&job_id).await
}

#[server(prefix = "/sfn", endpoint = "cancel")]
pub async fn cancel_job(job_id: String) -> Result<JobView, ApiError> {
    use self::ssr::*;
    let client = client().await?;
    jobs()?.cancel(&job_id, client.visitor.as_deref(), None).await
}

/// This browser's recent jobs, newest first.
#[server(prefix = "/sfn", endpoint = "recent")]
pub async fn recent_jobs() -> Result<Vec<JobView>, ApiError> {
    use self::ssr::*;
    let client = client().await?;
    if client.new_visitor {
        // A first visit (no cookie yet) has no history: no store read.
        return Ok(Vec::new());
    }
    jobs()?.recent(client.visitor.as_deref()).await
}

#[server(prefix = "/sfn", endpoint = "models")]
pub async fn list_models() -> Result<ModelsInfo, ApiError> {
    use self::ssr::*;
    let jobs = jobs()?;
    Ok(ModelsInfo { models: jobs.models().to_vec(), default_model: jobs.default_model().to_string() })
}
