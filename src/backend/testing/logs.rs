//! An in-memory [`LogSource`] that follows the job-log endpoint's rules (whole log, or suffix
//! ranges only) and can break, stall or refuse bodies on demand.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;

use crate::backend::{BackendError, BoxFuture, LogSource, LogStream, Result};

#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// The body breaks after this many bytes.
    Break(usize),
    /// The body stalls after this many bytes.
    Stall(usize),
    /// The request fails with a 503.
    Unavailable,
}

#[derive(Default)]
pub struct MockLogs {
    pub logs: Mutex<HashMap<String, Vec<u8>>>,
    pub calls: Mutex<Vec<String>>,
    pub faults: Mutex<VecDeque<Fault>>,
}

impl MockLogs {
    pub fn set(&self, job: &str, raw: &[u8]) {
        self.logs.lock().unwrap().insert(job.into(), raw.to_vec());
    }
    pub fn append(&self, job: &str, raw: &[u8]) {
        self.logs
            .lock()
            .unwrap()
            .entry(job.into())
            .or_default()
            .extend_from_slice(raw);
    }
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    pub fn not_found() -> BackendError {
        BackendError::not_found("not found (404): log: Not Found")
    }
}

impl LogSource for MockLogs {
    fn log_fetch<'a>(
        &'a self,
        _build: u64,
        job: &'a str,
        suffix: Option<u64>,
    ) -> BoxFuture<'a, Result<LogStream>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(match suffix {
                Some(n) => format!("get -{n}"),
                None => "get".into(),
            });
            let log = self
                .logs
                .lock()
                .unwrap()
                .get(job)
                .cloned()
                .ok_or_else(Self::not_found)?;
            let total = log.len() as u64;
            let start = suffix.map_or(0, |n| total - n.min(total));
            let part = Bytes::from(log).slice(start as usize..);
            let body: BoxStream<'static, std::result::Result<Bytes, String>> =
                match self.faults.lock().unwrap().pop_front() {
                    None => stream::iter(
                        part.chunks(7)
                            .map(|c| Ok(Bytes::copy_from_slice(c)))
                            .collect::<Vec<_>>(),
                    )
                    .boxed(),
                    Some(Fault::Break(n)) => stream::iter(vec![
                        Ok(part.slice(..n.min(part.len()))),
                        Err("connection reset".to_string()),
                    ])
                    .boxed(),
                    Some(Fault::Stall(n)) => {
                        stream::iter(vec![Ok(part.slice(..n.min(part.len())))])
                            .chain(stream::pending())
                            .boxed()
                    }
                    Some(Fault::Unavailable) => {
                        return Err(BackendError::Failed(
                            "the API answered 503 for log: Service Unavailable".into(),
                        ))
                    }
                };
            Ok(LogStream {
                start,
                total: Some(total),
                body,
            })
        })
    }

    fn log_delete<'a>(&'a self, _build: u64, job: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push("delete".into());
            self.logs
                .lock()
                .unwrap()
                .remove(job)
                .map(|_| ())
                .ok_or_else(Self::not_found)
        })
    }
}
