//! Live builds: a listed build whose state is not final is listed again every refresh
//! interval, the new tree reconciled into the old one (stable inodes), and the kernel told
//! what changed. The first listing with a final state is the last.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{global, tree_of, Fs, Slot};
use crate::backend::{BackendError, Listing};

/// Build states after which a build never changes again, as the REST API spells them.
///
/// The first five are the final values of `BuildStates` in Buildkite's published GraphQL
/// schema (`PASSED FAILED CANCELED SKIPPED NOT_RUN`, lowercased; vendored in
/// `crates/bkfs-fake/schema/buildkite.graphql`). The others (`scheduled`, `running`,
/// `failing`, `canceling`, `blocked`, `creating`; API-NOTES "Builds and jobs") are not final.
/// Two spellings no schema value has are taken as final too, so that a build carrying one is
/// not refreshed forever: `finished`, the REST builds filter that stands for the finished
/// states (`?state=finished`) and that REST clients list among build states, and
/// `cancelled`, the British spelling of `canceled`. `tests/it/hygiene.rs` checks this list
/// against the schema and against the fake's.
pub const FINAL_BUILD_STATES: [&str; 7] = [
    "passed",
    "failed",
    "canceled",
    "skipped",
    "not_run",
    "finished",
    "cancelled",
];

/// Whether `state` (any case) is one of [`FINAL_BUILD_STATES`].
pub fn is_final_state(state: Option<&str>) -> bool {
    state.is_some_and(|s| FINAL_BUILD_STATES.iter().any(|f| s.eq_ignore_ascii_case(f)))
}

/// Refreshes of one build use at most one API request per this much time on average: half of
/// the smallest documented limit (50 requests a minute per user), so that following a big
/// build through REST (one request per 100 artifacts) never starves reads.
const REQUEST_SPACING: Duration = Duration::from_millis(2400);

/// How long to wait before the next refresh: the refresh interval, stretched for listings
/// that cost more than two requests (REST: the build, then one request per 100 artifacts;
/// GraphQL: one per 50 jobs, plus REST pages of jobs it cut short) to [`REQUEST_SPACING`] per
/// request.
pub fn next_refresh(every: Duration, listing: &Listing) -> Duration {
    let requests = listing.requests;
    if requests <= 2 {
        return every;
    }
    every.max(REQUEST_SPACING * requests as u32)
}

impl Fs {
    /// Starts the refresh loop of a listed build whose state is not final.
    pub(super) fn watch_if_live(self: &Arc<Self>, s: usize) {
        let Some(slot) = self.slot(s) else {
            return;
        };
        if slot.tree.read().unwrap().is_none() {
            return;
        }
        let state = slot.info.read().unwrap().as_ref().map(|b| b.state.clone());
        // Without the build (no read_builds) its state is unknown: it is taken as final.
        let Some(state) = state else {
            return;
        };
        if state.is_none()
            || is_final_state(state.as_deref())
            || slot.watched.swap(true, Ordering::SeqCst)
        {
            return;
        }
        tracing::info!(build = slot.number, state = ?state, every_s = self.cfg.refresh.as_secs_f64(), "build is live; refreshing its listing");
        let weak = Arc::downgrade(self);
        let every = self.cfg.refresh;
        tokio::spawn(async move {
            let mut wait = every;
            loop {
                tokio::time::sleep(wait).await;
                let Some(fs) = weak.upgrade() else {
                    return;
                };
                match fs.lister.list_build(slot.number).await {
                    Ok(listing) => {
                        wait = next_refresh(every, &listing);
                        // A build without a state cannot be followed: take it as final.
                        let done = listing.build.as_ref().is_none_or(|b| {
                            b.state.is_none() || is_final_state(b.state.as_deref())
                        });
                        fs.apply(s, &slot, listing);
                        if done {
                            tracing::info!(
                                build = slot.number,
                                "build finished; no more refreshes"
                            );
                            slot.watched.store(false, Ordering::SeqCst);
                            return;
                        }
                    }
                    Err(BackendError::NotFound { .. }) => {
                        tracing::warn!(
                            build = slot.number,
                            "the build is gone (404); no more refreshes"
                        );
                        slot.watched.store(false, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => {
                        // Back off, up to 5 minutes, while the API keeps failing.
                        wait = (wait * 2).min(Duration::from_secs(300).max(every));
                        tracing::warn!(build = slot.number, error = %e, retry_s = wait.as_secs(), "refreshing a live build failed; will try again");
                    }
                }
            }
        });
    }

    /// Puts a new listing of a loaded build in place and tells the kernel what changed.
    pub(super) fn apply(&self, s: usize, slot: &Slot, listing: Listing) {
        let new = tree_of(&listing, slot.number, self.logs.as_deref());
        let changes = {
            let mut g = slot.tree.write().unwrap();
            match g.as_mut() {
                Some(t) => t.reconcile(new),
                None => return,
            }
        };
        if listing.build.is_some() {
            *slot.info.write().unwrap() = listing.build;
        }
        if changes.is_empty() {
            tracing::debug!(build = slot.number, "refreshed; no change");
            return;
        }
        tracing::info!(
            build = slot.number,
            added = changes.added.len(),
            removed = changes.removed.len(),
            changed = changes.changed_attrs.len(),
            "refreshed the build's listing"
        );
        // Local root's parent, seen from the kernel, is the mount root in a pipeline mount.
        let Some(k) = self.kernel.get() else {
            return;
        };
        for (parent, name) in &changes.added {
            k.inval_entry(global(s, *parent), name);
        }
        for (parent, name, _) in &changes.removed {
            k.inval_entry(global(s, *parent), name);
        }
        for d in &changes.changed_dirs {
            k.inval_inode(global(s, *d));
        }
        for i in &changes.changed_attrs {
            k.inval_inode(global(s, *i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Build;

    fn listing(requests: usize) -> Listing {
        Listing {
            build: Some(Build::default()),
            artifacts: Vec::new(),
            via: "test",
            requests,
        }
    }

    #[test]
    fn refreshes_are_spaced_by_their_cost() {
        let ten = Duration::from_secs(10);
        // Small builds: the interval asked for.
        assert_eq!(next_refresh(ten, &listing(3)), ten);
        // 2,000 artifacts through REST: 21 requests, at most one per 2.4 s.
        assert_eq!(
            next_refresh(ten, &listing(21)),
            Duration::from_millis(2400 * 21)
        );
        // A small build follows even a short interval; a bigger one is spaced.
        let short = Duration::from_millis(100);
        assert_eq!(next_refresh(short, &listing(2)), short);
        assert_eq!(
            next_refresh(short, &listing(3)),
            Duration::from_millis(7200)
        );
    }
}
