//! The Buildkite REST and GraphQL APIs: wire types, `Link` parsing and the client.
pub mod client;
pub mod graphql;
pub mod link;
pub mod model;

pub use client::{ApiClient, ApiError};
pub use graphql::{url_lifetime, GqlBuild, GraphqlError};
