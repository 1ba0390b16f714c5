//! The result area: one box with the exact aspect ratio of the requested size, reserved before
//! the job starts, in which the placeholder, the skeleton with the live preview, the finished
//! image or an error card is shown; a status line (aria-live) and a progress bar below it; and
//! one row of actions. Every part is always there (hidden when not in use), so nothing on the
//! page moves as a job runs, and the browser follows a job by changing attributes and text.
//!
//! What the area shows is decided once, by [`ResultModel::new`]; the server renders it
//! ([`ResultArea`]) and the browser applies it to the same markup ([`bind`]).

use leptos::prelude::*;
use leptos::server_fn::ServerFn;

use super::errors::{Card, ErrorCard};
use super::params::{download_name, human_ms};
use super::Studio;
use crate::api::{ApiError, CancelJob, ErrorKind, JobState, JobView};

/// What the result area is about.
#[derive(Clone, Debug, PartialEq)]
pub enum Shown {
    Idle,
    Submitting,
    Error(ApiError),
    Job(JobView),
}

/// What fills the frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    Placeholder,
    /// Waiting, with the painter's latest preview once it sends one.
    Skeleton { preview: Option<String> },
    Image { src: String, width: u32, height: u32, alt: String },
    Error(Card),
}

/// The row of actions under the frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Actions {
    None,
    Cancel { job_id: String },
    Finished { href: String, download: String },
}

/// Everything the result area shows.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultModel {
    /// `data-state`: idle, submitting, error, queued, processing, completed, failed, cancelled.
    pub state: &'static str,
    pub job_id: Option<String>,
    /// The frame's size: the shown job's, else the form's (what a submit asks for).
    pub size: (u32, u32),
    pub frame: Frame,
    pub status: String,
    /// Step and total while painting.
    pub progress: Option<(u32, u32)>,
    pub actions: Actions,
}

impl ResultModel {
    /// `form_size`: the form's size; `can_reconnect`: a running job's connection dropped.
    pub fn new(shown: &Shown, form_size: (u32, u32), can_reconnect: bool) -> Self {
        let error_model = |state, error: &ApiError, can_reconnect| {
            let card = Card::new(error, can_reconnect);
            (state, Frame::Error(card.clone()), card.title.to_string())
        };
        let (state, frame, status) = match shown {
            Shown::Idle => ("idle", Frame::Placeholder, "Ready when you are.".to_string()),
            Shown::Submitting => ("submitting", Frame::Skeleton { preview: None }, "Submitting…".to_string()),
            Shown::Error(e) => error_model("error", e, can_reconnect && e.kind == ErrorKind::Network),
            Shown::Job(j) => match &j.state {
                JobState::Queued { position, eta_ms } => {
                    let place = if *position == 0 { "next in line".to_string() } else { format!("position {position} in the queue") };
                    let status = match eta_ms {
                        Some(ms) => format!("Queued — {place}, about {} to go", human_ms(*ms)),
                        None => format!("Queued — {place}"),
                    };
                    ("queued", Frame::Skeleton { preview: None }, status)
                }
                JobState::Processing { step, total, preview_url } => (
                    "processing",
                    Frame::Skeleton { preview: preview_url.clone() },
                    format!("Painting — step {step}/{total}"),
                ),
                JobState::Completed { image_url, width, height, seed, timings } => (
                    "completed",
                    Frame::Image { src: image_url.clone(), width: *width, height: *height, alt: j.params.prompt.clone() },
                    format!("Done in {} — {width}×{height}, seed {seed}", human_ms(timings.total_ms)),
                ),
                JobState::Failed { error } => error_model("failed", &ApiError::new(error.kind, error.message.clone()), false),
                JobState::Cancelled => {
                    error_model("cancelled", &ApiError::new(ErrorKind::Cancelled, "The job was cancelled."), false)
                }
            },
        };
        let job = match shown {
            Shown::Job(j) => Some(j),
            _ => None,
        };
        let progress = job.and_then(|j| match j.state {
            JobState::Processing { step, total, .. } => Some((step, total)),
            _ => None,
        });
        let actions = match job {
            Some(j) if !j.state.is_terminal() => Actions::Cancel { job_id: j.job_id.clone() },
            Some(JobView { state: JobState::Completed { image_url, .. }, params, .. }) => {
                Actions::Finished { href: image_url.clone(), download: download_name(params) }
            }
            _ => Actions::None,
        };
        ResultModel {
            state,
            job_id: job.map(|j| j.job_id.clone()),
            size: job.map_or(form_size, |j| (j.params.width, j.params.height)),
            frame,
            status,
            progress,
            actions,
        }
    }

