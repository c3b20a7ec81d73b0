//! Unit tests of the tree rules.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

fn art(id: &str, job: Option<&str>, path: Option<&str>) -> Artifact {
    Artifact {
        id: id.to_string(),
        job_id: job.map(str::to_string),
        state: Some("finished".to_string()),
        path: path.map(str::to_string),
        file_size: Some(10),
        ..Default::default()
    }
}

fn job(id: &str, name: Option<&str>) -> Job {
    Job {
        id: id.to_string(),
        kind: Some("script".to_string()),
        name: name.map(str::to_string),
        ..Default::default()
    }
}

fn build(jobs: Vec<Job>) -> Build {
    Build {
        id: "b".to_string(),
        number: 1,
        created_at: Some("2020-01-01T00:00:00Z".to_string()),
        jobs,
        ..Default::default()
    }
}

/// One artifact per job, so every job gets a directory.
fn names_for(jobs: Vec<Job>) -> Vec<(String, String)> {
    let arts: Vec<Artifact> = jobs
        .iter()
        .map(|j| art(&format!("a-{}", j.id), Some(&j.id), Some("f")))
        .collect();
    let mut v = Tree::build(Some(&build(jobs)), &arts, UNIX_EPOCH).job_dir_names();
    v.sort_by(|a, b| a.1.cmp(&b.1));
    v
}

fn pairs(xs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = xs
        .iter()
        .map(|(n, i)| (n.to_string(), i.to_string()))
        .collect();
    v.sort_by(|a, b| a.1.cmp(&b.1));
    v
}

/// Every file path in the tree, with its artifact id.
fn files(t: &Tree) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = t
        .nodes()
        .filter_map(|n| Some((t.path_of(n.ino), n.file()?.artifact_id.clone())))
        .collect();
    v.sort();
    v
}

