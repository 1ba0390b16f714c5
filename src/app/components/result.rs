//! The result area: one box with the exact aspect ratio of the requested size, reserved before
//! the job starts, in which the skeleton, the live preview, the finished image or an error is
//! shown; a status line (aria-live) and a progress bar below it; and one row of actions.
//! Every part is always there (hidden when idle), so nothing on the page moves as a job runs.

use leptos::either::{Either, EitherOf4};
use leptos::prelude::*;
use leptos::server_fn::ServerFn;

use super::errors::ErrorCard;
use super::params::{a1111_text, download_name, human_ms};
use super::{Studio, FORM_ID};
use crate::api::{ApiError, CancelJob, ErrorKind, JobState, JobView};

/// What the result area is showing.
#[derive(Clone, Debug, PartialEq)]
enum Shown {
    Idle,
    Submitting,
    Error(ApiError),
    Job(JobView),
}

impl Shown {
    fn name(&self) -> &'static str {
        match self {
            Shown::Idle => "idle",
            Shown::Submitting => "submitting",
            Shown::Error(_) => "error",
            Shown::Job(j) => match j.state {
                JobState::Queued { .. } => "queued",
                JobState::Processing { .. } => "processing",
                JobState::Completed { .. } => "completed",
                JobState::Failed { .. } => "failed",
                JobState::Cancelled => "cancelled",
            },
        }
    }
}

