//! This visitor's recent pictures (newest first, from `recent_jobs`, kept by the server under
//! the visitor cookie, so it survives a reload). Picking one shows it in the result area and
//! puts its parameters back into the form.

use leptos::either::Either;
use leptos::prelude::*;

use super::Studio;
use crate::api::{JobState, JobView};

#[component]
pub fn History() -> impl IntoView {
    let studio = expect_context::<Studio>();
    // The shown job is live (followed through its stream); its history entry shows the same.
    let items = move || {
        let shown = studio.job.get();
        let mut items = studio.history.get();
        if let Some(shown) = shown {
            for item in items.iter_mut().filter(|i| i.job_id == shown.job_id) {
                item.state = shown.state.clone();
            }
        }
        items
    };
    // The list is built once it has items, not again at every change (a memo, not `Show`,
    // whose type-erased children would ship every render path).
    let has_items = Memo::new(move |_| studio.history.with(|h| !h.is_empty()));
    view! {
        <section class="history" aria-labelledby="history-title">
            <h2 id="history-title">"Your recent pictures"</h2>
            {move || {
                if has_items.get() {
                    Either::Left(view! {
                        <ul class="gallery" data-testid="history">
                            <For each=items key=|j: &JobView| (j.job_id.clone(), j.state.event_name()) let:job>
                                <HistoryItem job/>
                            </For>
                        </ul>
                    })
                } else {
                    Either::Right(view! { <p class="muted" data-testid="history-empty">"Nothing yet — your pictures will be kept here."</p> })
                }
            }}
        </section>
    }
}

#[component]
fn HistoryItem(job: JobView) -> impl IntoView {
    let studio = expect_context::<Studio>();
    let id = job.job_id.clone();
    let label = format!("Show “{}” ({}×{}, seed {})", job.params.prompt, job.params.width, job.params.height, job.params.seed);
    let (w, h) = (job.params.width, job.params.height);
    let current = {
        let id = id.clone();
        move || studio.job.with(|j| j.as_ref().is_some_and(|j| j.job_id == id))
    };
    let thumb = match &job.state {
        JobState::Completed { image_url, width, height, .. } => Either::Left(view! {
            <img src=image_url.clone() width=*width height=*height alt="" loading="lazy" style=format!("aspect-ratio: {width} / {height}")/>
        }),
        other => {
            let text = match other {
                JobState::Queued { .. } => "Queued",
                JobState::Processing { .. } => "Painting",
                JobState::Failed { .. } => "Failed",
                JobState::Cancelled => "Cancelled",
                JobState::Completed { .. } => "",
            };
            Either::Right(view! { <span class="thumb-state" style=format!("aspect-ratio: {w} / {h}")>{text}</span> })
        }
    };
    let pick = move |_| {
        studio.fields.restore(&job.params);
        studio.show(job.clone());
    };
    view! {
        <li>
            <button
                type="button"
                class="thumb"
                class:current=current
                data-job-id=id
                aria-label=label.clone()
                title=label
                disabled=move || studio.busy()
                on:click=pick
            >
                {thumb}
            </button>
        </li>
    }
}
