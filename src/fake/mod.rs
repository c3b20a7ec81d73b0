//! Fake Buildkite API + storage server (in progress).
