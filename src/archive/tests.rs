//! Unit and property tests of the pure archive code: archives built with the `zip`, `tar`
//! and `flate2` crates index to exactly their entries; hostile bytes never panic.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};

use proptest::prelude::*;

use super::tar::TarWalker;
use super::zip::{self as z, Tail};
use super::*;

/// Rewrites a small zip's end so that its central directory is found only through a ZIP64
/// end record and locator (the classic end record's fields saturated).
fn to_zip64(b: &[u8]) -> Vec<u8> {
    let e = b.len() - 22;
    assert_eq!(&b[e..e + 4], b"PK\x05\x06");
    let entries = u16::from_le_bytes([b[e + 10], b[e + 11]]) as u64;
    let cd_size = u32::from_le_bytes(b[e + 12..e + 16].try_into().unwrap()) as u64;
    let cd_off = u32::from_le_bytes(b[e + 16..e + 20].try_into().unwrap()) as u64;
    let mut out = b[..e].to_vec();
    let at = out.len() as u64;
    out.extend_from_slice(b"PK\x06\x06");
    out.extend_from_slice(&44u64.to_le_bytes());
    out.extend_from_slice(&[45, 0, 45, 0]);
    out.extend_from_slice(&[0; 8]);
    for v in [entries, entries, cd_size, cd_off] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(b"PK\x06\x07");
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&at.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]);
    // entries on this disk, entries, CD size, CD offset: all "see the ZIP64 record".
    out.extend_from_slice(&[0xff; 12]);
    out.extend_from_slice(&[0; 2]);
    out
}

