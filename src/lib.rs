//! bkfs: mount a Buildkite build's artifacts as a read-only FUSE filesystem.
pub mod api;
