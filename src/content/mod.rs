//! Artifact contents: the storage client, the network interface, and the reader that serves
//! `read` calls from them.
pub mod cache;
pub mod raw_path;
pub mod reader;
pub mod remote;
pub mod storage;

pub use reader::{Handle, ReadError, Reader, ReaderConfig};
pub use remote::{Remote, SignedUrl};
