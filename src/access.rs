//! `access(2)` answers from the mode bits, as a local filesystem would: `test -x` on a `0444`
//! file is false, `find -executable` lists no file. Pure logic; the FUSE adapter calls it.
//!
//! bkfs answers `access` itself rather than mounting with `default_permissions`: the kernel's
//! check would give the same answers for read and execute, but writing is refused with
//! `EROFS` here (the mount is read-only, or with `--allow-delete` deletes are the only
//! mutation), and a directory counts as writable exactly when deletes are allowed.

/// What a node shows to `stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub dir: bool,
}

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// `Ok` or the errno for an `access(node, mask)` call (`mask` of `R_OK|W_OK|X_OK`, or `F_OK`).
pub fn check(node: &Node, who: Caller, mask: i32, deletes_allowed: bool) -> Result<(), i32> {
    if mask & libc::W_OK != 0 && !(node.dir && deletes_allowed) {
        return Err(libc::EROFS);
    }
    let perm = u32::from(node.perm);
    if who.uid == 0 {
        // Root reads anything; it may execute only what has at least one x bit.
        if mask & libc::X_OK != 0 && perm & 0o111 == 0 {
            return Err(libc::EACCES);
        }
        return Ok(());
    }
    let bits = if who.uid == node.uid {
        (perm >> 6) & 7
    } else if who.gid == node.gid {
        (perm >> 3) & 7
    } else {
        perm & 7
    };
    let need_r = mask & libc::R_OK != 0 && bits & 4 == 0;
    let need_x = mask & libc::X_OK != 0 && bits & 1 == 0;
    if need_r || need_x {
        Err(libc::EACCES)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libc::{EACCES, EROFS, F_OK, R_OK, W_OK, X_OK};

    const FILE: Node = Node {
        perm: 0o444,
        uid: 1000,
        gid: 1000,
        dir: false,
    };
    const DIR: Node = Node {
        perm: 0o555,
        uid: 1000,
        gid: 1000,
        dir: true,
    };
    const OWNER: Caller = Caller {
        uid: 1000,
        gid: 1000,
    };
    const ROOT: Caller = Caller { uid: 0, gid: 0 };
    const OTHER: Caller = Caller {
        uid: 2000,
        gid: 2000,
    };

    #[test]
    fn files_are_readable_not_executable_not_writable() {
        for who in [OWNER, ROOT, OTHER] {
            assert_eq!(check(&FILE, who, F_OK, false), Ok(()));
            assert_eq!(check(&FILE, who, R_OK, false), Ok(()));
            assert_eq!(check(&FILE, who, X_OK, false), Err(EACCES), "{who:?}");
            assert_eq!(check(&FILE, who, R_OK | X_OK, false), Err(EACCES));
            assert_eq!(check(&FILE, who, W_OK, true), Err(EROFS));
        }
    }

    #[test]
    fn directories_are_searchable_and_writable_only_with_deletes() {
        for who in [OWNER, ROOT, OTHER] {
            assert_eq!(check(&DIR, who, R_OK | X_OK, false), Ok(()));
            assert_eq!(check(&DIR, who, W_OK, false), Err(EROFS));
            assert_eq!(check(&DIR, who, W_OK | X_OK, true), Ok(()));
        }
    }

    #[test]
    fn owner_group_and_other_bits_are_each_used() {
        let n = Node {
            perm: 0o710,
            ..FILE
        };
        assert_eq!(check(&n, OWNER, R_OK | X_OK, false), Ok(()));
        let group = Caller {
            uid: 3000,
            gid: 1000,
        };
        assert_eq!(check(&n, group, X_OK, false), Ok(()));
        assert_eq!(check(&n, group, R_OK, false), Err(EACCES));
        assert_eq!(check(&n, OTHER, X_OK, false), Err(EACCES));
        assert_eq!(check(&n, ROOT, X_OK, false), Ok(()));
    }

    proptest::proptest! {
        /// Root may do what anyone may, and X_OK for root needs an x bit somewhere.
        #[test]
        fn root_is_a_superset_and_needs_an_x_bit(perm in 0u16..0o1000, mask in 0i32..8, uid in 1u32..5, dir: bool, del: bool) {
            let n = Node { perm, uid: 1, gid: 1, dir };
            let who = Caller { uid, gid: uid };
            if check(&n, who, mask, del).is_ok() {
                proptest::prop_assert!(check(&n, ROOT, mask, del).is_ok());
            }
            if mask & X_OK != 0 && perm & 0o111 == 0 {
                proptest::prop_assert!(check(&n, ROOT, mask, del).is_err());
            }
        }
    }
}
