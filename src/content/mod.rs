//! Artifact contents, one concern per module:
//! (The network interface, [`crate::backend::Remote`], and the mount's one signed-URL cache,
//! [`crate::backend::UrlCache`], live in the backend seam.)
//! - [`fetch`]: ranged GETs with retries and URL refreshes;
//! - [`budget`]: the memory budget (`--memory-limit`) with backpressure;
//! - [`blocks`]: the in-memory block LRU, charged to the budget;
//! - [`prefetch`]: sequential-stream detection per open handle;
//! - [`cache`]: the on-disk cache (its LRU, block files) and [`store`]: one sparse file per
//!   large artifact with a block map;
//! - [`reader`]: serves `read` calls from all of them;
//! - [`storage`], [`raw_path`]: the storage HTTP client.
pub mod blocks;
pub mod budget;
pub mod cache;
pub mod fetch;
pub mod prefetch;
pub mod raw_path;
pub mod reader;
pub mod storage;
pub mod store;

pub use reader::{Handle, ReadError, Reader, ReaderConfig};
