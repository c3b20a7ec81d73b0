//! A [`Lister`] over listings and a builds list that tests change between calls, counting
//! its calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::api::model::Build;
use crate::backend::{BackendError, BoxFuture, Lister, Listing, Result};

pub fn not_found(what: String) -> BackendError {
    BackendError::not_found(format!("not found (404): mock://{what}: Not Found"))
}

/// A [`Lister`] over listings and a builds list that tests change between calls.
#[derive(Default)]
pub struct MockLister {
    pub listings: Mutex<HashMap<u64, Listing>>,
    /// Newest first, as the API lists them.
    pub builds: Mutex<Vec<Build>>,
    /// How long every call takes (to make concurrent callers overlap).
    pub delay: Mutex<Duration>,
    /// `list_build` calls, by build number, counted when they start.
    pub list_build_calls: Mutex<Vec<u64>>,
    /// What each finished `list_build` served: build number and build state.
    pub served: Mutex<Vec<(u64, Option<String>)>>,
    pub get_build_calls: Mutex<Vec<u64>>,
    pub list_builds_calls: AtomicUsize,
}

impl MockLister {
    pub fn set_listing(&self, number: u64, l: Listing) {
        self.listings.lock().unwrap().insert(number, l);
    }

    pub fn set_builds(&self, b: Vec<Build>) {
        *self.builds.lock().unwrap() = b;
    }

    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }

    pub fn list_build_count(&self, number: u64) -> usize {
        self.list_build_calls
            .lock()
            .unwrap()
            .iter()
            .filter(|n| **n == number)
            .count()
    }

    pub fn list_build_total(&self) -> usize {
        self.list_build_calls.lock().unwrap().len()
    }

    /// How many `list_build(number)` calls returned the build in `state`.
    pub fn served(&self, number: u64, state: &str) -> usize {
        self.served
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, s)| *n == number && s.as_deref() == Some(state))
            .count()
    }

    pub fn get_build_calls(&self) -> Vec<u64> {
        self.get_build_calls.lock().unwrap().clone()
    }

    pub fn list_builds_count(&self) -> usize {
        self.list_builds_calls.load(Ordering::SeqCst)
    }

    pub async fn pause(&self) {
        let d = *self.delay.lock().unwrap();
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

impl Lister for MockLister {
    fn list_build(&self, number: u64) -> BoxFuture<'_, Result<Listing>> {
        self.list_build_calls.lock().unwrap().push(number);
        Box::pin(async move {
            self.pause().await;
            let l = self.listings.lock().unwrap().get(&number).cloned();
            let state = l
                .as_ref()
                .and_then(|l| l.build.as_ref())
                .and_then(|b| b.state.clone());
            self.served.lock().unwrap().push((number, state));
            l.ok_or_else(|| not_found(format!("builds/{number}/artifacts")))
        })
    }

    fn get_build(&self, number: u64) -> BoxFuture<'_, Result<Build>> {
        self.get_build_calls.lock().unwrap().push(number);
        Box::pin(async move {
            self.pause().await;
            let from_listing = self
                .listings
                .lock()
                .unwrap()
                .get(&number)
                .and_then(|l| l.build.clone());
            let from_list = || {
                self.builds
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|b| b.number == number)
                    .cloned()
            };
            from_listing
                .or_else(from_list)
                .ok_or_else(|| not_found(format!("builds/{number}")))
        })
    }

    fn list_builds<'a>(
        &'a self,
        limit: usize,
        branch: Option<&'a str>,
        state: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Build>>> {
        self.list_builds_calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            self.pause().await;
            Ok(self
                .builds
                .lock()
                .unwrap()
                .iter()
                .filter(|b| branch.is_none_or(|br| b.branch.as_deref() == Some(br)))
                .filter(|b| state.is_none_or(|st| b.state.as_deref() == Some(st)))
                .take(limit)
                .cloned()
                .collect())
        })
    }
}
