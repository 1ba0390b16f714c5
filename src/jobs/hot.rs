//! Job views served from memory, so that a status poll (the API's hottest request, and every
//! event stream's read) costs no store round trip. An ended job's view never changes until
//! retention deletes it; an active job's view is dropped at each of its changes (the service's
//! change announcements: this process's own, or with a shared store every process's) and
//! otherwise kept only briefly, since its queue position moves with other jobs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::broadcast::{self, error::TryRecvError};
use uuid::Uuid;

use crate::api::JobView;

/// How long an active job's view may be served without a change announcement: an announcement
/// that raced with the read which filled the entry is outlived by at most this.
const ACTIVE_FRESH: Duration = Duration::from_millis(250);
/// Views kept at most; past it the cache starts over (a bound, not a policy).
const CAPACITY: usize = 100_000;

struct Entry {
    view: JobView,
    /// Active jobs: served until then.
    fresh_until: Option<Instant>,
    /// Ended jobs: retention deletes them then (ms since the epoch).
    expires_at_ms: Option<i64>,
}

pub(super) struct HotViews {
    inner: Mutex<Inner>,
}

struct Inner {
    entries: HashMap<Uuid, Entry>,
    changes: broadcast::Receiver<Uuid>,
}

impl HotViews {
    pub(super) fn new(changes: broadcast::Receiver<Uuid>) -> Self {
        Self { inner: Mutex::new(Inner { entries: HashMap::new(), changes }) }
    }

    /// The job's view, if one is held and still true.
    pub(super) fn get(&self, id: Uuid, now_ms: i64) -> Option<JobView> {
        let mut inner = self.inner.lock().expect("hot views");
        inner.forget_changed();
        let entry = inner.entries.get(&id)?;
        let fresh = match (entry.fresh_until, entry.expires_at_ms) {
            (Some(until), _) => Instant::now() < until,
            (None, Some(expires)) => now_ms < expires,
            (None, None) => true,
        };
        if fresh {
            Some(entry.view.clone())
        } else {
            inner.entries.remove(&id);
            None
        }
    }

    /// Keeps a view just read from the store. `expires_at_ms`: for an ended job under
    /// retention, when it is deleted.
    pub(super) fn put(&self, id: Uuid, view: &JobView, expires_at_ms: Option<i64>) {
        let mut inner = self.inner.lock().expect("hot views");
        inner.forget_changed();
        if inner.entries.len() >= CAPACITY {
            inner.entries.clear();
        }
        let fresh_until = (!view.state.is_terminal()).then(|| Instant::now() + ACTIVE_FRESH);
        inner.entries.insert(id, Entry { view: view.clone(), fresh_until, expires_at_ms });
    }

    /// Drops every view (retention deleted jobs).
    pub(super) fn clear(&self) {
        self.inner.lock().expect("hot views").entries.clear();
    }
}

impl Inner {
    /// Applies the change announcements that arrived since the last call.
    fn forget_changed(&mut self) {
        loop {
            match self.changes.try_recv() {
                Ok(id) => {
                    self.entries.remove(&id);
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
                // Announcements were missed: none of the held active views can be trusted.
                Err(TryRecvError::Lagged(_)) => self.entries.retain(|_, e| e.fresh_until.is_none()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{JobState, ResolvedParams};

    fn view(state: JobState) -> JobView {
        JobView {
            job_id: "j".into(),
            cancel_token: None,
            state,
            params: ResolvedParams::tiny_for_tests("a fox", 2),
            created_at_ms: 0,
        }
    }

    #[test]
    fn announced_changes_drop_active_views_and_ended_ones_last_until_retention() {
        let (changes, _) = broadcast::channel(4);
        let hot = HotViews::new(changes.subscribe());
        let (active, ended) = (Uuid::new_v4(), Uuid::new_v4());
        hot.put(active, &view(JobState::Processing { step: 1, total: 2, preview_url: None }), None);
        assert!(hot.get(active, 0).is_some());
        changes.send(active).unwrap();
        assert!(hot.get(active, 0).is_none(), "a change drops the view");

        hot.put(ended, &view(JobState::Cancelled), Some(1_000));
        changes.send(Uuid::new_v4()).unwrap();
        assert!(hot.get(ended, 999).is_some(), "other jobs' changes leave it");
        assert!(hot.get(ended, 1_000).is_none(), "gone when retention deletes the job");

        // Missed announcements: held active views go, ended ones stay.
        let queued = view(JobState::Queued { position: 0, eta_ms: None });
        let waiting = Uuid::new_v4();
        hot.put(waiting, &queued, None);
        hot.put(ended, &view(JobState::Cancelled), None);
        for _ in 0..6 {
            let _ = changes.send(Uuid::new_v4());
        }
        assert!(hot.get(waiting, 0).is_none());
        assert!(hot.get(ended, 0).is_some());
    }

    #[test]
    fn active_views_are_served_only_briefly() {
        let (changes, _) = broadcast::channel(4);
        let hot = HotViews::new(changes.subscribe());
        let id = Uuid::new_v4();
        hot.put(id, &view(JobState::Queued { position: 3, eta_ms: None }), None);
        assert!(hot.get(id, 0).is_some());
        std::thread::sleep(ACTIVE_FRESH + Duration::from_millis(20));
        assert!(hot.get(id, 0).is_none());
    }
}
