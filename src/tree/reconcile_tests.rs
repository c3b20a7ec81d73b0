//! Unit tests of [`Tree::reconcile`].

use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use super::*;

fn art(id: &str, job: Option<&str>, path: &str) -> Artifact {
    Artifact {
        id: id.to_string(),
        job_id: job.map(str::to_string),
        state: Some("finished".to_string()),
        path: Some(path.to_string()),
        file_size: Some(10),
        ..Default::default()
    }
}

fn job(id: &str, name: &str) -> Job {
    Job {
        id: id.to_string(),
        name: Some(name.to_string()),
        ..Default::default()
    }
}

fn build_of(jobs: Vec<Job>) -> Build {
    Build {
        id: "b".to_string(),
        number: 7,
        created_at: Some("2020-01-01T00:00:00Z".to_string()),
        jobs,
        ..Default::default()
    }
}

fn tree(b: &Build, arts: &[Artifact]) -> Tree {
    Tree::build(Some(b), arts, UNIX_EPOCH)
}

fn ino(t: &Tree, path: &str) -> Ino {
    t.resolve(path).unwrap_or_else(|| panic!("no {path:?}")).ino
}

/// Every path with its inode and kind (`/` after directories), root excluded.
fn shape(t: &Tree) -> BTreeSet<(String, bool, Option<String>)> {
    t.nodes()
        .filter(|n| n.ino != ROOT_INO)
        .map(|n| {
            (
                t.path_of(n.ino),
                n.is_dir(),
                n.file().map(|f| f.artifact_id.clone()),
            )
        })
        .collect()
}

/// `self` after reconcile has the same shape, metadata and totals as a fresh build.
fn assert_same_as(t: &Tree, fresh: &Tree) {
    assert_eq!(shape(t), shape(fresh));
    assert_eq!(t.len(), fresh.len());
    assert_eq!(t.total_size(), fresh.total_size());
    for n in fresh.nodes() {
        let p = fresh.path_of(n.ino);
        let m = t.resolve(&p).unwrap();
        assert_eq!(m.mtime, n.mtime, "{p}");
        assert_eq!(m.name, n.name, "{p}");
        match (&m.kind, &n.kind) {
            (NodeKind::File(a), NodeKind::File(b)) => assert_eq!(a, b, "{p}"),
            (NodeKind::Dir { job: a, .. }, NodeKind::Dir { job: b, .. }) => {
                assert_eq!(a, b, "{p}")
            }
            _ => panic!("kind of {p}"),
        }
    }
}

fn s(x: &str) -> String {
    x.to_string()
}

#[test]
fn adding_an_artifact_to_an_existing_dir() {
    let b = build_of(vec![job("j1", "One")]);
    let a1 = vec![art("a1", Some("j1"), "log/a.log")];
    let mut t = tree(&b, &a1);
    let before: Vec<(String, Ino)> = t.nodes().map(|n| (t.path_of(n.ino), n.ino)).collect();
    let max = t.max_ino();
    let mut a2 = a1.clone();
    a2.push(art("a2", Some("j1"), "log/b.log"));
    let fresh = tree(&b, &a2);
    let ch = t.reconcile(fresh.clone());
    assert_same_as(&t, &fresh);
    for (p, i) in &before {
        assert_eq!(ino(&t, p), *i, "{p}");
    }
    let log = ino(&t, "one/log");
    let new = ino(&t, "one/log/b.log");
    assert!(new > max);
    assert_eq!(ch.added, vec![(log, s("b.log"))]);
    assert!(ch.removed.is_empty());
    assert_eq!(ch.changed_dirs, vec![log]);
    assert!(ch.changed_attrs.is_empty());
    assert_eq!(t.total_size(), 20);
}

#[test]
fn a_new_job_dir_appears() {
    let b = build_of(vec![job("j1", "One"), job("j2", "Two")]);
    let mut t = tree(&b, &[art("a1", Some("j1"), "x")]);
    let one = ino(&t, "one");
    let x = ino(&t, "one/x");
    let arts = [art("a1", Some("j1"), "x"), art("a2", Some("j2"), "d/y")];
    let fresh = tree(&b, &arts);
    let ch = t.reconcile(fresh.clone());
    assert_same_as(&t, &fresh);
    assert_eq!((ino(&t, "one"), ino(&t, "one/x")), (one, x));
    let two = ino(&t, "two");
    let d = ino(&t, "two/d");
    assert_eq!(two, 4);
    assert_eq!(d, 5);
    assert_eq!(ino(&t, "two/d/y"), 6);
    assert_eq!(
        ch.added,
        vec![(ROOT_INO, s("two")), (two, s("d")), (d, s("y"))]
    );
    assert!(ch.removed.is_empty());
    assert_eq!(ch.changed_dirs, vec![ROOT_INO]);
    // The root has one more subdirectory: its link count changed.
    assert_eq!(ch.changed_attrs, vec![ROOT_INO]);
    assert!(matches!(
        &t.get(two).unwrap().kind,
        NodeKind::Dir { job: Some(m), .. } if m.job_id == "j2"
    ));
}

