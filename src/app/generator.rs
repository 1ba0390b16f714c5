//! The generator page: the prompt form, the result area and this visitor's history.
//!
//! Rendered on the server with the models on offer and the visitor's recent jobs (the route
//! waits for both, so the page is complete without JavaScript: the latest job's state, and a
//! self-refresh while it runs). In the browser the page follows a job through its event stream.
//!
//! The page is rendered on the server only; [`Generator`] is the one island the browser
//! hydrates, so everything it needs from the request (the models, the history, a refused
//! no-JS form's error and fields) reaches it as serialized props.

use leptos::prelude::*;

use leptos_router::hooks::use_query_map;

use crate::api::{list_models, recent_jobs, ApiError, CancelJob, JobView, ModelsInfo, SubmitJob, REFUSED_FORM_PARAM};
use crate::app::components::errors::{explanation, headline};
use crate::app::components::form::GenerateForm;
use crate::app::components::history::History;
use crate::app::components::result::ResultArea;
use crate::app::components::{call, Fields, Studio};

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
                        view! { <Generator models recent url_error refused_form/> }.into_any()
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

/// The form, the result and the history: the part of the page that runs in the browser.
#[island]
fn Generator(
    models: ModelsInfo,
    recent: Vec<JobView>,
    /// The error of a refused no-JS form post, if the page is its answer.
    url_error: Option<ApiError>,
    /// That form's fields, URL-encoded as posted.
    refused_form: Option<String>,
) -> impl IntoView {
    // The mark tells tests (and curious people) that the WASM has taken over (effects run
    // only in the browser).
    Effect::new(|_| {
        if let Some(body) = document().body() {
            let _ = body.set_attribute("data-hydrated", "true");
        }
    });
    let default = models
        .models
        .iter()
        .find(|m| m.name == models.default_model)
        .or(models.models.first())
        .cloned()
        .expect("checked non-empty");
    let fields = Fields::new(&default);
    let submit = call::<SubmitJob>();
    let cancel = call::<CancelJob>();
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
        submit,
        cancel,
        history: RwSignal::new(recent),
        form: NodeRef::new(),
    };
    provide_context(studio);

    // A job still running when the page loaded (a reload, or the no-JS form's redirect) is
    // followed at once.
    Effect::new(move |_| {
        if let Some(job) = latest.clone().filter(|j| !j.state.is_terminal()) {
            if studio.error.get_untracked().is_none() {
                studio.show(job);
            }
        }
    });

    // The submit's answer: follow the new job, or show why it was refused.
    Effect::watch(
        move || submit.version().get(),
        move |_, _, _| match submit.value().get_untracked() {
            Some(Ok(job)) => {
                studio.show(job);
                studio.refresh_history();
            }
            Some(Err(e)) => {
                studio.job.set(None);
                studio.error.set(Some(e));
            }
            None => {}
        },
        false,
    );

    // The cancel's answer: the job as it now stands.
    Effect::watch(
        move || cancel.version().get(),
        move |_, _, _| match cancel.value().get_untracked() {
            Some(Ok(view)) => {
                let same = studio.job.with_untracked(|j| j.as_ref().is_some_and(|j| j.job_id == view.job_id));
                if same {
                    studio.show(view);
                }
            }
            Some(Err(e)) => studio.error.set(Some(e)),
            None => {}
        },
        false,
    );

    // A job that just ended joins the history.
    Effect::watch(
        move || studio.job.with(|j| j.as_ref().map(|j| (j.job_id.clone(), j.state.is_terminal()))),
        move |now, before, _| {
            if let (Some((id, true)), Some(Some((old, false)))) = (now, before) {
                if id == old {
                    studio.refresh_history();
                }
            }
        },
        false,
    );

    view! {
        <div class="studio">
            <div class="compose">
                <GenerateForm/>
            </div>
            <ResultArea/>
        </div>
        <History/>
    }
}
