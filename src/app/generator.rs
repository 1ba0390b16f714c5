//! The generator page: the prompt form, the result area and this visitor's history.
//!
//! Rendered on the server with the models on offer and the visitor's recent jobs (the route
//! waits for both, so the page is complete without JavaScript: the latest job's state, and a
//! self-refresh while it runs). In the browser the page follows a job through its event stream.
//!
//! The page is rendered on the server only; [`Generator`] is the one island the browser
//! hydrates. Everything it needs from the request (the models, the history, a refused no-JS
//! form's error and fields) is [`PageData`]: given to it through context on the server and
//! written into the page as JSON, which the browser reads with `JSON.parse` (island props would
//! ship serde_json's decoders).

use leptos::prelude::*;

use leptos_router::hooks::use_query_map;

use crate::api::{list_models, recent_jobs, ApiError, JobView, ModelsInfo, SubmitJob, REFUSED_FORM_PARAM};
use crate::app::components::errors::{explanation, headline};
use crate::app::components::form::GenerateForm;
use crate::app::components::history::History;
use crate::app::components::result::ResultArea;
use crate::app::components::{Fields, Studio};

/// The id of the script element that carries [`PageData`] to the browser.
const PAGE_DATA_ID: &str = "page-data";

/// What the island starts from.
#[derive(Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PageData {
    models: ModelsInfo,
    recent: Vec<JobView>,
    /// The error of a refused no-JS form post, if the page is its answer.
    url_error: Option<ApiError>,
    /// That form's fields, URL-encoded as posted.
    refused_form: Option<String>,
}

impl PageData {
    /// As JSON inside `<script>`: no `<` in it, so no `</script>` can end it early.
    fn script_text(&self) -> String {
        serde_json::to_string(self).expect("page data serializes").replace('<', "\\u003c")
    }

    /// On the server: what [`GeneratorPage`] provides. In the browser: what it wrote.
    fn current() -> Self {
        #[cfg(feature = "hydrate")]
        {
            Self::from_page().unwrap_or_else(|e| panic!("the page's data is unreadable: {e}"))
        }
        #[cfg(not(feature = "hydrate"))]
        {
            expect_context::<PageData>()
        }
    }

    #[cfg(feature = "hydrate")]
    fn from_page() -> Result<Self, String> {
        use crate::api::wire::{self, Json};
        let text = document()
            .get_element_by_id(PAGE_DATA_ID)
            .and_then(|e| e.text_content())
            .ok_or("no page data")?;
        let json = web_sys::js_sys::JSON::parse(&text).map_err(|_| "not JSON")?;
        let member = |name: &str| json.member(name);
        Ok(PageData {
            models: wire::models_info(&member("models").ok_or("no models")?)?,
            recent: wire::job_views(&member("recent").ok_or("no recent jobs")?)?,
            url_error: member("urlError").map(|e| wire::api_error(&e)).transpose()?,
            refused_form: member("refusedForm").and_then(|f| f.text()),
        })
    }
}

#[component]
pub fn GeneratorPage() -> impl IntoView {
    let models = Resource::new(|| (), |_| list_models());
    let recent = Resource::new(|| (), |_| recent_jobs());
    // A form post without JavaScript that failed comes back here with its error in the URL
    // (the router reads it; the island has no router) and its fields in another parameter.
    let url_error = ServerAction::<SubmitJob>::new()
        .value()
        .get_untracked()
        .and_then(Result::err)
        .map(ApiError::from_untrusted_url);
    let refused_form = use_query_map().with_untracked(|q| q.get(REFUSED_FORM_PARAM));
    view! {
        <header class="masthead">
            <h1>"easel"</h1>
            <p class="tagline">"Describe a picture; easel paints it."</p>
        </header>
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || {
                let (url_error, refused_form) = (url_error.clone(), refused_form.clone());
                Suspend::new(async move {
                let models = models.await;
                let recent = recent.await.unwrap_or_default();
                match models {
                    Ok(models) if !models.models.is_empty() => {
                        let data = PageData { models, recent, url_error, refused_form };
                        let script = data.script_text();
                        provide_context(data);
                        view! {
                            <script type="application/json" id=PAGE_DATA_ID inner_html=script></script>
                            <Generator>
                                <div class="studio">
                                    <div class="compose">
                                        <GenerateForm/>
                                    </div>
                                    <ResultArea/>
                                </div>
                                <History/>
                            </Generator>
                        }
                        .into_any()
                    }
                    Ok(_) => view! { <p class="page-error" role="alert">"The server offers no models at the moment."</p> }.into_any(),
                    Err(e) => view! {
                        <div class="page-error" role="alert" data-error-kind=e.kind.as_str()>
                            <p class="error-title">{headline(e.kind)}</p>
                            <p>{explanation(&e)}</p>
                            <a class="button" href="/">"Reload"</a>
                        </div>
                    }
                    .into_any(),
                }
                })
            }}
        </Suspense>
    }
}

/// The form, the result and the history: the part of the page that runs in the browser. The
/// server renders them (`children`, with this island's studio in context); the browser keeps
/// that markup current (each part's `bind`) instead of hydrating views of it, so the WASM
/// carries the page's behaviour and not its markup.
#[island]
fn Generator(children: Children) -> impl IntoView {
    let PageData { models, recent, url_error, refused_form } = PageData::current();
    let default = models
        .models
        .iter()
        .find(|m| m.name == models.default_model)
        .or(models.models.first())
        .cloned()
        .expect("checked non-empty");
    let fields = Fields::new(&default);
    let latest = recent.first().cloned();
    match (&url_error, refused_form, &latest) {
        // The refused form's own fields: nothing the visitor typed is lost.
        (Some(_), Some(posted), _) => fields.restore_posted(&posted),
        // Otherwise keep what the visitor asked for last (the seed stays random).
        (_, _, Some(job)) => {
            fields.restore(&job.params);
            fields.seed.set(String::new());
        }
        _ => {}
    }
    let studio = Studio {
        models: StoredValue::new(models),
        fields,
        job: RwSignal::new(latest.clone()),
        error: RwSignal::new(url_error),
        submitting: RwSignal::new(false),
        cancelling: RwSignal::new(false),
        history: RwSignal::new(recent),
    };
    provide_context(studio);
    #[cfg(feature = "hydrate")]
    {
        use crate::app::components::{form, history, result};
        form::bind(studio);
        result::bind(studio);
        history::bind(studio);
        // A job still running when the page loaded (a reload, or the no-JS form's redirect)
        // is followed at once.
        if let Some(job) = latest.filter(|j| !j.state.is_terminal()) {
            if studio.error.get_untracked().is_none() {
                studio.show(job);
            }
        }
        // The mark tells tests (and curious people) that the WASM has taken over.
        if let Some(body) = document().body() {
            let _ = body.set_attribute("data-hydrated", "true");
        }
    }
    children()
}