#[test]
fn an_artifact_disappears() {
    let b = build_of(vec![job("j1", "One")]);
    let arts = [
        art("a1", Some("j1"), "a"),
        art("a2", Some("j1"), "b"),
        art("a3", Some("j1"), "c"),
    ];
    let mut t = tree(&b, &arts);
    let one = ino(&t, "one");
    let (a, bb, c) = (ino(&t, "one/a"), ino(&t, "one/b"), ino(&t, "one/c"));
    let fresh = tree(&b, &[arts[0].clone(), arts[2].clone()]);
    let ch = t.reconcile(fresh.clone());
    assert_same_as(&t, &fresh);
    assert_eq!(ch.removed, vec![(one, s("b"), bb)]);
    assert!(ch.added.is_empty());
    assert_eq!(ch.changed_dirs, vec![one]);
    assert!(ch.changed_attrs.is_empty());
    assert!(t.get(bb).is_none());
    assert_eq!((ino(&t, "one/a"), ino(&t, "one/c")), (a, c));
    assert_eq!(t.len(), 4);
    assert_eq!(t.total_size(), 20);
}

#[test]
fn a_whole_job_dir_disappears_children_first() {
    let b = build_of(vec![job("j1", "One"), job("j2", "Two")]);
    let arts = [art("a1", Some("j1"), "x"), art("a2", Some("j2"), "d/y")];
    let mut t = tree(&b, &arts);
    let (two, d, y) = (ino(&t, "two"), ino(&t, "two/d"), ino(&t, "two/d/y"));
    let fresh = tree(&b, &arts[..1]);
    let ch = t.reconcile(fresh.clone());
    assert_same_as(&t, &fresh);
    assert_eq!(
        ch.removed,
        vec![(d, s("y"), y), (two, s("d"), d), (ROOT_INO, s("two"), two)]
    );
    assert_eq!(ch.changed_dirs, vec![ROOT_INO]);
    assert_eq!(ch.changed_attrs, vec![ROOT_INO]);
    assert_eq!(t.len(), 3);
}

#[test]
fn an_artifact_replaced_at_the_same_path() {
    let b = build_of(vec![job("j1", "One")]);
    let mut t = tree(
        &b,
        &[art("a1", Some("j1"), "x"), art("a2", Some("j1"), "y")],
    );
    let one = ino(&t, "one");
    let (x, y) = (ino(&t, "one/x"), ino(&t, "one/y"));
    let mut replacement = art("a9", Some("j1"), "x");
    replacement.file_size = Some(99);
    let fresh = tree(&b, &[replacement, art("a2", Some("j1"), "y")]);
    let max = t.max_ino();
    let ch = t.reconcile(fresh.clone());
    assert_same_as(&t, &fresh);
    let x2 = ino(&t, "one/x");
    assert!(x2 > max);
    assert!(t.get(x).is_none());
    assert_eq!(ino(&t, "one/y"), y);
    assert_eq!(ch.removed, vec![(one, s("x"), x)]);
    assert_eq!(ch.added, vec![(one, s("x"))]);
    assert_eq!(ch.changed_dirs, vec![one]);
    assert!(ch.changed_attrs.is_empty());
    assert_eq!(t.total_size(), 109);
}

#[test]
fn same_artifact_with_new_metadata_keeps_its_inode() {
    let b = build_of(vec![job("j1", "One")]);
    let mut t = tree(&b, &[art("a1", Some("j1"), "x")]);
    let x = ino(&t, "one/x");
    let mut grown = art("a1", Some("j1"), "x");
    grown.file_size = Some(1000);
    grown.sha1sum = Some("abc".to_string());
    let fresh = tree(&b, &[grown]);
    let ch = t.reconcile(fresh.clone());
    assert_same_as(&t, &fresh);
    assert_eq!(ino(&t, "one/x"), x);
    assert_eq!(ch.changed_attrs, vec![x]);
    assert!(ch.added.is_empty() && ch.removed.is_empty() && ch.changed_dirs.is_empty());
    assert_eq!(t.total_size(), 1000);
}