    pub fn frame_style(&self) -> String {
        let (w, h) = self.size;
        format!("aspect-ratio: {w} / {h}; max-width: min(100%, calc(var(--frame-height) * {w} / {h}));")
    }

    fn running(&self) -> bool {
        matches!(self.actions, Actions::Cancel { .. })
    }
}

/// The result area as the server renders it: every part present, the unused ones hidden.
#[component]
pub fn ResultArea() -> impl IntoView {
    let studio = expect_context::<Studio>();
    let m = studio.result_model_untracked();
    let card = match &m.frame {
        Frame::Error(card) => Some(card.clone()),
        _ => None,
    };
    let has_card = card.is_some();
    let preview = match &m.frame {
        Frame::Skeleton { preview } => preview.clone(),
        _ => None,
    };
    let image = match &m.frame {
        Frame::Image { src, width, height, alt } => Some((src.clone(), *width, *height, alt.clone())),
        _ => None,
    };
    let (w, h) = m.size;
    let cancel_id = match &m.actions {
        Actions::Cancel { job_id } => Some(job_id.clone()),
        _ => None,
    };
    let finished = match &m.actions {
        Actions::Finished { href, download } => Some((href.clone(), download.clone())),
        _ => None,
    };
    view! {
        <section class="result" id="result" aria-labelledby="result-title" data-testid="result" data-state=m.state data-job-id=m.job_id.clone()>
            <h2 id="result-title" class="visually-hidden">"Result"</h2>
            <div class="frame" data-testid="frame" style=m.frame_style()>
                <div class="frame-fill placeholder" aria-hidden="true" hidden=m.frame != Frame::Placeholder>
                    <span>"Your picture will appear here"</span>
                </div>
                <div class="frame-fill skeleton" data-testid="skeleton" aria-hidden="true" hidden=!matches!(m.frame, Frame::Skeleton { .. })>
                    <img class="frame-img preview" data-testid="preview" src=preview.clone() width=w height=h alt="" hidden=preview.is_none()/>
                </div>
                <img
                    class="frame-img"
                    data-testid="result-image"
                    src=image.as_ref().map(|i| i.0.clone())
                    width=image.as_ref().map(|i| i.1)
                    height=image.as_ref().map(|i| i.2)
                    alt=image.as_ref().map(|i| i.3.clone())
                    style=image.as_ref().map(|i| format!("aspect-ratio: {} / {}", i.1, i.2))
                    hidden=image.is_none()
                />
                <div class="frame-fill overlay" hidden=!has_card>
                    <ErrorCard card/>
                </div>
            </div>
            <div class="status-block">
                <p id="job-status" class="status" role="status" aria-live="polite" data-testid="job-status" data-state=m.state>
                    {m.status.clone()}
                </p>
                <progress
                    class="progress"
                    class:invisible=m.progress.is_none()
                    data-testid="progress"
                    aria-label="Painting progress"
                    max=m.progress.map_or(1, |(_, t)| t.max(1))
                    value=m.progress.map_or(0, |(s, _)| s)
                ></progress>
            </div>
            <div class="actions">
                // A plain form, so that cancelling works without the WASM too.
                <form action=CancelJob::url() method="post" class="inline-form cancel-form" hidden=cancel_id.is_none()>
                    <input type="hidden" name="job_id" value=cancel_id.clone()/>
                    <button type="submit" class="button danger" data-testid="cancel" hidden=cancel_id.is_none()>
                        "Cancel"
                    </button>
                </form>
                <a class="button primary" data-testid="download" href=finished.as_ref().map(|f| f.0.clone()) download=finished.as_ref().map(|f| f.1.clone()) hidden=finished.is_none()>
                    "Download"
                </a>
                <button type="button" class="button" data-testid="copy-params" hidden=finished.is_none()>
                    "Copy parameters"
                </button>
                <button type="button" class="button" data-testid="same-seed" hidden=finished.is_none()>
                    "Same seed again"
                </button>
            </div>
            // Without JavaScript the page reloads itself while a job runs (progressive enhancement);
            // with JavaScript the browser ignores <noscript> and the stream takes over.
            {m.running().then(|| view! { <noscript inner_html=r#"<meta http-equiv="refresh" content="2;url=/">"#></noscript> })}
        </section>
    }
}

/// Keeps the server's result area current in the browser, and wires its buttons.
#[cfg(feature = "hydrate")]
pub fn bind(studio: Studio) {
    use super::dom::*;
    use super::errors::wait_text;
    use std::cell::Cell;
    use std::rc::Rc;

    let root = by_id("result");
    let part = |testid: &str| find(&root, &format!("[data-testid={testid}]"));
    let (frame, placeholder, skeleton, preview, image) =
        (part("frame"), find(&root, ".placeholder"), part("skeleton"), part("preview"), part("result-image"));
    let (overlay, card) = (find(&root, ".overlay"), part("error"));
    let (card_title, card_detail, card_wait) = (find(&card, ".error-title"), find(&card, ".error-detail"), part("retry-wait"));
    let (retry, reconnect, edit) = (part("retry"), part("reconnect"), part("edit"));
    let (status, progress) = (part("job-status"), part("progress"));
    let (cancel_form, cancel, download, copy, same_seed) =
        (find(&root, ".cancel-form"), part("cancel"), part("download"), part("copy-params"), part("same-seed"));
    let copied = RwSignal::new(false);
    // Each new card's countdown ends the one before.
    let countdown = Rc::new(Cell::new(0u64));

    on(&cancel_form, "submit", move |ev| {
        ev.prevent_default();
        if let Some(j) = studio.job.get_untracked() {
            studio.cancel(j.job_id);
        }
    });
    on(&reconnect, "click", move |_| {
        if let Some(j) = studio.job.get_untracked() {
            studio.show(j);
        }
    });
    on(&edit, "click", move |_| focus(&by_id("prompt")));
    on(&copy, "click", move |_| {
        let Some(j) = studio.job.get_untracked() else { return };
        let promise = window().navigator().clipboard().write_text(&super::params::a1111_text(&j.params));
        leptos::task::spawn_local(async move {
            let ok = wasm_bindgen_futures::JsFuture::from(promise).await.is_ok();
            let _ = copied.try_set(ok);
            gloo_timers::future::TimeoutFuture::new(2_500).await;
            let _ = copied.try_set(false);
        });
    });
    on(&same_seed, "click", move |_| {
        if let Some(j) = studio.job.get_untracked() {
            studio.fields.restore(&j.params);
            focus(&find(&by_id(super::FORM_ID), "button.generate"));
        }
    });

    // One effect for the whole area: it reruns on any change, and writes only what differs.
    // It hands on the card it showed, so that a countdown restarts only for a new card.
    Effect::new(move |shown_before: Option<Option<Card>>| {
        let m = studio.result_model();
        set_attr(&root, "data-state", Some(m.state));
        set_attr(&status, "data-state", Some(m.state));
        set_attr(&root, "data-job-id", m.job_id.as_deref());
        set_attr(&frame, "style", Some(&m.frame_style()));
        let (w, h) = (m.size.0.to_string(), m.size.1.to_string());

        set_hidden(&placeholder, m.frame != Frame::Placeholder);
        set_hidden(&skeleton, !matches!(m.frame, Frame::Skeleton { .. }));
        let preview_src = match &m.frame {
            Frame::Skeleton { preview } => preview.as_deref(),
            _ => None,
        };
        set_attr(&preview, "src", preview_src);
        set_attr(&preview, "width", Some(&w));
        set_attr(&preview, "height", Some(&h));
        set_hidden(&preview, preview_src.is_none());

        match &m.frame {
            Frame::Image { src, width, height, alt } => {
                set_attr(&image, "src", Some(src));
                set_attr(&image, "width", Some(&width.to_string()));
                set_attr(&image, "height", Some(&height.to_string()));
                set_attr(&image, "alt", Some(alt));
                set_attr(&image, "style", Some(&format!("aspect-ratio: {width} / {height}")));
                set_hidden(&image, false);
            }
            _ => {
                set_hidden(&image, true);
                set_attr(&image, "src", None);
            }
        }

        let shown_card = match &m.frame {
            Frame::Error(c) => Some(c),
            _ => None,
        };
        set_hidden(&overlay, shown_card.is_none());
        if let Some(c) = shown_card {
            set_attr(&card, "data-error-kind", Some(c.kind.as_str()));
            set_text(&card_title, c.title);
            set_text(&card_detail, &c.detail);
            set_hidden(&retry, c.remedy != super::errors::Remedy::Retry);
            set_hidden(&reconnect, c.remedy != super::errors::Remedy::Reconnect);
            set_hidden(&edit, c.remedy != super::errors::Remedy::Edit);
        }
        // A live countdown, one per card shown.
        let new_card = shown_before.as_ref().map(Option::as_ref) != Some(shown_card);
        let wait = shown_card.and_then(|c| c.wait).filter(|_| new_card);
        if new_card {
            countdown.set(countdown.get() + 1);
            set_hidden(&card_wait, wait.is_none());
        }
        let me = countdown.get();
        if let Some(secs) = wait {
            set_text(&card_wait, &wait_text(secs));
            let (countdown, card_wait) = (countdown.clone(), card_wait.clone());
            leptos::task::spawn_local(async move {
                for left in (0..secs).rev() {
                    gloo_timers::future::TimeoutFuture::new(1_000).await;
                    if countdown.get() != me {
                        return;
                    }
                    set_text(&card_wait, &wait_text(left));
                }
            });
        }

        set_text(&status, &format!("{}{}", m.status, if copied.get() { " Parameters copied." } else { "" }));
        set_attr(&progress, "max", Some(&m.progress.map_or(1, |(_, t)| t.max(1)).to_string()));
        set_attr(&progress, "value", Some(&m.progress.map_or(0, |(s, _)| s).to_string()));
        let _ = progress.class_list().toggle_with_force("invisible", m.progress.is_none());

        let cancel_id = match &m.actions {
            Actions::Cancel { job_id } => Some(job_id.as_str()),
            _ => None,
        };
        set_hidden(&cancel_form, cancel_id.is_none());
        set_hidden(&cancel, cancel_id.is_none());
        let finished = match &m.actions {
            Actions::Finished { href, download } => Some((href, download)),
            _ => None,
        };
        set_attr(&download, "href", finished.map(|f| f.0.as_str()));
        set_attr(&download, "download", finished.map(|f| f.1.as_str()));
        for el in [&download, &copy, &same_seed] {
            set_hidden(el, finished.is_none());
        }
        set_text(&copy, if copied.get() { "Copied ✓" } else { "Copy parameters" });
        set_property(&cancel, "disabled", studio.cancelling.get());
        set_property(&same_seed, "disabled", studio.busy());
        shown_card.cloned()
    });

}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{JobFailure, ResolvedParams, Timings};

    fn job(state: JobState) -> Shown {
        Shown::Job(JobView {
            job_id: "j1".into(),
            cancel_token: None,
            state,
            params: ResolvedParams::tiny_for_tests("a red circle", 4),
            created_at_ms: 0,
        })
    }

    #[test]
    fn each_state_shows_its_own_frame_status_and_actions() {
        let idle = ResultModel::new(&Shown::Idle, (96, 64), false);
        assert_eq!((idle.state, idle.size, &idle.frame, &idle.actions), ("idle", (96, 64), &Frame::Placeholder, &Actions::None));

        let queued = ResultModel::new(&job(JobState::Queued { position: 2, eta_ms: Some(1_500) }), (96, 64), false);
        assert_eq!(queued.status, "Queued — position 2 in the queue, about 1.5 s to go");
        assert_eq!((queued.size, &queued.actions), ((64, 64), &Actions::Cancel { job_id: "j1".into() }));

        let painting = ResultModel::new(
            &job(JobState::Processing { step: 3, total: 4, preview_url: Some("/p.png".into()) }),
            (96, 64),
            false,
        );
        assert_eq!((painting.progress, &painting.frame), (Some((3, 4)), &Frame::Skeleton { preview: Some("/p.png".into()) }));

        let done = ResultModel::new(
            &job(JobState::Completed {
                image_url: "/i.png".into(),
                width: 64,
                height: 64,
                seed: 1,
                timings: Timings { queued_ms: 0, inference_ms: 400, total_ms: 450 },
            }),
            (96, 64),
            false,
        );
        assert_eq!(done.status, "Done in 450 ms — 64×64, seed 1");
        assert_eq!(done.actions, Actions::Finished { href: "/i.png".into(), download: "a-red-circle-1.png".into() });

        let failed = ResultModel::new(
            &job(JobState::Failed { error: JobFailure { kind: ErrorKind::InferenceFailed, message: "x".into() } }),
            (96, 64),
            false,
        );
        assert!(matches!(&failed.frame, Frame::Error(c) if c.kind == ErrorKind::InferenceFailed), "{failed:?}");
        assert_eq!((failed.state, &failed.actions), ("failed", &Actions::None));
    }

    #[test]
    fn a_dropped_connection_offers_reconnect_only_while_its_job_runs() {
        let lost = Shown::Error(ApiError::new(ErrorKind::Network, "gone"));
        let remedy = |can| match ResultModel::new(&lost, (64, 64), can).frame {
            Frame::Error(c) => c.remedy,
            other => panic!("{other:?}"),
        };
        assert_eq!(remedy(true), super::super::errors::Remedy::Reconnect);
        assert_eq!(remedy(false), super::super::errors::Remedy::Retry);
    }
}
