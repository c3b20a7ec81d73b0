//! bkfs: mount a Buildkite build's artifacts as a read-only FUSE filesystem.
pub mod api;
pub mod fake;
pub mod tree;
