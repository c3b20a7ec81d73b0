//! Extended attributes: what `getfattr -d` shows of builds, job directories, artifacts and
//! job logs, all from memory.

use std::ffi::OsStr;

use super::{is_archive_ino, split, Fs, FsError, Result};
use crate::tree::{Ino, NodeKind, ROOT_INO};

impl Fs {
    /// Extended attributes of a node, in a stable order.
    pub fn xattrs(&self, ino: Ino) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                out.push((format!("user.buildkite.{k}"), v.as_bytes().to_vec()));
            }
        };
        if self.is_pipeline_ns(ino) {
            self.getattr(ino)?;
            return Ok(out);
        }
        if is_archive_ino(ino) {
            return self.archives.xattrs(ino);
        }
        let (s, local) = split(ino);
        let slot = self.slot(s).ok_or(FsError::NotFound)?;
        if local == ROOT_INO {
            // Cloned so that no two slot locks are ever held at once.
            let info = slot.info.read().unwrap().clone();
            if let Some(b) = info.as_ref() {
                put("build_number", Some(&b.number.to_string()));
                put("build_state", b.state.as_deref());
                put("branch", b.branch.as_deref());
                put("commit", b.commit.as_deref());
                put("web_url", b.web_url.as_deref());
            }
            if slot.tree.read().unwrap().is_none() {
                return Ok(out);
            }
        }
        let tree = slot.tree.read().unwrap();
        let tree = tree.as_ref().ok_or(FsError::NotFound)?;
        let n = tree.get(local).ok_or(FsError::NotFound)?;
        match &n.kind {
            NodeKind::File(f) => {
                put("artifact_id", Some(&f.artifact_id));
                put("job_id", Some(&f.job_id));
                put("sha1sum", f.sha1sum.as_deref());
                put("mime_type", f.mime_type.as_deref());
                put("state", f.state.as_deref());
                put("path", Some(&f.original_path));
            }
            NodeKind::Dir { job: Some(j), .. } => {
                put("job_id", Some(&j.job_id));
                put("job_label", j.label.as_deref());
                put("web_url", j.web_url.as_deref());
            }
            NodeKind::Log(l) => {
                put("job_id", Some(&l.job_id));
                put("job_label", l.label.as_deref());
                put("web_url", l.web_url.as_deref());
                let raw = self.logs.as_ref().and_then(|s| s.raw_size(&l.job_id));
                put("log_raw_size", raw.map(|n| n.to_string()).as_deref());
            }
            NodeKind::Dir { job: None, .. } => {}
        }
        Ok(out)
    }

    /// One attribute. Only the `user.` namespace exists here: any other name (what `ls -l`
    /// probes on every file: `security.selinux`, `system.posix_acl_access`) is
    /// `EOPNOTSUPP` at once, which tells `ls` the filesystem has none, so it asks once per run
    /// instead of once per file (coreutils caches that answer per device).
    pub fn getxattr(&self, ino: Ino, name: &OsStr) -> Result<Vec<u8>> {
        let name = name.to_str().ok_or(FsError::NoAttr)?;
        if !name.starts_with("user.") {
            return Err(FsError::NotSupported);
        }
        self.xattrs(ino)?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .ok_or(FsError::NoAttr)
    }
}
