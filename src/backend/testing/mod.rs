//! The test doubles of the backend seam, one per trait, shared by the unit tests of `fs`,
//! `content` and `joblog`. In-memory, no I/O; each records the calls it got so tests can
//! count requests.

pub mod kernel;
pub mod lister;
pub mod logs;
pub mod remote;

pub use kernel::{Inval, Recorder};
pub use lister::MockLister;
pub use logs::{Fault, MockLogs};
pub use remote::{MockRemote, OneObject};
