//! The Buildkite REST API: wire types and the client.
pub mod model;
