//! Start-up before the mount: the token's scopes, the first listing of the build or the
//! pipeline, and readable messages for the API's failures.

use std::sync::Arc;
use std::time::Duration;

use super::MountPlan;
use crate::api::ApiClient;
use crate::backend::{BackendError, Build, Listing};
use crate::build_ref::Target;
use crate::content::storage::StorageClient;
use crate::source::{Source, SourceConfig};

/// A readable start-up error for an API failure at `what`.
fn explain(e: impl Into<BackendError>, plan: &MountPlan, what: &str) -> String {
    let e: BackendError = e.into();
    match &e {
        BackendError::Denied { status: 403, message, .. } => format!(
            "the token may not {what} (403: {}). Create a token with the read_artifacts scope (and read_builds for job names).",
            crate::api::client::sentence(message)
        ),
        BackendError::NotFound { message, .. } => match &plan.target {
            Target::Build(b) => format!(
                "build {b} not found (404: {message}). Check the organization, pipeline and build number, and that the token can access that organization."
            ),
            Target::Pipeline(p) => format!(
                "pipeline {p} not found (404: {message}). Check the organization and pipeline, and that the token can access that organization."
            ),
        },
        BackendError::Unreachable(_) => format!("{e}. Check --api-url / BUILDKITE_API_URL and the network."),
        _ => e.to_string(),
    }
}

/// What start-up fetched.
pub(super) enum Fetched {
    Build(u64, Box<Listing>),
    Pipeline(Vec<Build>, crate::fs::Links),
}

pub(super) struct Prepared {
    pub(super) fetched: Fetched,
    pub(super) source: Arc<Source>,
    /// The token may read job logs (and the builds' jobs).
    pub(super) logs: bool,
}

pub(super) async fn prepare(plan: &MountPlan) -> Result<Prepared, String> {
    let mut api = ApiClient::new(&plan.api_url, plan.token.clone())?;
    if let Some(g) = &plan.graphql_url {
        api = api.with_graphql(g)?;
    }
    let tok = api
        .access_token()
        .await
        .map_err(|e| explain(e, plan, "be validated"))?;
    let has = |s: &str| tok.scopes.iter().any(|x| x == s);
    if !tok.scopes.is_empty() && !has("read_artifacts") {
        return Err(format!(
            "the API token lacks the read_artifacts scope (it has: {}). Create a token with read_artifacts.",
            tok.scopes.join(", ")
        ));
    }
    let can_read_builds = tok.scopes.is_empty() || has("read_builds");
    if !can_read_builds {
        tracing::warn!("the token lacks read_builds; job directories are named by job id");
    }
    let logs = plan.log_format.is_some()
        && match (
            can_read_builds,
            tok.scopes.is_empty() || has("read_build_logs"),
        ) {
            (true, true) => true,
            (false, _) => {
                tracing::info!(
                    "no job logs are shown: the token lacks read_builds (jobs are unknown)"
                );
                false
            }
            (true, false) => {
                tracing::info!("no job logs are shown: the token lacks the read_build_logs scope");
                false
            }
        };
    // A connection that delivers nothing for this long is treated as stalled: the attempt
    // ends with the bytes received so far and the next one resumes after them, all within
    // --read-timeout.
    let stall = (plan.read_timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(10));
    let storage = StorageClient::new(stall)?;
    let source = Arc::new(Source::new(
        api,
        plan.target.pipeline_ref(),
        storage,
        SourceConfig {
            graphql: plan.graphql_url.is_some(),
            can_read_builds,
        },
    ));
    let fetched = match &plan.target {
        Target::Build(b) => {
            let listing = source
                .list_build(b.number)
                .await
                .map_err(|e| explain(e, plan, "list artifacts"))?;
            tracing::info!(build = %b, via = listing.via, artifacts = listing.artifacts.len(), "listed the build");
            Fetched::Build(b.number, Box::new(listing))
        }
        Target::Pipeline(p) => {
            if !can_read_builds {
                return Err(format!(
                    "mounting the pipeline {p} needs a token with the read_builds scope (it has: {}); mount one build (ORG/PIPELINE/NUMBER) instead",
                    tok.scopes.join(", ")
                ));
            }
            let (builds, links) =
                crate::fs::list_pipeline(&*source, plan.builds, plan.branch.as_deref())
                    .await
                    .map_err(|e| explain(e, plan, "list builds"))?;
            tracing::info!(pipeline = %p, builds = builds.len(), ?links, "listed the pipeline's builds");
            Fetched::Pipeline(builds, links)
        }
    };
    Ok(Prepared {
        fetched,
        source,
        logs,
    })
}
