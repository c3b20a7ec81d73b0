//! The integration tests, one binary (ripgrep's layout: one link, not twenty): each module mounts
//! bkfs through the kernel against the fake Buildkite (`bkfs_fake`) on 127.0.0.1; `common` is
//! the harness.

mod archive_access;
mod archives;
mod cache;
mod cli_errors;
mod common;
mod delete_and_erofs;
mod faults;
mod graphql;
mod hostile_input;
mod hygiene;
mod layout;
mod lifecycle;
mod listing_memory;
mod live;
mod logs;
mod mount_tree;
mod pipeline;
mod read_path;
mod reading;
mod real_tools;
mod ship;
mod soak;
mod troubleshooting;