#[test]
fn job_times_update_surviving_nodes() {
    let mut b = build_of(vec![job("j1", "One")]);
    let arts = [art("a1", Some("j1"), "d/x")];
    let mut t = tree(&b, &arts);
    b.finished_at = Some("2020-01-02T00:00:00Z".to_string());
    let fresh = tree(&b, &arts);
    let ch = t.reconcile(fresh.clone());
    assert_same_as(&t, &fresh);
    assert_eq!(
        t.get(ROOT_INO).unwrap().mtime,
        UNIX_EPOCH + Duration::from_secs(1_577_923_200)
    );
    // Every node changed its time: all are reported, once each.
    let all: Vec<Ino> = ch.changed_attrs.clone();
    let set: BTreeSet<Ino> = all.iter().copied().collect();
    assert_eq!(set.len(), all.len());
    assert_eq!(set, t.nodes().map(|n| n.ino).collect());
    assert!(ch.added.is_empty() && ch.removed.is_empty() && ch.changed_dirs.is_empty());
}

#[test]
fn a_file_becomes_a_directory_and_back() {
    let b = build_of(vec![job("j1", "One")]);
    let mut t = tree(
        &b,
        &[art("a1", Some("j1"), "a"), art("a2", Some("j1"), "z")],
    );
    let one = ino(&t, "one");
    let a = ino(&t, "one/a");
    let z = ino(&t, "one/z");
    // Another artifact at `a/b`: `a` becomes a directory, the file steps aside.
    let arts2 = [
        art("a1", Some("j1"), "a"),
        art("a2", Some("j1"), "z"),
        art("a3", Some("j1"), "a/b"),
    ];
    let fresh = tree(&b, &arts2);
    let ch = t.reconcile(fresh.clone());
    assert_same_as(&t, &fresh);
    let dir_a = ino(&t, "one/a");
    assert!(t.resolve("one/a").unwrap().is_dir());
    assert_ne!(dir_a, a);
    assert!(t.get(a).is_none());
    assert_eq!(ino(&t, "one/z"), z);
    assert_eq!(ch.removed, vec![(one, s("a"), a)]);
    assert_eq!(
        ch.added,
        vec![(one, s("a")), (dir_a, s("b")), (one, s("a~a1"))]
    );
    assert_eq!(ch.changed_dirs, vec![one]);
    assert_eq!(ch.changed_attrs, vec![one]);
    let b_ino = ino(&t, "one/a/b");
    let renamed = ino(&t, "one/a~a1");

    // And back: `a/b` goes away, `a` is a file again.
    let fresh = tree(&b, &arts2[..2]);
    let max = t.max_ino();
    let ch = t.reconcile(fresh.clone());
    assert_same_as(&t, &fresh);
    let file_a = ino(&t, "one/a");
    assert!(file_a > max);
    assert_eq!(
        ch.removed,
        vec![
            (dir_a, s("b"), b_ino),
            (one, s("a"), dir_a),
            (one, s("a~a1"), renamed)
        ]
    );
    assert_eq!(ch.added, vec![(one, s("a"))]);
    assert_eq!(ch.changed_dirs, vec![one]);
    assert_eq!(ch.changed_attrs, vec![one]);
}

#[test]
fn a_retry_renames_the_old_attempt() {
    let b1 = build_of(vec![job("ja", "Deploy")]);
    let arts1 = [art("a1", Some("ja"), "log.txt")];
    let mut t = tree(&b1, &arts1);
    let deploy = ino(&t, "deploy");
    let log = ino(&t, "deploy/log.txt");
    let max = t.max_ino();

    let mut ja = job("ja", "Deploy");
    ja.retried_in_job_id = Some("jb".to_string());
    let b2 = build_of(vec![ja, job("jb", "Deploy")]);
    let arts2 = [
        art("a1", Some("ja"), "log.txt"),
        art("a2", Some("jb"), "log.txt"),
    ];
    let fresh = tree(&b2, &arts2);
    let ch = t.reconcile(fresh.clone());
    assert_same_as(&t, &fresh);
    assert_eq!(
        t.job_dir_names(),
        vec![(s("deploy"), s("jb")), (s("deploy-attempt-1"), s("ja"))]
    );
    // `deploy` keeps its inode (and now is jb's); its file is a different artifact.
    assert_eq!(ino(&t, "deploy"), deploy);
    assert!(t.get(log).is_none());
    let attempt = ino(&t, "deploy-attempt-1");
    assert!(attempt > max);
    assert!(ino(&t, "deploy/log.txt") > max);
    assert!(ino(&t, "deploy-attempt-1/log.txt") > max);
    assert_eq!(ch.removed, vec![(deploy, s("log.txt"), log)]);
    let added: BTreeSet<(Ino, String)> = ch.added.iter().cloned().collect();
    assert_eq!(
        added,
        BTreeSet::from([
            (ROOT_INO, s("deploy-attempt-1")),
            (attempt, s("log.txt")),
            (deploy, s("log.txt")),
        ])
    );
    assert_eq!(ch.changed_dirs, vec![ROOT_INO, deploy]);
    // The root gained a subdirectory; `deploy` has new job metadata.
    assert_eq!(ch.changed_attrs, vec![ROOT_INO, deploy]);
}

