//! Following a job in the browser: the Server-Sent Events stream
//! (`/api/jobs/{id}/events`), with polling of `job_status` every [`POLL_MS`] when the stream
//! fails, until a terminal state — or until the job has shown no change for
//! [`FOLLOW_CAP_MS`], when the page gives up with a timeout message. A job moving through a
//! long queue keeps changing (its position and ETA), so only a stalled one is given up on. Only one job is followed at a time; following another (or
//! [`stop`]) ends the previous one. On the server these are no-ops.

/// How often the fallback polls, and how often the follower checks its time cap.
pub const POLL_MS: u32 = 2_000;
/// The page stops waiting for a job that has shown no change for this long.
pub const FOLLOW_CAP_MINUTES: u32 = 10;
pub const FOLLOW_CAP_MS: f64 = FOLLOW_CAP_MINUTES as f64 * 60.0 * 1000.0;
/// Consecutive failed polls before the page reports the connection as lost.
pub const MAX_POLL_FAILURES: u32 = 3;


#[cfg(feature = "hydrate")]
pub use imp::{follow, stop};

#[cfg(not(feature = "hydrate"))]
pub fn follow(_job_id: String, _studio: super::Studio) {}

#[cfg(not(feature = "hydrate"))]
pub fn stop() {}

#[cfg(feature = "hydrate")]
mod imp {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    use leptos::prelude::*;
    use wasm_bindgen::prelude::Closure;
    use wasm_bindgen::JsCast;
    use web_sys::js_sys::Date;
    use web_sys::{EventSource, MessageEvent};

    use super::super::Studio;
    use super::{FOLLOW_CAP_MINUTES, FOLLOW_CAP_MS, MAX_POLL_FAILURES, POLL_MS};
    use crate::api::{client, wire, ApiError, ErrorKind, JobView};

    struct Stream {
        source: EventSource,
        // Kept alive as long as the source may call them; dropped only when the next job is
        // followed (never from inside one of them).
        _listeners: Vec<Closure<dyn FnMut(MessageEvent)>>,
        _on_error: Closure<dyn FnMut(web_sys::Event)>,
    }

    thread_local! {
        static GENERATION: Cell<u64> = const { Cell::new(0) };
        static STREAM: RefCell<Option<Stream>> = const { RefCell::new(None) };
    }

    fn generation() -> u64 {
        GENERATION.with(Cell::get)
    }

    fn close_stream() {
        STREAM.with(|s| {
            if let Some(stream) = s.borrow().as_ref() {
                stream.source.close();
            }
        });
    }

    /// Stops following: closes the stream and ends the polling loop.
    pub fn stop() {
        GENERATION.with(|g| g.set(g.get() + 1));
        close_stream();
    }

    pub fn follow(job_id: String, studio: Studio) {
        stop();
        // Safe to drop the old listeners here: we are not inside one of them.
        STREAM.with(|s| s.borrow_mut().take());
        let me = generation();
        let polling = Rc::new(Cell::new(false));

        let last_news = Rc::new(Cell::new(Date::now()));
        let apply: Rc<dyn Fn(JobView)> = {
            let id = job_id.clone();
            let last_news = last_news.clone();
            Rc::new(move |view: JobView| {
                if generation() != me || view.job_id != id {
                    return;
                }
                if studio.job.with_untracked(|shown| shown.as_ref() != Some(&view)) {
                    last_news.set(Date::now());
                }
                let terminal = view.state.is_terminal();
                studio.update(view);
                if terminal {
                    stop();
                }
            })
        };

        match EventSource::new(&format!("/api/jobs/{job_id}/events")) {
            Ok(source) => {
                let mut listeners = Vec::new();
                for name in ["queued", "progress", "completed", "failed", "cancelled"] {
                    let apply = apply.clone();
                    let listener = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
                        let event = ev.data().as_string().and_then(|text| web_sys::js_sys::JSON::parse(&text).ok());
                        match event.map(|json| wire::job_view(&json)) {
                            Some(Ok(view)) => apply(view),
                            Some(Err(e)) => leptos::logging::warn!("unreadable job event: {e}"),
                            None => leptos::logging::warn!("a job event that is not JSON"),
                        }
                    });
                    let _ = source.add_event_listener_with_callback(name, listener.as_ref().unchecked_ref());
                    listeners.push(listener);
                }
                let on_error = {
                    let polling = polling.clone();
                    Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
                        if generation() == me && !polling.get() {
                            // Do not let the browser reconnect on its own: poll instead.
                            close_stream();
                            polling.set(true);
                        }
                    })
                };
                source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
                STREAM.with(|s| {
                    *s.borrow_mut() = Some(Stream { source, _listeners: listeners, _on_error: on_error })
                });
            }
            Err(_) => polling.set(true),
        }

        leptos::task::spawn_local(async move {
            let mut failures = 0;
            loop {
                gloo_timers::future::TimeoutFuture::new(POLL_MS).await;
                if generation() != me {
                    break;
                }
                if Date::now() - last_news.get() > FOLLOW_CAP_MS {
                    stop();
                    let _ = studio.error.try_set(Some(ApiError::new(
                        ErrorKind::Timeout,
                        format!("The picture showed no progress for {FOLLOW_CAP_MINUTES} minutes, so the page stopped waiting."),
                    )));
                    break;
                }
                if !polling.get() {
                    continue;
                }
                match client::job_status(&job_id).await {
                    Ok(view) => {
                        failures = 0;
                        apply(view);
                    }
                    Err(e) if e.kind == ErrorKind::Network || e.kind == ErrorKind::RateLimited => {
                        failures += 1;
                        if failures >= MAX_POLL_FAILURES && generation() == me {
                            stop();
                            let _ = studio.error.try_set(Some(ApiError::new(
                                ErrorKind::Network,
                                "Lost contact with the server while following the picture.",
                            )));
                            break;
                        }
                    }
                    Err(e) => {
                        if generation() == me {
                            stop();
                            let _ = studio.error.try_set(Some(e));
                        }
                        break;
                    }
                }
            }
        });
    }
}