fn make_zip(files: &[(&str, &[u8], bool)], large: bool) -> Vec<u8> {
    let mut w = ::zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data, deflate) in files {
        let opts = ::zip::write::SimpleFileOptions::default()
            .compression_method(if *deflate {
                ::zip::CompressionMethod::Deflated
            } else {
                ::zip::CompressionMethod::Stored
            })
            .large_file(large);
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Parses a whole zip the way the filesystem does (tail, maybe ZIP64 record, directory).
fn index_zip(b: &[u8]) -> Result<Index, ArchiveError> {
    let size = b.len() as u64;
    let tail_at = size - size.min(z::TAIL_LEN);
    let loc = match z::parse_tail(&b[tail_at as usize..], size)? {
        Tail::Found(l) => l,
        Tail::Zip64At(at) => {
            let at = at as usize;
            z::parse_zip64_eocd(&b[at.min(b.len())..], at as u64)?
        }
    };
    let cd = &b[loc.offset as usize..(loc.offset + loc.size) as usize];
    let raw = z::parse_cd(cd, &loc)?
        .into_iter()
        .map(z::CdEntry::into_raw)
        .collect();
    Index::build(Format::Zip, raw, loc.offset)
}

/// An entry's bytes, read the way the filesystem does.
fn zip_entry(b: &[u8], idx: &Index, ix: u32) -> Result<Vec<u8>, ArchiveError> {
    let e = idx.get(ix).unwrap();
    let d = e.data.as_ref().unwrap();
    let Data::Zip {
        header,
        method,
        csize,
        ..
    } = d
    else {
        panic!()
    };
    let off = z::data_offset(&b[*header as usize..], d, idx.stream_len)? as usize;
    let raw = &b[off..off + *csize as usize];
    Ok(match *method {
        z::STORED => raw.to_vec(),
        z::DEFLATED => {
            let mut out = Vec::new();
            flate2::read::DeflateDecoder::new(raw)
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        m => panic!("method {m}"),
    })
}

fn files_of(idx: &Index) -> BTreeMap<String, u32> {
    (1..idx.entries.len() as u32)
        .filter(|&i| idx.get(i).unwrap().kind == EntryKind::File)
        .map(|i| (idx.path_of(i), i))
        .collect()
}

#[test]
fn zip_stored_and_deflated_entries_round_trip() {
    let big = vec![7u8; 100_000];
    let b = make_zip(
        &[
            ("a.txt", b"hello", false),
            ("dir/sub/b.bin", &big, true),
            ("dir/c.txt", b"", true),
        ],
        false,
    );
    let idx = index_zip(&b).unwrap();
    let files = files_of(&idx);
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["a.txt", "dir/c.txt", "dir/sub/b.bin"]
    );
    assert_eq!(zip_entry(&b, &idx, files["a.txt"]).unwrap(), b"hello");
    assert_eq!(zip_entry(&b, &idx, files["dir/sub/b.bin"]).unwrap(), big);
    assert!(idx.children(idx.resolve("dir/sub").unwrap()).is_some());
    assert_eq!(idx.get(files["dir/sub/b.bin"]).unwrap().size, 100_000);
}

#[test]
fn zip64_records_are_followed() {
    let b = to_zip64(&make_zip(
        &[("x", b"abc", false), ("y/z", b"defg", true)],
        true,
    ));
    let size = b.len() as u64;
    let tail = &b[(size - size.min(z::TAIL_LEN)) as usize..];
    assert!(matches!(
        z::parse_tail(tail, size).unwrap(),
        Tail::Zip64At(_)
    ));
    let idx = index_zip(&b).unwrap();
    let files = files_of(&idx);
    assert_eq!(zip_entry(&b, &idx, files["y/z"]).unwrap(), b"defg");
}

#[test]
fn zip_with_a_comment_is_found() {
    let mut w = ::zip::ZipWriter::new(Cursor::new(Vec::new()));
    w.set_comment("c".repeat(1000)).unwrap();
    w.start_file("f", ::zip::write::SimpleFileOptions::default())
        .unwrap();
    w.write_all(b"x").unwrap();
    let b = w.finish().unwrap().into_inner();
    assert_eq!(files_of(&index_zip(&b).unwrap()).len(), 1);
}

#[test]
fn local_header_disagreeing_with_directory_is_refused() {
    let b = make_zip(&[("a.txt", b"hello", false)], false);
    let idx = index_zip(&b).unwrap();
    let ix = files_of(&idx)["a.txt"];
    let mut bad = b.clone();
    bad[30] = b'b'; // the local header's name
    assert!(zip_entry(&bad, &idx, ix).is_err());
    let mut bad = b.clone();
    bad[8] = 8; // the local header's method
    assert!(zip_entry(&bad, &idx, ix).is_err());
}

#[test]
fn absurd_entry_counts_are_refused_without_allocating() {
    let b = make_zip(&[("a", b"1", false)], false);
    let mut bad = b.clone();
    let eocd = bad.len() - 22;
    bad[eocd + 10..eocd + 12].copy_from_slice(&0xfffeu16.to_le_bytes());
    bad[eocd + 8..eocd + 10].copy_from_slice(&0xfffeu16.to_le_bytes());
    assert!(matches!(index_zip(&bad), Err(ArchiveError::Corrupt(_))));
}

#[test]
fn truncated_zip_is_corrupt() {
    let b = make_zip(&[("a", b"1", false), ("b", b"2", false)], false);
    for cut in [1, 10, 22, b.len() / 2] {
        assert!(index_zip(&b[..b.len() - cut]).is_err(), "cut {cut}");
    }
}

#[test]
fn hostile_names_are_sanitized_and_duplicates_tagged() {
    let long = "x".repeat(300);
    let b = make_zip(
        &[
            ("../../etc/passwd", b"1", false),
            ("/abs/file", b"2", false),
            ("dup.txt", b"3", false),
            ("dvp.txt", b"4", false),
            (&format!("{long}/f"), b"5", false),
            ("nul\0name", b"6", false),
            ("d", b"7", false),
            ("d/e", b"8", false),
        ],
        false,
    );
    // The zip crate refuses duplicate names: rename the second one in place.
    let b = replace_all(&b, b"dvp.txt", b"dup.txt");
    let idx = index_zip(&b).unwrap();
    let files = files_of(&idx);
    let names: Vec<&str> = files.keys().map(|s| s.as_str()).collect();
    assert!(names.contains(&"%2E%2E/%2E%2E/etc/passwd"), "{names:?}");
    assert!(names.contains(&"abs/file"));
    assert!(names.contains(&"dup.txt"));
    assert!(names.contains(&"dup~3.txt"));
    assert!(names.contains(&"nul%00name"));
    // The directory keeps its name; the file that collides with it is tagged.
    assert!(names.contains(&"d/e"));
    assert!(names.contains(&"d~6"));
    for n in &names {
        for c in n.split('/') {
            assert!(c.len() <= 255 && c != ".." && !c.contains('\0'));
        }
    }
    assert_eq!(zip_entry(&b, &idx, files["dup.txt"]).unwrap(), b"3");
    assert_eq!(zip_entry(&b, &idx, files["dup~3.txt"]).unwrap(), b"4");
}

fn replace_all(b: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = b.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + to.len()].copy_from_slice(to);
        }
        i += 1;
    }
    out
}