fn ps(xs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = xs
        .iter()
        .map(|(p, i)| (p.to_string(), i.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn labels_become_slugs() {
    let got = names_for(vec![
        job("j1", Some(":rspec: RSpec")),
        job("j2", Some(":docker: Build & Push")),
        job("j3", Some("Tëst 日本")),
    ]);
    assert_eq!(
        got,
        pairs(&[("rspec", "j1"), ("build-push", "j2"), ("tëst-日本", "j3")])
    );
}

#[test]
fn empty_label_falls_back_to_step_key_then_job() {
    let mut with_key = job("j1", Some(":bomb:"));
    with_key.step_key = Some("Unit Tests".to_string());
    let got = names_for(vec![with_key, job("j2", None), job("j3", Some(".."))]);
    // j2 and j3 are both `job`: rule 5 adds their ids.
    assert_eq!(
        got,
        pairs(&[("unit-tests", "j1"), ("job-j2", "j2"), ("job-j3", "j3")])
    );
}

#[test]
fn parallel_jobs_get_their_index() {
    let jobs = (0..3)
        .map(|i| {
            let mut j = job(&format!("j{i}"), Some("RSpec"));
            j.parallel_group_index = Some(i);
            j.parallel_group_total = Some(3);
            j
        })
        .collect();
    assert_eq!(
        names_for(jobs),
        pairs(&[("rspec-1", "j0"), ("rspec-2", "j1"), ("rspec-3", "j2")])
    );
    // A total of 1 without an index is not parallel; a total > 1 without an index is index 0.
    let mut one = job("a", Some("x"));
    one.parallel_group_total = Some(1);
    let mut no_index = job("b", Some("y"));
    no_index.parallel_group_total = Some(2);
    assert_eq!(
        names_for(vec![one, no_index]),
        pairs(&[("x", "a"), ("y-1", "b")])
    );
}

#[test]
fn retry_chains() {
    let mut a = job("ja", Some("Deploy"));
    a.retried_in_job_id = Some("jb".to_string());
    a.retried = Some(true);
    let mut b = job("jb", Some("Deploy"));
    b.retried_in_job_id = Some("jc".to_string());
    let c = job("jc", Some("Deploy"));
    // Listed out of order on purpose.
    assert_eq!(
        names_for(vec![c, a, b]),
        pairs(&[
            ("deploy-attempt-1", "ja"),
            ("deploy-attempt-2", "jb"),
            ("deploy", "jc")
        ])
    );
}

#[test]
fn retried_parallel_job() {
    let mut a = job("ja", Some("RSpec"));
    a.parallel_group_index = Some(1);
    a.parallel_group_total = Some(2);
    a.retried_in_job_id = Some("jb".to_string());
    let mut b = a.clone();
    b.id = "jb".to_string();
    b.retried_in_job_id = None;
    assert_eq!(
        names_for(vec![a, b]),
        pairs(&[("rspec-2-attempt-1", "ja"), ("rspec-2", "jb")])
    );
}

#[test]
fn retry_cycles_terminate() {
    let mut a = job("ja", Some("x"));
    a.retried_in_job_id = Some("jb".to_string());
    let mut b = job("jb", Some("x"));
    b.retried_in_job_id = Some("ja".to_string());
    let got = names_for(vec![a, b]);
    assert_eq!(got.len(), 2);
    assert_ne!(got[0].0, got[1].0);
}

#[test]
fn shared_names_get_job_id_suffix() {
    let got = names_for(vec![
        job("01890a5d-aaaa-bbbb", Some("Lint")),
        job("01890a5e-cccc-dddd", Some("lint")),
        job("j3", Some("Other")),
    ]);
    assert_eq!(
        got,
        pairs(&[
            ("lint-01890a5d", "01890a5d-aaaa-bbbb"),
            ("lint-01890a5e", "01890a5e-cccc-dddd"),
            ("other", "j3"),
        ])
    );
    // Same first 8 chars: the full id is used.
    let got = names_for(vec![
        job("01890a5d-aaaa", Some("Lint")),
        job("01890a5d-bbbb", Some("Lint")),
    ]);
    assert_eq!(
        got,
        pairs(&[
            ("lint-01890a5d-aaaa", "01890a5d-aaaa"),
            ("lint-01890a5d-bbbb", "01890a5d-bbbb"),
        ])
    );
}

#[test]
fn names_are_stable_as_artifacts_appear() {
    // Two jobs share a label; only one has artifacts so far. It still has the suffixed name.
    let b = build(vec![
        job("11111111-x", Some("Lint")),
        job("22222222-y", Some("Lint")),
    ]);
    let t = Tree::build(
        Some(&b),
        &[art("a", Some("22222222-y"), Some("f"))],
        UNIX_EPOCH,
    );
    assert_eq!(t.job_dir_names(), pairs(&[("lint-22222222", "22222222-y")]));
}

#[test]
fn long_labels_are_cut_keeping_suffixes() {
    let mut j = job("j1", Some(&"é".repeat(200)));
    j.parallel_group_index = Some(4);
    let got = names_for(vec![j]);
    let name = &got[0].0;
    assert!(name.len() <= 255, "{}", name.len());
    assert!(name.ends_with("é-5"));
}

#[test]
fn no_build_names_by_job_id() {
    let arts = [
        art("a1", Some("0189-aaaa"), Some("x")),
        art("a2", Some("0189-bbbb"), Some("y")),
        art("a3", None, Some("z")),
        art("a4", Some(""), Some("w")),
        art("a5", Some("../evil/.."), Some("v")),
    ];
    let t = Tree::build(None, &arts, UNIX_EPOCH);
    assert_eq!(
        t.job_dir_names(),
        vec![
            ("..%2Fevil%2F..".to_string(), "../evil/..".to_string()),
            ("0189-aaaa".to_string(), "0189-aaaa".to_string()),
            ("0189-bbbb".to_string(), "0189-bbbb".to_string()),
            ("unknown-job".to_string(), String::new()),
        ]
    );
    assert_eq!(
        files(&t),
        ps(&[
            ("0189-aaaa/x", "a1"),
            ("0189-bbbb/y", "a2"),
            ("unknown-job/z", "a3"),
            ("unknown-job/w", "a4"),
            ("..%2Fevil%2F../v", "a5"),
        ])
    );
}

#[test]
fn jobs_absent_from_build_use_their_id() {
    let b = build(vec![job("j1", Some("j2")), job("j3", Some("Unknown Job"))]);
    let arts = [
        art("a1", Some("j1"), Some("x")),
        art("a2", Some("j2"), Some("x")),
        art("a3", Some("j3"), Some("x")),
        art("a4", None, Some("x")),
    ];
    let t = Tree::build(Some(&b), &arts, UNIX_EPOCH);
    // The build's jobs keep their names; the others step aside.
    assert_eq!(
        files(&t),
        ps(&[
            ("j2/x", "a1"),
            ("j2~2/x", "a2"),
            ("unknown-job/x", "a3"),
            ("unknown-job~2/x", "a4"),
        ])
    );
}

#[test]
fn only_finished_artifacts_and_their_jobs() {
    let b = build(vec![job("j1", Some("One")), job("j2", Some("Two"))]);
    let mut new = art("a2", Some("j2"), Some("y"));
    new.state = Some("new".to_string());
    let mut deleted = art("a3", Some("j1"), Some("z"));
    deleted.state = Some("deleted".to_string());
    let mut none = art("a4", Some("j1"), Some("w"));
    none.state = None;
    let t = Tree::build(
        Some(&b),
        &[art("a1", Some("j1"), Some("x")), new, deleted, none],
        UNIX_EPOCH,
    );
    assert_eq!(files(&t), ps(&[("one/x", "a1")]));
    assert_eq!(t.job_dir_names(), pairs(&[("one", "j1")]));
}

#[test]
fn hostile_paths_stay_inside_their_job_dir() {
    let long = "n".repeat(300);
    let long_path = format!("d/{long}");
    let arts = [
        art("a1", Some("j"), Some("../../etc/passwd")),
        art("a2", Some("j"), Some("a/./b")),
        art("a3", Some("j"), Some("c//d")),
        art("a4", Some("j"), Some("/abs/path")),
        art("a5", Some("j"), Some("nul\0byte")),
        art("a6", Some("j"), Some(&long_path)),
        art("a7", Some("j"), Some("back\\slash")),
        art("a8", Some("j"), Some("..")),
        art("a9", Some("j"), Some("./")),
        art("a10", Some("j"), None),
    ];
    let mut with_filename = art("a11", Some("j"), Some(""));
    with_filename.filename = Some("fn.txt".to_string());
    let mut all = arts.to_vec();
    all.push(with_filename);
    let t = Tree::build(None, &all, UNIX_EPOCH);
    let f = files(&t);
    let cut = sanitize_component(&long);
    assert_eq!(cut.len(), 255);
    assert_eq!(
        f,
        ps(&[
            ("j/%2E%2E/%2E%2E/etc/passwd", "a1"),
            ("j/a/b", "a2"),
            ("j/c/d", "a3"),
            ("j/abs/path", "a4"),
            ("j/nul%00byte", "a5"),
            (&format!("j/d/{cut}"), "a6"),
            ("j/back\\slash", "a7"),
            // `..` as a file collides with the `%2E%2E` directory of a1.
            ("j/%2E%2E~a8", "a8"),
            ("j/a9", "a9"),
            ("j/a10", "a10"),
            ("j/fn.txt", "a11"),
        ])
    );
}

#[test]
fn file_dir_collision_keeps_the_directory() {
    let id = "76365070-1111-2222-3333-444444444444";
    let arts = [
        art(id, Some("j"), Some("a")),
        art("b1", Some("j"), Some("a/b")),
    ];
    let t = Tree::build(None, &arts, UNIX_EPOCH);
    assert_eq!(files(&t), ps(&[("j/a/b", "b1"), ("j/a~76365070", id)]));
    assert!(t.resolve("j/a").unwrap().is_dir());
}

#[test]
fn duplicate_paths_smallest_id_keeps_the_name() {
    let arts = [
        art("76365070-bbbb", Some("j"), Some("out/report.xml")),
        art("12345678-aaaa", Some("j"), Some("out/report.xml")),
        art("76365070-cccc", Some("j"), Some("out/report.xml")),
        art("99999999-dddd", Some("j"), Some("out/.env")),
        art("88888888-eeee", Some("j"), Some("out/.env")),
        art("77777777-ffff", Some("j"), Some("out/README")),
        art("66666666-0000", Some("j"), Some("out/README")),
    ];
    let t = Tree::build(None, &arts, UNIX_EPOCH);
    assert_eq!(
        files(&t),
        ps(&[
            ("j/out/report.xml", "12345678-aaaa"),
            ("j/out/report~76365070.xml", "76365070-bbbb"),
            ("j/out/report~76365070-cccc.xml", "76365070-cccc"),
            ("j/out/.env", "88888888-eeee"),
            ("j/out/.env~99999999", "99999999-dddd"),
            ("j/out/README", "66666666-0000"),
            ("j/out/README~77777777", "77777777-ffff"),
        ])
    );
}

#[test]
fn identical_ids_get_numbered() {
    let arts = [
        art("x", Some("j"), Some("f")),
        art("x", Some("j"), Some("f")),
        art("x", Some("j"), Some("f")),
    ];
    let t = Tree::build(None, &arts, UNIX_EPOCH);
    assert_eq!(
        files(&t),
        ps(&[("j/f", "x"), ("j/f~x", "x"), ("j/f~x~2", "x")])
    );
}

#[test]
fn plain_names_win_over_renames() {
    // `r~12345678` is a real artifact path; the renamed duplicate of `r` must go elsewhere.
    let arts = [
        art("12345678-a", Some("j"), Some("r")),
        art("00000000-b", Some("j"), Some("r")),
        art("99999999-c", Some("j"), Some("r~12345678")),
    ];
    let t = Tree::build(None, &arts, UNIX_EPOCH);
    assert_eq!(
        files(&t),
        ps(&[
            ("j/r", "00000000-b"),
            ("j/r~12345678", "99999999-c"),
            ("j/r~12345678-a", "12345678-a"),
        ])
    );
}

#[test]
fn sizes_and_metadata() {
    let mut a = art("a1", Some("j"), Some("x"));
    a.file_size = None;
    a.sha1sum = Some("abc".to_string());
    a.mime_type = Some("text/plain".to_string());
    let mut z = art("a2", Some("j"), Some("y"));
    z.file_size = Some(0);
    let big = art("a3", Some("j"), Some("z"));
    let t = Tree::build(None, &[a, z, big], UNIX_EPOCH);
    let n = t.resolve("j/x").unwrap();
    let f = n.file().unwrap();
    assert_eq!(f.size, 0);
    assert_eq!(f.job_id, "j");
    assert_eq!(f.original_path, "x");
    assert_eq!(f.sha1sum.as_deref(), Some("abc"));
    assert_eq!(f.mime_type.as_deref(), Some("text/plain"));
    assert_eq!(f.state.as_deref(), Some("finished"));
    assert_eq!(t.resolve("j/y").unwrap().file().unwrap().size, 0);
    assert_eq!(t.total_size(), 10);
}

#[test]
fn times() {
    let fallback = UNIX_EPOCH + Duration::from_secs(42);
    let mut b = build(vec![job("j1", Some("One")), job("j2", Some("Two"))]);
    b.created_at = Some("2020-01-01T00:00:00Z".to_string());
    b.finished_at = Some("2020-01-02T00:00:00Z".to_string());
    b.jobs[0].finished_at = Some("2020-01-01T12:00:00.5Z".to_string());
    b.jobs[1].finished_at = Some("garbage".to_string());
    let arts = [
        art("a1", Some("j1"), Some("d/x")),
        art("a2", Some("j2"), Some("y")),
        art("a3", None, Some("z")),
    ];
    let t = Tree::build(Some(&b), &arts, fallback);
    let j1 = parse_time("2020-01-01T12:00:00.5Z").unwrap();
    let bt = parse_time("2020-01-02T00:00:00Z").unwrap();
    assert_eq!(t.get(ROOT_INO).unwrap().mtime, bt);
    for p in ["one", "one/d", "one/d/x"] {
        assert_eq!(t.resolve(p).unwrap().mtime, j1, "{p}");
    }
    for p in ["two", "two/y", "unknown-job", "unknown-job/z"] {
        assert_eq!(t.resolve(p).unwrap().mtime, bt, "{p}");
    }
    b.finished_at = None;
    let t = Tree::build(Some(&b), &arts, fallback);
    let created = parse_time("2020-01-01T00:00:00Z").unwrap();
    assert_eq!(t.resolve("two/y").unwrap().mtime, created);
    let t = Tree::build(None, &arts, fallback);
    assert!(t.nodes().all(|n| n.mtime == fallback));
}

#[test]
fn order_does_not_matter() {
    let b = build(vec![job("j1", Some("One")), job("j2", Some("One"))]);
    let mut arts = vec![
        art("c", Some("j1"), Some("a")),
        art("b", Some("j1"), Some("a/b")),
        art("a", Some("j1"), Some("a")),
        art("d", Some("j2"), Some("x/y/z")),
        art("e", None, Some("a")),
        art("f", Some("j9"), Some("q")),
    ];
    let t1 = format!("{:?}", Tree::build(Some(&b), &arts, UNIX_EPOCH));
    arts.reverse();
    let t2 = format!("{:?}", Tree::build(Some(&b), &arts, UNIX_EPOCH));
    arts.swap(0, 3);
    let t3 = format!("{:?}", Tree::build(Some(&b), &arts, UNIX_EPOCH));
    assert_eq!(t1, t2);
    assert_eq!(t1, t3);
}

#[test]
fn inodes_in_preorder() {
    let arts = [
        art("1", Some("j"), Some("b/y")),
        art("2", Some("j"), Some("a")),
        art("3", Some("k"), Some("x")),
    ];
    let t = Tree::build(None, &arts, UNIX_EPOCH);
    let order: Vec<String> = (1..=t.len() as Ino).map(|i| t.path_of(i)).collect();
    assert_eq!(order, ["", "j", "j/a", "j/b", "j/b/y", "k", "k/x"]);
}

#[test]
fn lookup_children_and_paths() {
    let t = Tree::build(
        None,
        &[
            art("1", Some("j"), Some("log/a.log")),
            art("2", Some("j"), Some("log/b.log")),
        ],
        UNIX_EPOCH,
    );
    let j = t.lookup(ROOT_INO, "j").unwrap();
    assert!(matches!(&j.kind, NodeKind::Dir { job: Some(m), .. } if m.job_id == "j"));
    let log = t.lookup(j.ino, "log").unwrap();
    assert!(matches!(&log.kind, NodeKind::Dir { job: None, .. }));
    let names: Vec<&str> = t.children(log.ino).unwrap().map(|(n, _)| n).collect();
    assert_eq!(names, ["a.log", "b.log"]);
    let a = t.lookup(log.ino, "a.log").unwrap();
    assert_eq!(t.path_of(a.ino), "j/log/a.log");
    assert_eq!(a.parent, log.ino);
    assert!(t.children(a.ino).is_none());
    assert!(t.lookup(a.ino, "x").is_none());
    assert!(t.lookup(ROOT_INO, "nope").is_none());
    assert!(t.get(0).is_none());
    assert!(t.get(999).is_none());
    assert_eq!(t.path_of(ROOT_INO), "");
    assert_eq!(t.path_of(999), "<inode 999>");
    assert_eq!(t.len(), 5);
    assert!(!t.is_empty());
}

#[test]
fn removing_files_and_dirs() {
    let mut t = Tree::build(
        None,
        &[
            art("1", Some("j"), Some("log/a.log")),
            art("2", Some("j"), Some("b")),
        ],
        UNIX_EPOCH,
    );
    let j = t.resolve("j").unwrap().ino;
    let log = t.resolve("j/log").unwrap().ino;
    let a = t.resolve("j/log/a.log").unwrap().ino;
    assert_eq!(t.remove_dir(j, "log").unwrap_err(), TreeError::NotEmpty);
    assert_eq!(t.remove_dir(j, "b").unwrap_err(), TreeError::NotDir);
    assert_eq!(t.remove_dir(j, "zz").unwrap_err(), TreeError::NotFound);
    assert_eq!(t.remove_dir(999, "zz").unwrap_err(), TreeError::NotFound);
    assert_eq!(t.remove_dir(a, "zz").unwrap_err(), TreeError::NotDir);
    assert!(t.remove_file(log).is_none());
    assert!(t.remove_file(ROOT_INO).is_none());
    assert_eq!(t.total_size(), 20);
    let removed = t.remove_file(a).unwrap();
    assert_eq!(removed.file().unwrap().artifact_id, "1");
    assert!(t.remove_file(a).is_none());
    assert!(t.get(a).is_none());
    assert_eq!(t.total_size(), 10);
    assert_eq!(t.len(), 4);
    // The emptied directory stays until rmdir.
    assert_eq!(t.children(log).unwrap().count(), 0);
    assert_eq!(t.remove_dir(j, "log").unwrap().ino, log);
    assert!(t.resolve("j/log").is_none());
    assert_eq!(t.len(), 3);
    let b = t.resolve("j/b").unwrap().ino;
    t.remove_file(b).unwrap();
    assert_eq!(t.remove_dir(ROOT_INO, "j").unwrap().ino, j);
    assert_eq!(t.len(), 1);
    assert_eq!(t.total_size(), 0);
}

#[test]
fn empty_input() {
    let t = Tree::build(None, &[], UNIX_EPOCH);
    assert_eq!(t.len(), 1);
    assert_eq!(t.children(ROOT_INO).unwrap().count(), 0);
    let names: BTreeSet<String> = t.job_dir_names().into_iter().map(|p| p.0).collect();
    assert!(names.is_empty());
    let _ = SystemTime::now();
}
