//! This visitor's recent pictures (newest first, from `recent_jobs`, kept by the server under
//! the visitor cookie, so it survives a reload). Picking one shows it in the result area and
//! puts its parameters back into the form.

use leptos::prelude::*;

use super::Studio;
use crate::api::{JobState, JobView};

/// One entry as the gallery shows it: the job with the shown job's live state.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub job_id: String,
    pub label: String,
    /// The thumbnail of a finished picture: (src, width, height).
    pub image: Option<(String, u32, u32)>,
    /// Otherwise its state in a word, in a box of the picture's shape.
    pub state_word: &'static str,
    pub size: (u32, u32),
    pub current: bool,
}

impl Entry {
    fn new(job: &JobView, shown: Option<&JobView>) -> Self {
        let state = shown.filter(|s| s.job_id == job.job_id).map_or(&job.state, |s| &s.state);
        let p = &job.params;
        Entry {
            job_id: job.job_id.clone(),
            label: format!("Show “{}” ({}×{}, seed {})", p.prompt, p.width, p.height, p.seed),
            image: match state {
                JobState::Completed { image_url, width, height, .. } => Some((image_url.clone(), *width, *height)),
                _ => None,
            },
            state_word: match state {
                JobState::Queued { .. } => "Queued",
                JobState::Processing { .. } => "Painting",
                JobState::Failed { .. } => "Failed",
                JobState::Cancelled => "Cancelled",
                JobState::Completed { .. } => "",
            },
            size: (p.width, p.height),
            current: shown.is_some_and(|s| s.job_id == job.job_id),
        }
    }

    fn aspect(&self) -> String {
        let (w, h) = self.image.as_ref().map_or(self.size, |i| (i.1, i.2));
        format!("aspect-ratio: {w} / {h}")
    }
}

/// The gallery's entries now (tracked).
fn entries(studio: &Studio) -> Vec<Entry> {
    let shown = studio.job.get();
    studio.history.with(|h| h.iter().map(|j| Entry::new(j, shown.as_ref())).collect())
}

/// The history as the server renders it.
#[component]
pub fn History() -> impl IntoView {
    let studio = expect_context::<Studio>();
    let (items, busy) = untrack(|| (entries(&studio), studio.busy()));
    let empty = items.is_empty();
    view! {
        <section class="history" id="history" aria-labelledby="history-title">
            <h2 id="history-title">"Your recent pictures"</h2>
            <ul class="gallery" data-testid="history" hidden=empty>
                {items
                    .into_iter()
                    .map(|e| {
                        let style = e.aspect();
                        view! {
                            <li>
                                <button type="button" class="thumb" class:current=e.current data-job-id=e.job_id aria-label=e.label.clone() title=e.label disabled=busy>
                                    {match e.image {
                                        Some((src, w, h)) => leptos::either::Either::Left(view! { <img src=src width=w height=h alt="" loading="lazy" style=style/> }),
                                        None => leptos::either::Either::Right(view! { <span class="thumb-state" style=style>{e.state_word}</span> }),
                                    }}
                                </button>
                            </li>
                        }
                    })
                    .collect_view()}
            </ul>
            <p class="muted" data-testid="history-empty" hidden=!empty>"Nothing yet — your pictures will be kept here."</p>
        </section>
    }
}

/// Keeps the server's gallery current in the browser: rebuilt when an entry changes, locked
/// while busy; a click on an entry shows it.
#[cfg(feature = "hydrate")]
pub fn bind(studio: Studio) {
    use super::dom::*;

    let root = by_id("history");
    let (gallery, empty) = (find(&root, "ul"), find(&root, "[data-testid=history-empty]"));
    Effect::new({
        let gallery = gallery.clone();
        move |before: Option<Vec<Entry>>| {
            let items = entries(&studio);
            set_hidden(&gallery, items.is_empty());
            set_hidden(&empty, !items.is_empty());
            // The server rendered the first list; later ones are built when an entry changed.
            if before.as_ref().is_some_and(|b| *b != items) {
                gallery.set_text_content(None);
                for e in &items {
                    let _ = gallery.append_child(&entry_element(e));
                }
            }
            let busy = studio.busy();
            for button in find_all(&gallery, "button") {
                set_property(&button, "disabled", busy);
            }
            items
        }
    });
    on(&gallery, "click", move |ev| {
        let Some(id) = target_closest(&ev, "button[data-job-id]").and_then(|b| b.get_attribute("data-job-id")) else { return };
        if studio.busy() {
            return;
        }
        if let Some(job) = studio.history.with_untracked(|h| h.iter().find(|j| j.job_id == id).cloned()) {
            studio.fields.restore(&job.params);
            studio.show(job);
        }
    });
}

/// One entry as the server's markup has it.
#[cfg(feature = "hydrate")]
fn entry_element(e: &Entry) -> web_sys::Element {
    use super::dom::element;
    let style = e.aspect();
    let button = element(
        "button",
        &[("type", "button"), ("class", if e.current { "thumb current" } else { "thumb" }), ("data-job-id", &e.job_id), ("aria-label", &e.label), ("title", &e.label)],
    );
    let inside = match &e.image {
        Some((src, w, h)) => element("img", &[("src", src), ("width", &w.to_string()), ("height", &h.to_string()), ("alt", ""), ("loading", "lazy"), ("style", &style)]),
        None => {
            let span = element("span", &[("class", "thumb-state"), ("style", &style)]);
            span.set_text_content(Some(e.state_word));
            span
        }
    };
    let _ = button.append_child(&inside);
    let li = element("li", &[]);
    let _ = li.append_child(&button);
    li
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ResolvedParams;

    #[test]
    fn entries_follow_the_shown_job() {
        let queued = JobView {
            job_id: "j1".into(),
            cancel_token: None,
            state: JobState::Queued { position: 0, eta_ms: None },
            params: ResolvedParams::tiny_for_tests("a fox", 4),
            created_at_ms: 0,
        };
        let e = Entry::new(&queued, None);
        assert_eq!((e.state_word, e.current, e.image.is_none()), ("Queued", false, true));
        assert_eq!(e.label, "Show “a fox” (64×64, seed 1)");
        let mut done = queued.clone();
        done.state = JobState::Completed { image_url: "/i.png".into(), width: 64, height: 64, seed: 1, timings: Default::default() };
        let e = Entry::new(&queued, Some(&done));
        assert_eq!((e.current, e.image), (true, Some(("/i.png".to_string(), 64, 64))));
    }
}