fn make_tar(build: impl FnOnce(&mut ::tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = ::tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

fn add_file(b: &mut ::tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = ::tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(::tar::EntryType::Regular);
    b.append_data(&mut h, path, data).unwrap();
}

fn walk_all(b: &[u8], chunk: usize) -> Result<Vec<RawEntry>, ArchiveError> {
    let mut w = TarWalker::new();
    let mut at = 0usize;
    while at < b.len() && !w.is_done() {
        let end = (at + chunk).min(b.len());
        w.feed(at as u64, &b[at..end])?;
        at = end;
    }
    w.finish(b.len() as u64)
}

fn tar_entry(b: &[u8], idx: &Index, ix: u32) -> Vec<u8> {
    let e = idx.get(ix).unwrap();
    let Some(Data::Tar { offset }) = e.data else {
        panic!()
    };
    b[offset as usize..(offset + e.size) as usize].to_vec()
}

#[test]
fn tar_entries_long_names_and_links() {
    let long = format!("{}/deep.txt", "d".repeat(150));
    let b = make_tar(|t| {
        add_file(t, "a.txt", b"alpha");
        add_file(t, &long, b"long name");
        let mut h = ::tar::Header::new_gnu();
        h.set_entry_type(::tar::EntryType::Symlink);
        h.set_size(0);
        t.append_link(&mut h, "sub/in", "../a.txt").unwrap();
        let mut h = ::tar::Header::new_gnu();
        h.set_entry_type(::tar::EntryType::Symlink);
        h.set_size(0);
        t.append_link(&mut h, "sub/out", "../../../etc/passwd")
            .unwrap();
        let mut h = ::tar::Header::new_gnu();
        h.set_entry_type(::tar::EntryType::Symlink);
        h.set_size(0);
        t.append_link(&mut h, "abs", "/etc/passwd").unwrap();
        let mut h = ::tar::Header::new_gnu();
        h.set_entry_type(::tar::EntryType::Link);
        h.set_size(0);
        t.append_link(&mut h, "hard", "a.txt").unwrap();
    });
    for chunk in [1, 7, 512, 4096, 1 << 20] {
        let raw = walk_all(&b, chunk).unwrap();
        let idx = Index::build(Format::Tar, raw, b.len() as u64).unwrap();
        let files = files_of(&idx);
        assert_eq!(tar_entry(&b, &idx, files["a.txt"]), b"alpha");
        assert_eq!(tar_entry(&b, &idx, files[&long]), b"long name");
        assert_eq!(tar_entry(&b, &idx, files["hard"]), b"alpha");
        let link = |p: &str| match &idx.get(idx.resolve(p).unwrap()).unwrap().kind {
            EntryKind::Symlink { target } => target.clone(),
            k => panic!("{k:?}"),
        };
        assert_eq!(link("sub/in"), "../a.txt");
        assert_eq!(link("sub/out"), format!("../{OUTSIDE}"));
        assert_eq!(link("abs"), OUTSIDE);
        assert_eq!(idx.get(files["a.txt"]).unwrap().mtime, 1_700_000_000);
    }
}

#[test]
fn pax_path_and_ustar_prefix() {
    let long = format!("{}/{}", "p".repeat(120), "q".repeat(120));
    let b = make_tar(|t| {
        let mut h = ::tar::Header::new_ustar();
        h.set_size(3);
        h.set_entry_type(::tar::EntryType::Regular);
        h.set_mode(0o644);
        // A ustar path over 100 bytes goes to the prefix field.
        h.set_path(format!("{}/{}", "u".repeat(90), "f.txt"))
            .unwrap();
        h.set_cksum();
        t.append(&h, &b"abc"[..]).unwrap();
        t.append_pax_extensions([("path", long.as_bytes())])
            .unwrap();
        add_file(t, "ignored-name", b"pax!");
    });
    let raw = walk_all(&b, 100).unwrap();
    let idx = Index::build(Format::Tar, raw, b.len() as u64).unwrap();
    let files = files_of(&idx);
    assert_eq!(tar_entry(&b, &idx, files[&long]), b"pax!");
    assert_eq!(
        tar_entry(&b, &idx, files[&format!("{}/f.txt", "u".repeat(90))]),
        b"abc"
    );
}

#[test]
fn truncated_and_damaged_tars_fail() {
    let b = make_tar(|t| add_file(t, "a", &[1u8; 3000]));
    // Cut inside the data: the stream ends before the entry does.
    assert!(walk_all(&b[..1500], 512).is_err());
    let mut bad = b.clone();
    bad[10] ^= 0xff;
    assert!(walk_all(&bad, 512).is_err());
}

#[test]
fn walker_skips_data_when_fed_from_need() {
    let b = make_tar(|t| {
        add_file(t, "big", &vec![9u8; 1 << 20]);
        add_file(t, "small", b"s");
    });
    let mut w = TarWalker::new();
    let mut fed = 0usize;
    while !w.is_done() && (w.need() as usize) < b.len() {
        let at = w.need() as usize;
        let end = (at + 512).min(b.len());
        fed += end - at;
        w.feed(at as u64, &b[at..end]).unwrap();
    }
    assert!(fed < 8192, "read {fed} bytes");
    assert_eq!(w.finish(b.len() as u64).unwrap().len(), 2);
}

#[test]
fn gzip_magic_and_names() {
    assert_eq!(format_of_name("a/b.TAR.GZ"), Some(Format::TarGz));
    assert_eq!(format_of_name("x.tgz"), Some(Format::TarGz));
    assert_eq!(format_of_name("x.jar"), Some(Format::Zip));
    assert_eq!(format_of_name("x.tar"), Some(Format::Tar));
    assert_eq!(format_of_name("x.gz"), None);
    assert!(check_magic(Format::TarGz, &[0x1f, 0x8b, 8]).is_ok());
    assert!(check_magic(Format::TarGz, b"PK\x03\x04").is_err());
    assert!(check_magic(Format::Zip, b"PK\x03\x04").is_ok());
    let t = make_tar(|t| add_file(t, "a", b"1"));
    assert!(check_magic(Format::Tar, &t).is_ok());
    assert!(check_magic(Format::Tar, &[b'x'; 512]).is_err());
}

#[test]
fn confine_link_cases() {
    let d = |s: &str| -> Vec<String> {
        s.split('/')
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect()
    };
    assert_eq!(confine_link(&d("a/b"), b"c"), "c");
    assert_eq!(confine_link(&d("a/b"), b"../c"), "../c");
    assert_eq!(confine_link(&d("a/b"), b"../../c"), "../../c");
    assert_eq!(
        confine_link(&d("a/b"), b"../../../c"),
        format!("../../{OUTSIDE}")
    );
    assert_eq!(confine_link(&d(""), b"."), ".");
    assert_eq!(confine_link(&d("a"), b".."), "..");
    assert_eq!(confine_link(&d("a"), b"x/../../y"), "../y");
    assert_eq!(confine_link(&d("a"), b"/etc"), format!("../{OUTSIDE}"));
}

/// Resolves a confined link target from `dir` lexically: it never climbs above the root.
fn climbs_out(dir: &[String], target: &str) -> bool {
    let mut depth = dir.len() as i64;
    for c in target.split('/') {
        match c {
            ".." => depth -= 1,
            "." | "" => {}
            _ => depth += 1,
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_zips_index_to_their_entries(
        files in proptest::collection::btree_map("[a-z]{1,8}(/[a-z]{1,8}){0,3}", (proptest::collection::vec(any::<u8>(), 0..2000), any::<bool>()), 1..20),
        large in any::<bool>(),
    ) {
        // A path that is a prefix directory of another is a file/dir collision; drop those.
        let keys: Vec<String> = files.keys().cloned().collect();
        let files: BTreeMap<String, _> = files.into_iter().filter(|(k, _)| !keys.iter().any(|o| o.starts_with(&format!("{k}/")))).collect();
        let list: Vec<(&str, &[u8], bool)> = files.iter().map(|(k, (v, d))| (k.as_str(), v.as_slice(), *d)).collect();
        let b = make_zip(&list, large);
        let idx = index_zip(&b).unwrap();
        let got = files_of(&idx);
        prop_assert_eq!(got.keys().cloned().collect::<Vec<_>>(), files.keys().cloned().collect::<Vec<_>>());
        for (k, (v, _)) in &files {
            prop_assert_eq!(&zip_entry(&b, &idx, got[k]).unwrap(), v);
            prop_assert_eq!(idx.get(got[k]).unwrap().size, v.len() as u64);
        }
    }

    #[test]
    fn random_tars_index_to_their_entries(
        files in proptest::collection::btree_map("[a-z]{1,8}(/[a-z]{1,8}){0,3}", proptest::collection::vec(any::<u8>(), 0..3000), 1..20),
        chunk in 1usize..5000,
        gz in any::<bool>(),
    ) {
        let keys: Vec<String> = files.keys().cloned().collect();
        let files: BTreeMap<String, _> = files.into_iter().filter(|(k, _)| !keys.iter().any(|o| o.starts_with(&format!("{k}/")))).collect();
        let mut b = make_tar(|t| for (k, v) in &files { add_file(t, k, v) });
        if gz {
            // Through gzip and back, as the tar.gz pass sees it.
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&b).unwrap();
            let c = e.finish().unwrap();
            b.clear();
            flate2::read::MultiGzDecoder::new(&c[..]).read_to_end(&mut b).unwrap();
        }
        let raw = walk_all(&b, chunk).unwrap();
        let idx = Index::build(Format::Tar, raw, b.len() as u64).unwrap();
        let got = files_of(&idx);
        prop_assert_eq!(got.keys().cloned().collect::<Vec<_>>(), files.keys().cloned().collect::<Vec<_>>());
        for (k, v) in &files {
            prop_assert_eq!(&tar_entry(&b, &idx, got[k]), v);
        }
    }

    #[test]
    fn hostile_zip_bytes_never_panic(mut b in proptest::collection::vec(any::<u8>(), 0..4000), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8)) {
        let _ = index_zip(&b);
        // Damage a real archive in a few places.
        let mut real = make_zip(&[("a/b", b"hello", false), ("c", &[3u8; 500], true)], false);
        for (i, v) in &flips {
            let n = real.len();
            real[i % n] = *v;
        }
        if let Ok(idx) = index_zip(&real) {
            for i in 0..idx.entries.len() as u32 {
                if let Some(Data::Zip { header, .. }) = &idx.get(i).unwrap().data {
                    if (*header as usize) < real.len() {
                        let _ = z::data_offset(&real[*header as usize..], idx.get(i).unwrap().data.as_ref().unwrap(), idx.stream_len);
                    }
                }
            }
        }
        b.extend_from_slice(&[0x50, 0x4b, 5, 6]);
        let _ = index_zip(&b);
    }

    #[test]
    fn hostile_tar_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..5000), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8)) {
        let _ = walk_all(&b, 512);
        let mut real = make_tar(|t| { add_file(t, "a", b"xyz"); add_file(t, "b/c", &[1u8; 700]); });
        for (i, v) in &flips {
            let n = real.len();
            real[i % n] = *v;
        }
        if let Ok(raw) = walk_all(&real, 333) {
            let _ = Index::build(Format::Tar, raw, real.len() as u64);
        }
    }

    #[test]
    fn built_names_are_safe_and_links_confined(
        paths in proptest::collection::vec(("(\\.\\.|\\.|[a-z]{1,3}|/|\\x00){1,8}", any::<bool>(), "(\\.\\.|[a-z]|/){0,8}"), 1..30),
    ) {
        let raw: Vec<RawEntry> = paths.iter().map(|(p, link, t)| RawEntry {
            path: p.as_bytes().to_vec(),
            kind: if *link { RawKind::Symlink(t.as_bytes().to_vec()) } else { RawKind::File },
            size: 1,
            mtime: 0,
            data: Some(Data::Tar { offset: 0 }),
        }).collect();
        let idx = Index::build(Format::Tar, raw, 0).unwrap();
        for (i, e) in idx.entries.iter().enumerate().skip(1) {
            prop_assert!(!e.name.is_empty() && e.name != "." && e.name != ".." && !e.name.contains('/') && !e.name.contains('\0') && e.name.len() <= 255);
            if let EntryKind::Symlink { target } = &e.kind {
                let path = idx.path_of(i as u32);
                let dir: Vec<String> = path.split('/').map(String::from).collect();
                prop_assert!(!climbs_out(&dir[..dir.len() - 1], target), "{} -> {}", path, target);
                prop_assert!(!target.starts_with('/'));
            }
        }
        // Names within a directory are unique by construction (BTreeMap), and every child
        // points back at its parent.
        for (i, e) in idx.entries.iter().enumerate() {
            if let EntryKind::Dir { children } = &e.kind {
                for (n, c) in children {
                    prop_assert_eq!(idx.get(*c).unwrap().parent as usize, i);
                    prop_assert_eq!(&idx.get(*c).unwrap().name, n);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The sink cuts any sequence of writes into the same blocks, and the store reads any
    /// range of them back.
    #[test]
    fn sink_blocks_read_back(
        chunks in proptest::collection::vec(1usize..700_000, 1..8),
        ranges in proptest::collection::vec((any::<u64>(), 0u64..3_000_000), 1..10),
    ) {
        let store = store::Derived::new(None);
        let total: usize = chunks.iter().sum();
        let data = crate::content::cache::content_key(None, "x").into_bytes();
        let data: Vec<u8> = (0..total).map(|i| data[i % data.len()].wrapping_add((i / 7) as u8)).collect();
        let mut sink = store::Sink::new(&store, "k".into(), total as u64);
        let mut at = 0;
        for c in &chunks {
            sink.write_all(&data[at..at + c]).unwrap();
            at += c;
        }
        prop_assert!(sink.write_all(b"!").is_err(), "past the limit");
        sink.finish();
        prop_assert_eq!(sink.crc.clone().finalize(), crc32fast::hash(&data));
        for (off, len) in ranges {
            let off = off % (total as u64 + 1);
            let got = store.read("k", total as u64, off, len).unwrap();
            let end = (off + len).min(total as u64);
            prop_assert_eq!(&got[..], &data[off as usize..end as usize]);
        }
    }
}

#[test]
fn deep_and_numerous_paths_are_bounded() {
    let entry = |p: String| RawEntry {
        path: p.into_bytes(),
        kind: RawKind::File,
        size: 0,
        mtime: 0,
        data: Some(Data::Tar { offset: 0 }),
    };
    let deep = vec!["a"; MAX_DEPTH + 1].join("/");
    assert!(matches!(
        Index::build(Format::Tar, vec![entry(deep)], 0),
        Err(ArchiveError::TooLarge(_))
    ));
    // Many entries at the deepest allowed level (the build makes no per-prefix copies).
    let ok = vec!["a"; MAX_DEPTH - 1].join("/");
    let raw: Vec<RawEntry> = (0..2000).map(|i| entry(format!("{ok}/f{i}"))).collect();
    let idx = Index::build(Format::Tar, raw, 0).unwrap();
    assert_eq!(idx.entries.len(), 1 + (MAX_DEPTH - 1) + 2000);
}

#[test]
fn zip_unix_symlinks_are_recognized() {
    let mut w = ::zip::ZipWriter::new(Cursor::new(Vec::new()));
    let o = ::zip::write::SimpleFileOptions::default();
    w.start_file("d/f.txt", o).unwrap();
    w.write_all(b"x").unwrap();
    w.add_symlink("d/in", "f.txt", o).unwrap();
    w.add_symlink("d/out", "../../etc/passwd", o).unwrap();
    let b = w.finish().unwrap().into_inner();
    let tail = &b[b.len().saturating_sub(z::TAIL_LEN as usize)..];
    let Tail::Found(loc) = z::parse_tail(tail, b.len() as u64).unwrap() else {
        panic!("no end record")
    };
    let cd = &b[loc.offset as usize..(loc.offset + loc.size) as usize];
    let cd = z::parse_cd(cd, &loc).unwrap();
    let links: Vec<bool> = cd.iter().map(|e| e.is_symlink()).collect();
    assert_eq!(links, [false, true, true]);
    assert_eq!(cd[0].unix_mode.map(|m| m & 0o170000), Some(0o100000));
    // A link's target is its data; the index confines it like a tar link's.
    let raw: Vec<RawEntry> = cd
        .into_iter()
        .map(|e| {
            if e.is_symlink() {
                let t = if e.name.ends_with(b"in") {
                    "f.txt"
                } else {
                    "../../etc/passwd"
                };
                e.into_link(t.as_bytes().to_vec())
            } else {
                e.into_raw()
            }
        })
        .collect();
    let idx = Index::build(Format::Zip, raw, 0).unwrap();
    let target = |p: &str| match &idx.get(idx.resolve(p).unwrap()).unwrap().kind {
        EntryKind::Symlink { target } => target.clone(),
        k => panic!("{p}: {k:?}"),
    };
    assert_eq!(target("d/in"), "f.txt");
    assert_eq!(target("d/out"), format!("../{OUTSIDE}"));
}

#[test]
fn a_real_root_entry_named_like_the_outside_target_is_tagged() {
    let raw = |path: &str, kind: RawKind| RawEntry {
        path: path.as_bytes().to_vec(),
        kind,
        size: 1,
        mtime: 0,
        data: Some(Data::Tar { offset: 0 }),
    };
    let link = |t: &str| RawKind::Symlink(t.as_bytes().to_vec());
    for first in [
        raw(OUTSIDE, RawKind::File),
        raw(OUTSIDE, link("x")),
        raw(&format!("{OUTSIDE}/secret"), RawKind::File),
        raw(&format!("/{OUTSIDE}/"), RawKind::Dir),
    ] {
        let what = format!("{first:?}");
        let entries = vec![
            first,
            raw("d/up", link("../../x")),
            raw("abs", link("/etc/passwd")),
            raw(&format!("d/{OUTSIDE}"), RawKind::File),
        ];
        let idx = Index::build(Format::Tar, entries, 0).unwrap();
        assert_eq!(idx.resolve(OUTSIDE), None, "{what}");
        let tagged = format!("{OUTSIDE}~0");
        assert!(idx.resolve(&tagged).is_some(), "{what}");
        // Only the root name is reserved.
        assert!(idx.resolve(&format!("d/{OUTSIDE}")).is_some(), "{what}");
        for (l, from) in [("d/up", "d"), ("abs", "")] {
            let EntryKind::Symlink { target } = &idx.get(idx.resolve(l).unwrap()).unwrap().kind
            else {
                panic!("{l}")
            };
            // Resolved lexically from the link's directory, the target names nothing.
            let mut path: Vec<&str> = from.split('/').filter(|c| !c.is_empty()).collect();
            for c in target.split('/') {
                match c {
                    ".." => {
                        path.pop();
                    }
                    c => path.push(c),
                }
            }
            assert_eq!(
                idx.resolve(&path.join("/")),
                None,
                "{what}: {l} -> {target}"
            );
        }
    }
}

/// One tar entry (no end-of-archive blocks): a symlink whose target is a ~1 MiB pax
/// `linkpath` (`pax`) or GNU `K` long link.
fn huge_link_entry(pax: bool) -> Vec<u8> {
    let target = "t".repeat((1 << 20) - 600);
    let mut b = make_tar(|t| {
        let mut h = ::tar::Header::new_gnu();
        h.set_entry_type(::tar::EntryType::Symlink);
        h.set_size(0);
        if pax {
            t.append_pax_extensions([("linkpath", target.as_bytes())])
                .unwrap();
            t.append_link(&mut h, "l", "short").unwrap();
        } else {
            t.append_link(&mut h, "l", &target).unwrap();
        }
    });
    b.truncate(b.len() - 1024);
    b
}

#[test]
fn huge_link_targets_count_against_the_name_budget_while_walking() {
    let units = [huge_link_entry(true), huge_link_entry(false)];
    // Each is one symlink entry with its ~1 MiB target.
    for u in &units {
        let mut w = TarWalker::new();
        w.feed(0, u).unwrap();
        let raw = w.finish(u.len() as u64).unwrap();
        assert!(matches!(&raw[0].kind, RawKind::Symlink(t) if t.len() > 1 << 19));
    }
    // Fed one after the other, the walker refuses them once their targets pass the budget,
    // before the walk ends (so memory stays within it).
    let mut w = TarWalker::new();
    let mut at = 0u64;
    let mut fed = 0usize;
    let err = loop {
        let u = &units[fed % 2];
        if let Err(e) = w.feed(at, u) {
            break e;
        }
        at += u.len() as u64;
        fed += 1;
        assert!(fed <= MAX_NAME_BYTES / (1 << 19) + 2, "never refused");
    };
    assert!(matches!(err, ArchiveError::TooLarge(_)), "{err:?}");
    assert!(fed >= MAX_NAME_BYTES / (1 << 20), "refused after {fed}");
}

#[test]
fn zip_symlink_targets_count_against_the_name_budget_before_they_are_read() {
    // Central records only: symlinks (unix S_IFLNK) with 4 KiB targets.
    let rec = |i: usize| {
        let name = format!("l{i:05}");
        let mut r = Vec::new();
        r.extend_from_slice(&z::CENTRAL_SIG.to_le_bytes());
        r.extend_from_slice(&(3u16 << 8 | 20).to_le_bytes());
        r.extend_from_slice(&20u16.to_le_bytes());
        r.extend_from_slice(&[0; 4]); // flags, method (stored)
        r.extend_from_slice(&[0; 4]); // time, date
        r.extend_from_slice(&0u32.to_le_bytes()); // crc
        r.extend_from_slice(&4096u32.to_le_bytes());
        r.extend_from_slice(&4096u32.to_le_bytes());
        r.extend_from_slice(&(name.len() as u16).to_le_bytes());
        r.extend_from_slice(&[0; 8]); // extra, comment, disk, internal
        r.extend_from_slice(&(0o120777u32 << 16).to_le_bytes());
        r.extend_from_slice(&0u32.to_le_bytes()); // local header at 0
        r.extend_from_slice(name.as_bytes());
        r
    };
    let cd_of = |n: usize| -> (Vec<u8>, z::CdLocation) {
        let cd: Vec<u8> = (0..n).flat_map(rec).collect();
        let loc = z::CdLocation {
            offset: 1 << 20,
            size: cd.len() as u64,
            entries: n as u64,
        };
        (cd, loc)
    };
    let (cd, loc) = cd_of(10);
    let es = z::parse_cd(&cd, &loc).unwrap();
    assert!(es.iter().all(|e| e.is_symlink()));
    let (cd, loc) = cd_of(MAX_NAME_BYTES / 4096 + 1);
    assert!(matches!(
        z::parse_cd(&cd, &loc),
        Err(ArchiveError::TooLarge(_))
    ));
}

#[test]
fn hostile_zip64_locator_offsets_are_corrupt_not_a_panic() {
    let b = to_zip64(&make_zip(&[("x", b"abc", false)], true));
    // The locator's offset field, 8 bytes into it; the end record follows the locator.
    let loc = b.windows(4).rposition(|w| w == b"PK\x06\x07").unwrap();
    let field = loc + 8;
    let eocd_at = (loc + 20) as u64;
    for at in [u64::MAX, u64::MAX - 10, eocd_at - 20, eocd_at] {
        let mut bad = b.clone();
        bad[field..field + 8].copy_from_slice(&at.to_le_bytes());
        let size = bad.len() as u64;
        let r = z::parse_tail(&bad[(size - size.min(z::TAIL_LEN)) as usize..], size);
        assert!(matches!(r, Err(ArchiveError::Corrupt(_))), "{at}: {r:?}");
    }
    // A local header offset near the top of the range does not overflow either.
    let d = Data::Zip {
        header: u64::MAX - 5,
        method: z::STORED,
        csize: 3,
        crc: crc32fast::hash(b"abc"),
        encrypted: false,
        raw_name: b"x".to_vec(),
        flags: 0,
    };
    assert!(matches!(
        z::data_offset(&b, &d, u64::MAX),
        Err(ArchiveError::Corrupt(_))
    ));
}

#[test]
fn stored_entry_data_must_end_before_the_central_directory() {
    let b = make_zip(
        &[("a.txt", b"hello", false), ("b.txt", b"world", false)],
        false,
    );
    let idx = index_zip(&b).unwrap();
    let files = files_of(&idx);
    assert_eq!(zip_entry(&b, &idx, files["b.txt"]).unwrap(), b"world");
    // The second local header's extra length pushes its data start (which the central
    // directory cannot see) towards, then into, the central directory.
    let lh = b.windows(4).rposition(|w| w == b"PK\x03\x04").unwrap();
    let xlen = u16::from_le_bytes([b[lh + 28], b[lh + 29]]);
    for push in [1u16, 3, 200] {
        let mut bad = b.clone();
        bad[lh + 28..lh + 30].copy_from_slice(&(xlen + push).to_le_bytes());
        let r = zip_entry(&bad, &idx, files["b.txt"]);
        assert!(matches!(r, Err(ArchiveError::Corrupt(_))), "{push}: {r:?}");
        // The first entry is untouched.
        assert_eq!(zip_entry(&bad, &idx, files["a.txt"]).unwrap(), b"hello");
    }
    // The central directory alone can also say so: a record whose size runs past it.
    let mut bad = b.clone();
    let cr = bad.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
    bad[cr + 20..cr + 24].copy_from_slice(&60u32.to_le_bytes());
    assert!(matches!(index_zip(&bad), Err(ArchiveError::Corrupt(_))));
}

#[test]
fn local_name_length_must_match_the_central_one() {
    let b = make_zip(&[("a.txt", b"hello", false)], false);
    let idx = index_zip(&b).unwrap();
    let ix = files_of(&idx)["a.txt"];
    let lh = b.windows(4).position(|w| w == b"PK\x03\x04").unwrap();
    for nlen in [6u16, 4, 0, 400] {
        let mut bad = b.clone();
        bad[lh + 26..lh + 28].copy_from_slice(&nlen.to_le_bytes());
        // As the filesystem reads it: the fixed part and the central directory's name length.
        let Some(Data::Zip { header, .. }) = &idx.get(ix).unwrap().data else {
            panic!()
        };
        let local = &bad[*header as usize..*header as usize + 30 + 5];
        let r = z::data_offset(
            local,
            idx.get(ix).unwrap().data.as_ref().unwrap(),
            idx.stream_len,
        );
        assert!(matches!(r, Err(ArchiveError::Corrupt(_))), "{nlen}: {r:?}");
    }
}

#[test]
fn absurd_entry_counts_are_refused_with_bounded_memory() {
    // A tar of empty files, one header each: the walker refuses the entry past its bound
    // (MAX_ENTRIES; 5,000 here, to keep the test quick) instead of growing.
    let one = make_tar(|t| add_file(t, "f", b""));
    let headers = one[..512].repeat(1000);
    let mut w = TarWalker::with_max_entries(5000);
    let mut err = None;
    for i in 0..10u64 {
        if let Err(e) = w.feed(i * headers.len() as u64, &headers) {
            err = Some((i, e));
            break;
        }
    }
    let (at, e) = err.expect("never refused");
    assert!(matches!(e, ArchiveError::TooLarge(_)), "{e:?}");
    assert_eq!(at, 5, "refused in the chunk holding entry 5,001");
    assert_eq!(w.entries(), 5000);
    // A zip whose end record claims more entries than allowed is refused before any
    // central record is read.
    let loc = z::CdLocation {
        offset: 0,
        size: 64 * MAX_ENTRIES as u64,
        entries: MAX_ENTRIES as u64 + 1,
    };
    assert!(z::parse_cd(&[], &loc).is_err());
}
