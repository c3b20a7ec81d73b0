//! What FUSE passthrough needs from the core: the verified cache file of an artifact.

use std::path::PathBuf;

use super::{is_archive_ino, Fs, Ino};

impl Fs {
    /// The complete, verified disk-cache file holding artifact `ino`, if there is one.
    pub fn backing_path(&self, ino: Ino) -> Option<PathBuf> {
        if is_archive_ino(ino) || self.is_log(ino) {
            return None;
        }
        let meta = self.current_file(ino).ok()?;
        self.reader.backing_path(&meta)
    }
}
