//! Inode table and naming rules (in progress).
