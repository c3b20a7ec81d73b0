//! The Buildkite REST API: wire types, `Link` parsing and the client.
pub mod client;
pub mod link;
pub mod model;

pub use client::{ApiClient, ApiError};
