//! The browser's calls to the server functions: the same endpoints and encodings as their
//! generated clients (a URL-encoded form in, JSON out, errors as `{kind, message}` with the
//! kind's status), sent with `fetch` and read with `JSON.parse` and [`super::wire`], so the WASM
//! carries neither serde's decoders nor the server-function client. On the server these are
//! never called (the page's actions run only in the browser).

use leptos::server_fn::ServerFn;

use super::{ApiError, CancelJob, GenerateParams, JobStatus, JobView, RecentJobs, SubmitJob};

/// The form a server function reads `submit_job(params)` from: `params[prompt]=..&..`; a
/// missing number means "the model's default".
pub fn submit_form(p: &GenerateParams) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("params[prompt]", &p.prompt);
    form.append_pair("params[negativePrompt]", &p.negative_prompt);
    let numbers = [("params[width]", p.width), ("params[height]", p.height), ("params[steps]", p.steps), ("params[seed]", p.seed)];
    for (name, value) in numbers {
        if let Some(v) = value {
            form.append_pair(name, &v.to_string());
        }
    }
    if let Some(g) = p.guidance {
        form.append_pair("params[guidance]", &super::wire::decimal(g));
    }
    if let Some(m) = &p.model {
        form.append_pair("params[model]", m);
    }
    form.finish()
}

fn job_form(job_id: &str) -> String {
    form_urlencoded::Serializer::new(String::new()).append_pair("job_id", job_id).finish()
}

pub async fn submit_job(params: &GenerateParams) -> Result<JobView, ApiError> {
    imp::call(SubmitJob::PATH, submit_form(params), super::wire::job_view).await
}

pub async fn job_status(job_id: &str) -> Result<JobView, ApiError> {
    imp::call(JobStatus::PATH, job_form(job_id), super::wire::job_view).await
}

pub async fn cancel_job(job_id: &str) -> Result<JobView, ApiError> {
    imp::call(CancelJob::PATH, job_form(job_id), super::wire::job_view).await
}

pub async fn recent_jobs() -> Result<Vec<JobView>, ApiError> {
    imp::call(RecentJobs::PATH, String::new(), super::wire::job_views).await
}

#[cfg(feature = "hydrate")]
mod imp {
    use wasm_bindgen::{JsCast, JsValue};
    use web_sys::js_sys::JSON;
    use web_sys::{Headers, RequestInit, Response};

    use crate::api::{wire, ApiError, ErrorKind};

    fn network(_: JsValue) -> ApiError {
        ApiError::new(ErrorKind::Network, "Could not reach the server.")
    }

    fn unreadable(what: String) -> ApiError {
        ApiError::new(ErrorKind::Network, format!("The server's answer could not be read: {what}"))
    }

    /// POSTs `form` to a server function and reads its JSON answer with `read`.
    pub async fn call<T>(path: &str, form: String, read: fn(&JsValue) -> Result<T, String>) -> Result<T, ApiError> {
        let headers = Headers::new().map_err(network)?;
        headers.set("Content-Type", "application/x-www-form-urlencoded").map_err(network)?;
        headers.set("Accept", "application/json").map_err(network)?;
        let init = RequestInit::new();
        init.set_method("POST");
        init.set_headers(&headers);
        init.set_body(&JsValue::from_str(&form));
        let window = web_sys::window().ok_or_else(|| network(JsValue::NULL))?;
        let answer = wasm_bindgen_futures::JsFuture::from(window.fetch_with_str_and_init(path, &init)).await.map_err(network)?;
        let response: Response = answer.unchecked_into();
        let body = wasm_bindgen_futures::JsFuture::from(response.text().map_err(network)?).await.map_err(network)?;
        let json = JSON::parse(&body.as_string().unwrap_or_default())
            .map_err(|_| unreadable(format!("not JSON (HTTP {})", response.status())))?;
        if response.ok() {
            read(&json).map_err(unreadable)
        } else {
            Err(wire::api_error(&json).map_err(unreadable)?)
        }
    }
}

#[cfg(not(feature = "hydrate"))]
mod imp {
    use crate::api::ApiError;

    pub async fn call<T>(_path: &str, _form: String, _read: fn(&serde_json::Value) -> Result<T, String>) -> Result<T, ApiError> {
        Err(ApiError::internal())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_submit_form_reads_back_as_the_server_function_reads_it() {
        let p = GenerateParams {
            prompt: "a red circle & a blue square".into(),
            negative_prompt: String::new(),
            width: Some(128),
            height: Some(96),
            steps: None,
            guidance: Some(7.5),
            seed: Some(42),
            model: Some("shapes".into()),
            webhook: None,
        };
        let form = submit_form(&p);
        // The server function decodes its arguments as a plain form post's: serde_qs, depth 5,
        // not strict (percent-encoded brackets).
        let back: crate::api::SubmitJob = serde_qs::Config::new(5, false).deserialize_str(&form).unwrap();
        assert_eq!(back.params, p, "{form}");
    }
}
