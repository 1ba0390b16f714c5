//! Event streams (`/api/jobs/{id}/events`): caps on open streams per client and in all, a
//! lifetime after which a stream ends (the page reconnects or polls), and one watcher per job
//! that reads the job on each change and fans the view out to all of that job's streams, so
//! that many viewers of one job cost one store read per change, not one each.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::Event;
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use crate::api::{ApiError, ErrorKind, JobState, JobView};
use crate::jobs::JobService;

#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    pub per_client: usize,
    pub total: usize,
    pub lifetime: Duration,
}

#[derive(Clone)]
pub struct Streams {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: JobService,
    limits: StreamLimits,
    /// Open streams per client, and in all.
    open: Mutex<(HashMap<IpAddr, usize>, usize)>,
    /// The watcher of each job that has streams: its latest view.
    watchers: Mutex<HashMap<String, watch::Receiver<JobView>>>,
}

/// One open stream, counted until it is dropped.
struct Slot {
    inner: Arc<Inner>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.inner.open.lock().expect("open streams");
        if let Some(n) = open.0.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.0.remove(&self.client);
            }
        }
        open.1 -= 1;
        metrics::gauge!("easel_event_streams").set(open.1 as f64);
    }
}

impl Streams {
    pub fn new(jobs: JobService, limits: StreamLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                jobs,
                limits,
                open: Mutex::new((HashMap::new(), 0)),
                watchers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The job's events for `client`, or why not: too many streams (429 for this client's,
    /// 503 for the server's), or no such job.
    pub async fn open(&self, id: &str, client: IpAddr) -> Result<impl Stream<Item = Result<Event, Infallible>>, ApiError> {
        let slot = self.take_slot(client)?;
        let first = self.inner.jobs.status(id).await?;
        let mut views = self.watch(first.clone());
        let lifetime = tokio::time::sleep(self.inner.limits.lifetime);
        let mut shutdown = self.inner.jobs.shutdown_signal();
        Ok(async_stream::stream! {
            let _slot = slot;
            tokio::pin!(lifetime);
            let mut last: Option<JobView> = None;
            loop {
                let view = views.borrow_and_update().clone();
                if last.as_ref() != Some(&view) {
                    if let Ok(event) = Event::default().event(view.state.event_name()).json_data(&view) {
                        yield Ok(event);
                    }
                    if view.state.is_terminal() {
                        break;
                    }
                    last = Some(view);
                }
                // A stream that starts after shutdown began would never see the change.
                if *shutdown.borrow() {
                    break;
                }
                tokio::select! {
                    changed = views.changed() => if changed.is_err() { break },
                    _ = &mut lifetime => break,
                    _ = shutdown.changed() => break,
                }
            }
        })
    }

    fn take_slot(&self, client: IpAddr) -> Result<Slot, ApiError> {
        let limits = self.inner.limits;
        let mut open = self.inner.open.lock().expect("open streams");
        if open.1 >= limits.total {
            return Err(ApiError::new(
                ErrorKind::NotReady,
                "The server has too many open event streams; follow the job with /api/status instead.",
            )
            .retry_after(10));
        }
        let mine = open.0.entry(client).or_insert(0);
        if *mine >= limits.per_client {
            return Err(ApiError::new(
                ErrorKind::RateLimited,
                format!("At most {} event streams at once per client; close one or poll /api/status.", limits.per_client),
            )
            .retry_after(5));
        }
        *mine += 1;
        open.1 += 1;
        metrics::gauge!("easel_event_streams").set(open.1 as f64);
        Ok(Slot { inner: self.inner.clone(), client })
    }

    /// The job's watcher, started if it has none.
    fn watch(&self, first: JobView) -> watch::Receiver<JobView> {
        let mut watchers = self.inner.watchers.lock().expect("watchers");
        if let Some(existing) = watchers.get(&first.job_id) {
            return existing.clone();
        }
        let (sender, receiver) = watch::channel(first.clone());
        watchers.insert(first.job_id.clone(), receiver.clone());
        metrics::gauge!("easel_job_watchers").set(watchers.len() as f64);
        tokio::spawn(run_watcher(self.inner.clone(), sender, first));
        receiver
    }
}

/// Reads the job whenever it (or, while it waits, the queue) changes, until it ends or nobody
/// watches any more.
async fn run_watcher(inner: Arc<Inner>, sender: watch::Sender<JobView>, first: JobView) {
    let id = first.job_id.clone();
    let mut changes = inner.jobs.subscribe();
    let mut shutdown = inner.jobs.shutdown_signal();
    // Every change reaches this process (a shared store announces other processes' too), so
    // the timer is only a safety net, e.g. for announcements lost while Redis reconnected.
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut view = first;
    let mut last_read = tokio::time::Instant::now();
    loop {
        if view.state.is_terminal() || *shutdown.borrow() {
            break;
        }
        tokio::select! {
            changed = changes.recv() => match changed {
                Ok(changed) if changed.to_string() == id => {}
                // A waiting job's place moves when any job is claimed, ends or is cancelled:
                // read again, but at most once a second, however busy the queue.
                Ok(_) | Err(RecvError::Lagged(_)) if matches!(view.state, JobState::Queued { .. }) => {
                    tokio::time::sleep_until(last_read + Duration::from_secs(1)).await;
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
            _ = sender.closed() => {}
        }
        // Nobody left: stop, unless a stream joined meanwhile (checked under the same lock
        // that streams join under).
        {
            let mut watchers = inner.watchers.lock().expect("watchers");
            if sender.receiver_count() <= 1 {
                watchers.remove(&id);
                metrics::gauge!("easel_job_watchers").set(watchers.len() as f64);
                return;
            }
        }
        last_read = tokio::time::Instant::now();
        match inner.jobs.status(&id).await {
            Ok(current) => {
                view = current.clone();
                sender.send_if_modified(|shown| {
                    let modified = *shown != current;
                    *shown = current;
                    modified
                });
            }
            Err(_) => break,
        }
    }
    // Ended: the streams see the last view; new streams start a fresh watcher.
    let mut watchers = inner.watchers.lock().expect("watchers");
    watchers.remove(&id);
    metrics::gauge!("easel_job_watchers").set(watchers.len() as f64);
}
