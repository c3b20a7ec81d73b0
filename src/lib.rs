//! bkfs: mount a Buildkite build's artifacts as a read-only FUSE filesystem.
//!
//! See `docs/DESIGN.md` for how the modules fit together.
pub mod access;
pub mod api;
pub mod archive;
pub mod backend;
pub mod build_ref;
pub mod cli;
pub mod content;
pub mod control;
pub mod fs;
pub mod fuse;
pub mod http;
pub mod joblog;
pub mod logging;
pub mod mount;
pub mod mount_opts;
pub mod passthrough;
pub mod progress;
pub mod secret;
pub mod source;
pub mod stats;
pub mod status;
pub mod tree;