#[component]
pub fn ResultArea() -> impl IntoView {
    let studio = expect_context::<Studio>();
    let shown = Memo::new(move |_| {
        if studio.submitting() {
            Shown::Submitting
        } else if let Some(e) = studio.error.get() {
            Shown::Error(e)
        } else if let Some(j) = studio.job.get() {
            Shown::Job(j)
        } else {
            Shown::Idle
        }
    });
    let state_name = move || shown.with(|s| s.name());

    // The box's size: the shown job's, else the form's (which is what a submit asks for).
    let size = Memo::new(move |_| match shown.get() {
        Shown::Job(j) => (j.params.width, j.params.height),
        _ => (studio.fields.width.get(), studio.fields.height.get()),
    });
    let frame_style = move || {
        let (w, h) = size.get();
        format!("aspect-ratio: {w} / {h}; max-width: min(100%, calc(var(--frame-height) * {w} / {h}));")
    };

    let job_id = move || shown.with(|s| if let Shown::Job(j) = s { Some(j.job_id.clone()) } else { None });
    let active = move || shown.with(|s| matches!(s, Shown::Job(j) if !j.state.is_terminal()));

    // Live status line.
    let status_text = move || match shown.get() {
        Shown::Idle => "Ready when you are.".to_string(),
        Shown::Submitting => "Submitting…".to_string(),
        Shown::Error(e) => super::errors::headline(e.kind).to_string(),
        Shown::Job(j) => match j.state {
            JobState::Queued { position, eta_ms } => {
                let place = if position == 0 { "next in line".to_string() } else { format!("position {position} in the queue") };
                match eta_ms {
                    Some(ms) => format!("Queued — {place}, about {} to go", human_ms(ms)),
                    None => format!("Queued — {place}"),
                }
            }
            JobState::Processing { step, total, .. } => format!("Painting — step {step}/{total}"),
            JobState::Completed { width, height, seed, timings, .. } => {
                format!("Done in {} — {width}×{height}, seed {seed}", human_ms(timings.total_ms))
            }
            JobState::Failed { error } => super::errors::headline(error.kind).to_string(),
            JobState::Cancelled => "Cancelled.".to_string(),
        },
    };

    let progress = move || {
        shown.with(|s| match s {
            Shown::Job(JobView { state: JobState::Processing { step, total, .. }, .. }) => Some((*step, *total)),
            _ => None,
        })
    };

    let edit = Callback::new(move |_| {
        #[cfg(feature = "hydrate")]
        if let Some(el) = document().get_element_by_id("prompt") {
            use wasm_bindgen::JsCast;
            if let Ok(el) = el.dyn_into::<web_sys::HtmlElement>() {
                let _ = el.focus();
            }
        }
    });
    let reconnect = Callback::new(move |_| {
        if let Some(j) = studio.job.get_untracked() {
            studio.show(j);
        }
    });

    // What the frame holds: one concrete view type per kind of content (no type-erased views:
    // each `AnyView` ships every render path, hydration included, for its type).
    let inside = move || match shown.get() {
        Shown::Idle => EitherOf4::A(view! {
            <div class="frame-fill placeholder" aria-hidden="true">
                <span>"Your picture will appear here"</span>
            </div>
        }),
        Shown::Submitting => EitherOf4::B(skeleton(None)),
        Shown::Error(e) => {
            let running = studio.job.with_untracked(|j| j.as_ref().is_some_and(|j| !j.state.is_terminal()));
            let reconnect = (e.kind == ErrorKind::Network && running).then_some(reconnect);
            EitherOf4::D(error_overlay(e, reconnect, edit))
        }
        Shown::Job(j) => {
            let (w, h) = (j.params.width, j.params.height);
            let alt = j.params.prompt.clone();
            match j.state {
                JobState::Queued { .. } => EitherOf4::B(skeleton(None)),
                JobState::Processing { preview_url, .. } => EitherOf4::B(skeleton(preview_url.map(|src| (src, w, h)))),
                JobState::Completed { image_url, width, height, .. } => EitherOf4::C(view! {
                    <img
                        class="frame-img"
                        data-testid="result-image"
                        src=image_url
                        width=width
                        height=height
                        alt=alt
                        style=format!("aspect-ratio: {width} / {height}")
                    />
                }),
                JobState::Failed { error } => {
                    EitherOf4::D(error_overlay(ApiError::new(error.kind, error.message), None, edit))
                }
                JobState::Cancelled => EitherOf4::D(error_overlay(
                    ApiError::new(ErrorKind::Cancelled, "The job was cancelled."),
                    None,
                    edit,
                )),
            }
        }
    };

    // Copy parameters: clipboard, with a short confirmation in the status region.
    let copied = RwSignal::new(false);
    let copy = move |_| {
        let Some(j) = studio.job.get_untracked() else { return };
        let text = a1111_text(&j.params);
        #[cfg(feature = "hydrate")]
        {
            let promise = window().navigator().clipboard().write_text(&text);
            leptos::task::spawn_local(async move {
                let ok = leptos::__reexports::wasm_bindgen_futures::JsFuture::from(promise).await.is_ok();
                let _ = copied.try_set(ok);
                gloo_timers::future::TimeoutFuture::new(2_500).await;
                let _ = copied.try_set(false);
            });
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (text, copied);
    };

    let same_seed = move |_| {
        if let Some(j) = studio.job.get_untracked() {
            studio.fields.restore(&j.params);
            #[cfg(feature = "hydrate")]
            if let Some(el) = document().query_selector("#generate-form button.generate").ok().flatten() {
                use wasm_bindgen::JsCast;
                if let Ok(el) = el.dyn_into::<web_sys::HtmlElement>() {
                    let _ = el.focus();
                }
            }
        }
    };

    let actions = move || match shown.get() {
        Shown::Job(j) if !j.state.is_terminal() => {
            let id = j.job_id.clone();
            let cancel = {
                let id = id.clone();
                move |ev: leptos::ev::SubmitEvent| {
                    ev.prevent_default();
                    studio.cancel.dispatch(CancelJob { job_id: id.clone() });
                }
            };
            // A plain form, so that cancelling works without the WASM too.
            Some(Either::Left(view! {
                <form action=CancelJob::url() method="post" class="inline-form" on:submit=cancel>
                    <input type="hidden" name="job_id" value=id/>
                    <button type="submit" class="button danger" data-testid="cancel" disabled=move || studio.cancel.pending().get()>
                        "Cancel"
                    </button>
                </form>
            }))
        }
        Shown::Job(JobView { state: JobState::Completed { image_url, .. }, params, .. }) => {
            let name = download_name(&params);
            Some(Either::Right(view! {
                <a class="button primary" data-testid="download" href=image_url download=name>
                    "Download"
                </a>
                <button type="button" class="button" data-testid="copy-params" on:click=copy>
                    {move || if copied.get() { "Copied ✓" } else { "Copy parameters" }}
                </button>
                <button type="button" class="button" data-testid="same-seed" on:click=same_seed disabled=move || studio.busy()>
                    "Same seed again"
                </button>
            }))
        }
        _ => None,
    };

    view! {
        <section class="result" aria-labelledby="result-title" data-testid="result" data-state=state_name data-job-id=job_id>
            <h2 id="result-title" class="visually-hidden">"Result"</h2>
            <div class="frame" data-testid="frame" style=frame_style>
                {inside}
            </div>
            <div class="status-block">
                <p id="job-status" class="status" role="status" aria-live="polite" data-testid="job-status" data-state=state_name>
                    {status_text}
                    {move || copied.get().then_some(" Parameters copied.")}
                </p>
                <progress
                    class="progress"
                    data-testid="progress"
                    aria-label="Painting progress"
                    max=move || progress().map(|(_, t)| t.max(1)).unwrap_or(1)
                    value=move || progress().map(|(s, _)| s).unwrap_or(0)
                    class:invisible=move || progress().is_none()
                ></progress>
            </div>
            <div class="actions">{actions}</div>
            // Without JavaScript the page reloads itself while a job runs (progressive enhancement);
            // with JavaScript the browser ignores <noscript> and the stream takes over.
            {move || active().then(|| view! { <noscript inner_html=r#"<meta http-equiv="refresh" content="2;url=/">"#></noscript> })}
        </section>
    }
}

/// The waiting frame, with the live preview once the painter sends one (`src`, width, height).
fn skeleton(preview: Option<(String, u32, u32)>) -> impl IntoView {
    view! {
        <div class="frame-fill skeleton" data-testid="skeleton" aria-hidden="true">
            {preview
                .map(|(src, w, h)| {
                    view! { <img class="frame-img preview" data-testid="preview" src=src width=w height=h alt=""/> }
                })}
        </div>
    }
}

/// An error (or a cancellation) over the frame, with what the visitor can do about it.
fn error_overlay(error: ApiError, reconnect: Option<Callback<()>>, on_edit: Callback<()>) -> impl IntoView {
    view! {
        <div class="frame-fill overlay">
            <ErrorCard error form_id=FORM_ID reconnect on_edit/>
        </div>
    }
}
