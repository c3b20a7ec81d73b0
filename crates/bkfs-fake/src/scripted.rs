//! A scripted HTTP server for tests of HTTP clients: every request is recorded and answered
//! with whatever the test's closure says. (The [`crate::FakeServer`] follows the documented
//! API; this one answers anything, for tests of how a client takes odd or hostile answers.)
//! Used by bkfs's API-client unit tests and by the hostile-input integration tests.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use serde_json::Value;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(k).and_then(|v| v.to_str().ok())
    }
    pub fn param(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A canned answer.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(v: Value) -> Reply {
        Reply::status(200, &v.to_string())
    }
    pub fn status(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
}

#[derive(Clone)]
pub struct Server {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Forgets the requests seen so far (numbering starts again from 0).
    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

/// Serves on 127.0.0.1 until the test's runtime ends; `answer` gets each request (numbered
/// from 0 in the order they arrived) and the server's base URL.
pub async fn serve<F>(answer: F) -> Server
where
    F: Fn(usize, &Seen, &str) -> Reply + Send + Sync + 'static,
{
    serve_on("127.0.0.1", answer).await
}

/// [`serve`] on another loopback address (`127.0.0.2`: another origin on this machine).
pub async fn serve_on<F>(ip: &str, answer: F) -> Server
where
    F: Fn(usize, &Seen, &str) -> Reply + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let answer = Arc::new(answer);
    let (log, b) = (seen.clone(), base.clone());
    let router = Router::new().fallback(move |req: Request| {
        let (log, answer, base) = (log.clone(), answer.clone(), b.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let query = url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
            let s = Seen {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query,
                headers: parts.headers,
                body,
            };
            let n = {
                let mut l = log.lock().unwrap();
                l.push(s.clone());
                l.len() - 1
            };
            let r = answer(n, &s, &base);
            let mut resp = Response::new(Body::from(r.body));
            *resp.status_mut() = StatusCode::from_u16(r.status).unwrap();
            resp.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            for (k, v) in r.headers {
                resp.headers_mut().append(
                    axum::http::HeaderName::try_from(k).unwrap(),
                    v.parse().unwrap(),
                );
            }
            resp
        }
    });
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Server { base, seen }
}
