//! What the fake counts: one [`Count`] per kind of request or event, so a test that asks for a
//! count names a real one (a misspelled kind does not compile). [`std::fmt::Display`] gives the
//! snake-case name used in logs and in [`crate::FakeServer::counts`].

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Count {
    /// Every REST request.
    Api,
    /// REST answers with this status (401, 403, 404, 429, 5xx).
    ApiStatus(u16),
    AccessToken,
    ListBuilds,
    GetBuild,
    ListBuildArtifacts,
    ListJobArtifacts,
    GetArtifact,
    Download,
    Delete,
    ApiFaultsInjected,
    /// Every request to `/graphql`.
    Graphql,
    /// 200 answers carrying `errors`.
    GraphqlErrors,
    /// GraphQL answers with this status (anything but 200).
    GraphqlStatus(u16),
    GraphqlFaultsInjected,
    /// Every storage request.
    Storage,
    StorageGet,
    StorageHead,
    /// Storage requests carrying `Authorization` (bkfs must never send one).
    StorageAuthorization,
    /// Storage answers with this status (403, 404, 416, 5xx).
    StorageStatus(u16),
    StorageFaultsInjected,
    StorageFaultStatus,
    StorageFaultReset,
    StorageFaultTruncate,
    StorageFaultStall,
    /// Responses served with flipped bytes.
    StorageCorrupt,
    /// Job-log GETs (JSON or text).
    Log,
    /// Job-log GETs with a `Range`.
    LogRange,
    LogHead,
    LogDelete,
    LogFaultsInjected,
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Count::*;
        let name = match self {
            ApiStatus(c) => return write!(f, "api_{c}"),
            GraphqlStatus(c) => return write!(f, "graphql_{c}"),
            StorageStatus(c) => return write!(f, "storage_{c}"),
            Api => "api",
            AccessToken => "access_token",
            ListBuilds => "list_builds",
            GetBuild => "get_build",
            ListBuildArtifacts => "list_build_artifacts",
            ListJobArtifacts => "list_job_artifacts",
            GetArtifact => "get_artifact",
            Download => "download",
            Delete => "delete",
            ApiFaultsInjected => "api_faults_injected",
            Graphql => "graphql",
            GraphqlErrors => "graphql_errors",
            GraphqlFaultsInjected => "graphql_faults_injected",
            Storage => "storage",
            StorageGet => "storage_get",
            StorageHead => "storage_head",
            StorageAuthorization => "storage_authorization",
            StorageFaultsInjected => "storage_faults_injected",
            StorageFaultStatus => "storage_fault_status",
            StorageFaultReset => "storage_fault_reset",
            StorageFaultTruncate => "storage_fault_truncate",
            StorageFaultStall => "storage_fault_stall",
            StorageCorrupt => "storage_corrupt",
            Log => "log",
            LogRange => "log_range",
            LogHead => "log_head",
            LogDelete => "log_delete",
            LogFaultsInjected => "log_faults_injected",
        };
        f.write_str(name)
    }
}