#[test]
fn no_op_reconcile_changes_nothing() {
    let b = build_of(vec![job("j1", "One"), job("j2", "Two")]);
    let arts = [
        art("a1", Some("j1"), "d/x"),
        art("a2", Some("j2"), "y"),
        art("a3", None, "z"),
    ];
    let mut t = tree(&b, &arts);
    let before = format!("{t:?}");
    let ch = t.reconcile(tree(&b, &arts));
    assert!(ch.is_empty(), "{ch:?}");
    assert_eq!(format!("{t:?}"), before);
    // Empty to empty, too.
    let mut e = Tree::build(None, &[], UNIX_EPOCH);
    assert!(e.reconcile(Tree::build(None, &[], UNIX_EPOCH)).is_empty());
    assert_eq!(e.len(), 1);
}

#[test]
fn inode_numbers_are_never_reused() {
    let b = build_of(vec![job("j1", "One"), job("j2", "Two")]);
    let with = [art("a1", Some("j1"), "d/x"), art("a2", Some("j2"), "y")];
    let without = [art("a1", Some("j1"), "d/x")];
    let mut t = tree(&b, &with);
    let mut seen: BTreeSet<Ino> = t.nodes().map(|n| n.ino).collect();
    for round in 0..6 {
        let arts: &[Artifact] = if round % 2 == 0 { &without } else { &with };
        let max = t.max_ino();
        let before: BTreeSet<Ino> = t.nodes().map(|n| n.ino).collect();
        let ch = t.reconcile(tree(&b, arts));
        assert!(!ch.is_empty());
        for n in t.nodes() {
            if !before.contains(&n.ino) {
                assert!(n.ino > max, "round {round}: {} reused", n.ino);
                assert!(seen.insert(n.ino), "round {round}: {} reused", n.ino);
            }
        }
        assert_same_as(&t, &tree(&b, arts));
    }
    // 6 from the first build, then two new (`two`, `two/y`) each of the 3 times `with` comes
    // back.
    assert_eq!(t.max_ino(), 6 + 3 * 2);
    assert_eq!(ino(&t, "one/d/x"), 4);
}

#[test]
fn build_number_comes_from_the_new_tree() {
    let b = build_of(vec![job("j1", "One")]);
    let arts = [art("a1", Some("j1"), "x")];
    let mut t = tree(&b, &arts);
    assert_eq!(t.resolve("one/x").unwrap().file().unwrap().build_number, 0);
    t.set_build_number(7);
    assert_eq!(t.resolve("one/x").unwrap().file().unwrap().build_number, 7);
    let mut fresh = tree(&b, &arts);
    fresh.set_build_number(7);
    assert!(t.reconcile(fresh).is_empty());
    let mut fresh = tree(&b, &arts);
    fresh.set_build_number(8);
    let x = ino(&t, "one/x");
    assert_eq!(t.reconcile(fresh).changed_attrs, vec![x]);
    assert_eq!(t.get(x).unwrap().file().unwrap().build_number, 8);
}

#[test]
fn large_trees_reconcile() {
    let b = build_of(vec![job("j1", "One")]);
    let arts: Vec<Artifact> = (0..20_000)
        .map(|i| art(&format!("a{i}"), Some("j1"), &format!("d{}/f{i}", i % 100)))
        .collect();
    let mut t = tree(&b, &arts);
    let mut next = arts[1..].to_vec();
    next.push(art("new", Some("j1"), "d0/zz"));
    let ch = t.reconcile(tree(&b, &next));
    assert_eq!(ch.added.len(), 1);
    assert_eq!(ch.removed.len(), 1);
    assert_eq!(ch.changed_dirs.len(), 1);
    assert_eq!(t.len(), 1 + 1 + 100 + 20_000);
}
