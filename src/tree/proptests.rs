//! Property tests: any artifact list gives a valid tree; reconciling gives the new tree's
//! shape with stable, never reused inode numbers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just(String::new()),
        Just("a".to_string()),
        Just("b".to_string()),
        Just("report.xml".to_string()),
        Just(".env".to_string()),
        Just("a~12345678".to_string()),
        Just("r~1234".to_string()),
        Just("%2E%2E".to_string()),
        Just("日本".to_string()),
        Just("nul\0".to_string()),
        Just("back\\slash".to_string()),
        Just("x".repeat(255)),
        Just("y".repeat(300)),
        Just(format!("{}.log", "é".repeat(130))),
        "[a-c.~]{1,3}",
        any::<String>().prop_map(|s| s.chars().take(20).collect()),
    ]
}

fn path() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        1 => Just(None),
        8 => (any::<bool>(), prop::collection::vec(component(), 0..4)).prop_map(|(lead, cs)| {
            let p = cs.join("/");
            Some(if lead { format!("/{p}") } else { p })
        }),
    ]
}

fn artifact_id() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("12345678-aaaa".to_string()),
        Just("12345678-bbbb".to_string()),
        Just("12345678".to_string()),
        Just("1234".to_string()),
        Just(String::new()),
        Just("a/b".to_string()),
        Just(".".to_string()),
        Just("z".repeat(300)),
        "[0-9a-f]{1,10}",
    ]
}

const JOB_IDS: &[&str] = &[
    "j1",
    "j2",
    "j3",
    "j4",
    "0189aaaa-1",
    "0189aaaa-2",
    "../x",
    "",
];

fn job_id() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        1 => Just(None),
        6 => prop::sample::select(JOB_IDS).prop_map(|s| Some(s.to_string())),
    ]
}

fn opt_str() -> impl Strategy<Value = Option<String>> {
    prop::option::of("[a-z/.]{0,6}")
}

fn artifact() -> impl Strategy<Value = Artifact> {
    (
        artifact_id(),
        job_id(),
        prop::sample::select(vec![
            Some("finished"),
            Some("finished"),
            Some("finished"),
            Some("new"),
            Some("deleted"),
            Some("error"),
            None,
        ]),
        path(),
        opt_str(),
        prop::option::of(0u64..1_000_000),
        opt_str(),
    )
        .prop_map(|(id, job_id, state, path, filename, size, sha1)| Artifact {
            id,
            job_id,
            state: state.map(str::to_string),
            path,
            filename,
            file_size: size,
            sha1sum: sha1,
            ..Default::default()
        })
}

const LABELS: &[&str] = &[
    "Lint",
    "lint",
    ":rspec: RSpec",
    ":bomb:",
    "",
    "..",
    "Unknown Job",
    "j1",
    "lint-0189aaaa",
    "Tëst 日本",
];

fn job() -> impl Strategy<Value = Job> {
    (
        prop::sample::select(JOB_IDS),
        prop::option::of(prop::sample::select(LABELS)),
        prop::option::of(prop::sample::select(LABELS)),
        prop::option::of(0u32..3),
        prop::option::of(0u32..3),
        prop::option::of(prop::sample::select(JOB_IDS)),
        prop::option::of(prop::sample::select(vec![
            "2020-01-01T00:00:00Z",
            "2021-06-01T10:00:00.123+00:00",
            "junk",
        ])),
        prop::sample::select(vec![None, Some("script"), Some("waiter")]),
        any::<bool>(),
    )
        .prop_map(
            |(id, name, key, idx, total, retried_in, finished, kind, started)| Job {
                id: id.to_string(),
                kind: kind.map(str::to_string),
                started_at: started.then(|| "2020-01-01T00:00:00Z".to_string()),
                name: name.map(str::to_string),
                step_key: key.map(str::to_string),
                parallel_group_index: idx,
                parallel_group_total: total,
                retried_in_job_id: retried_in.map(str::to_string),
                finished_at: finished.map(str::to_string),
                ..Default::default()
            },
        )
}

fn build() -> impl Strategy<Value = Option<Build>> {
    prop::option::of(
        (
            prop::collection::vec(job(), 0..6),
            prop::option::of(Just("2020-01-02T00:00:00Z".to_string())),
        )
            .prop_map(|(jobs, finished_at)| Build {
                id: "b".to_string(),
                number: 1,
                finished_at,
                jobs,
                ..Default::default()
            }),
    )
}

fn input() -> impl Strategy<Value = (Option<Build>, Vec<Artifact>, Vec<Artifact>)> {
    (build(), prop::collection::vec(artifact(), 0..24)).prop_flat_map(|(b, arts)| {
        let shuffled = Just(arts.clone()).prop_shuffle();
        (Just(b), Just(arts), shuffled)
    })
}

fn check(tree: &Tree, artifacts: &[Artifact]) -> Result<(), TestCaseError> {
    let mut seen_files: BTreeMap<String, usize> = BTreeMap::new();
    let mut count = 0;
    let mut total = 0u64;
    for node in tree.nodes() {
        count += 1;
        prop_assert_eq!(tree.get(node.ino).map(|n| n.ino), Some(node.ino));
        if node.ino != ROOT_INO {
            let name = &node.name;
            prop_assert!(
                !name.is_empty() && name != "." && name != "..",
                "bad name {:?}",
                name
            );
            prop_assert!(
                !name.contains('/') && !name.contains('\0'),
                "bad name {:?}",
                name
            );
            prop_assert!(name.len() <= NAME_MAX, "too long: {}", name.len());
            // The parent lists this node under its name.
            prop_assert_eq!(
                tree.lookup(node.parent, name).map(|n| n.ino),
                Some(node.ino)
            );
            // The parent chain reaches the root.
            let mut cur = node.parent;
            let mut depth = 0;
            while cur != ROOT_INO {
                cur = tree.get(cur).expect("parent exists").parent;
                depth += 1;
                prop_assert!(depth < 100, "parent cycle");
            }
        }
        if let NodeKind::Dir { children, job } = &node.kind {
            for (name, &child) in children {
                let c = tree.get(child).expect("child exists");
                prop_assert_eq!(&c.name, name);
                prop_assert_eq!(c.parent, node.ino);
            }
            prop_assert_eq!(
                job.is_some(),
                node.parent == ROOT_INO && node.ino != ROOT_INO
            );
        }
        if let NodeKind::File(f) = &node.kind {
            *seen_files.entry(f.artifact_id.clone()).or_default() += 1;
            total += f.size;
            prop_assert_ne!(node.parent, ROOT_INO, "file at the root");
            // Under a job dir that is a direct child of the root.
            let mut cur = node.ino;
            while tree.get(cur).unwrap().parent != ROOT_INO {
                cur = tree.get(cur).unwrap().parent;
            }
            let top = tree.get(cur).unwrap();
            let NodeKind::Dir { job: Some(j), .. } = &top.kind else {
                return Err(TestCaseError::fail("file outside a job dir"));
            };
            prop_assert_eq!(&j.job_id, &f.job_id);
            prop_assert_eq!(f.state.as_deref(), Some("finished"));
        }
    }
    prop_assert_eq!(count, tree.len());
    prop_assert_eq!(total, tree.total_size());
    for node in tree.nodes() {
        if let NodeKind::Log(l) = &node.kind {
            prop_assert_eq!(node.parent, ROOT_INO, "log below the root");
            prop_assert!(node.name.ends_with(".log"), "{:?}", node.name);
            prop_assert!(!l.job_id.is_empty());
        }
    }
    let mut want: BTreeMap<String, usize> = BTreeMap::new();
    for a in artifacts.iter().filter(|a| a.is_finished()) {
        *want.entry(a.id.clone()).or_default() += 1;
    }
    prop_assert_eq!(seen_files, want);
    // Job dirs are unique per job.
    let jobs: Vec<String> = tree.job_dir_names().into_iter().map(|p| p.1).collect();
    let unique: HashSet<&String> = jobs.iter().collect();
    prop_assert_eq!(unique.len(), jobs.len());
    Ok(())
}

/// A listing, then a later one: most artifacts stay, some go, some arrive; the build's jobs
/// may change too (retries, new jobs).
#[allow(clippy::type_complexity)]
fn live_input(
) -> impl Strategy<Value = (Option<Build>, Vec<Artifact>, Option<Build>, Vec<Artifact>)> {
    (build(), prop::collection::vec(artifact(), 0..24)).prop_flat_map(|(b, arts)| {
        let n = arts.len();
        (
            Just(b.clone()),
            Just(arts),
            prop_oneof![Just(b), build()],
            prop::collection::vec(prop::bool::weighted(0.7), n),
            prop::collection::vec(artifact(), 0..12),
        )
            .prop_map(|(b, arts, b2, keep, extra)| {
                let mut next: Vec<Artifact> = arts
                    .iter()
                    .zip(keep)
                    .filter(|(_, k)| *k)
                    .map(|(a, _)| a.clone())
                    .collect();
                next.extend(extra);
                (b, arts, b2, next)
            })
    })
}

/// What a node is, apart from its inode number.
#[derive(Debug, PartialEq)]
struct Shape {
    is_dir: bool,
    file: Option<FileMeta>,
    job: Option<JobMeta>,
    log: Option<LogMeta>,
    mtime: SystemTime,
}

fn shapes(t: &Tree) -> BTreeMap<String, Shape> {
    t.nodes()
        .map(|n| {
            let job = match &n.kind {
                NodeKind::Dir { job, .. } => job.clone(),
                _ => None,
            };
            let shape = Shape {
                is_dir: n.is_dir(),
                file: n.file().cloned(),
                log: n.log().cloned(),
                job,
                mtime: n.mtime,
            };
            (t.path_of(n.ino), shape)
        })
        .collect()
}

fn subdirs(t: &Tree, n: &Node) -> usize {
    t.children(n.ino).map_or(0, |c| {
        c.filter(|(_, i)| t.get(*i).unwrap().is_dir()).count()
    })
}

fn children_of(t: &Tree, n: &Node) -> Vec<(String, Ino)> {
    t.children(n.ino)
        .map(|c| c.map(|(name, i)| (name.to_string(), i)).collect())
        .unwrap_or_default()
}

/// `got` is `old` reconciled with `fresh` (giving `changes`), for the artifact list `arts`.
fn check_reconcile(
    old: &Tree,
    fresh: &Tree,
    got: &Tree,
    changes: &TreeChanges,
    arts: &[Artifact],
) -> Result<(), TestCaseError> {
    check(got, arts)?;
    prop_assert_eq!(shapes(got), shapes(fresh));
    prop_assert_eq!(got.total_size(), fresh.total_size());
    prop_assert!(got.max_ino() >= old.max_ino());

    // Survivors keep their number; everything else is numbered above all old numbers.
    let old_by_path: HashMap<String, &Node> =
        old.nodes().map(|n| (old.path_of(n.ino), n)).collect();
    let mut survivors: HashMap<Ino, Ino> = HashMap::new(); // final ino → old ino (equal)
    let mut inos = HashSet::new();
    for n in got.nodes() {
        prop_assert!(inos.insert(n.ino));
        let path = got.path_of(n.ino);
        let same = old_by_path
            .get(&path)
            .is_some_and(|o| match (&o.kind, &n.kind) {
                (NodeKind::Dir { .. }, NodeKind::Dir { .. }) => true,
                (NodeKind::File(a), NodeKind::File(b)) => a.artifact_id == b.artifact_id,
                (NodeKind::Log(a), NodeKind::Log(b)) => a.job_id == b.job_id,
                _ => false,
            });
        if same {
            prop_assert_eq!(n.ino, old_by_path[&path].ino, "{} changed its inode", path);
            survivors.insert(n.ino, n.ino);
        } else {
            prop_assert!(n.ino > old.max_ino(), "{} reuses inode {}", path, n.ino);
        }
    }
    prop_assert!(survivors.contains_key(&ROOT_INO));

    // Removed: every old node that did not survive, children before their directory.
    let mut want_removed: Vec<(Ino, String, Ino)> = old
        .nodes()
        .filter(|n| !survivors.contains_key(&n.ino))
        .map(|n| (n.parent, n.name.clone(), n.ino))
        .collect();
    let mut got_removed = changes.removed.clone();
    let pos: HashMap<Ino, usize> = got_removed
        .iter()
        .enumerate()
        .map(|(i, r)| (r.2, i))
        .collect();
    for (i, (parent, _, _)) in got_removed.iter().enumerate() {
        if let Some(&p) = pos.get(parent) {
            prop_assert!(p > i, "directory removed before its child");
        }
    }
    want_removed.sort();
    got_removed.sort();
    prop_assert_eq!(got_removed, want_removed);

    // Added: every new node, directories before their children.
    let mut want_added: Vec<(Ino, String)> = got
        .nodes()
        .filter(|n| !survivors.contains_key(&n.ino))
        .map(|n| (n.parent, n.name.clone()))
        .collect();
    let mut seen = HashSet::new();
    for (parent, name) in &changes.added {
        prop_assert!(
            survivors.contains_key(parent) || seen.contains(parent),
            "child added before its directory"
        );
        seen.insert(got.lookup(*parent, name).expect("added entry exists").ino);
    }
    let mut got_added = changes.added.clone();
    want_added.sort();
    got_added.sort();
    prop_assert_eq!(got_added, want_added);

    // Changed directories and attributes, among survivors.
    let mut want_dirs = Vec::new();
    let mut want_attrs = Vec::new();
    for n in got.nodes().filter(|n| survivors.contains_key(&n.ino)) {
        let o = old.get(n.ino).unwrap();
        if n.is_dir() && children_of(old, o) != children_of(got, n) {
            want_dirs.push(n.ino);
        }
        let attrs_changed = o.mtime != n.mtime
            || match (&o.kind, &n.kind) {
                (NodeKind::File(a), NodeKind::File(b)) => a != b,
                (NodeKind::Log(a), NodeKind::Log(b)) => a != b,
                (NodeKind::Dir { job: a, .. }, NodeKind::Dir { job: b, .. }) => {
                    a != b || subdirs(old, o) != subdirs(got, n)
                }
                _ => unreachable!("survivors keep their kind"),
            };
        if attrs_changed {
            want_attrs.push(n.ino);
        }
    }
    let mut got_dirs = changes.changed_dirs.clone();
    got_dirs.sort_unstable();
    prop_assert_eq!(got_dirs, want_dirs);
    let mut got_attrs = changes.changed_attrs.clone();
    got_attrs.sort_unstable();
    prop_assert_eq!(got_attrs, want_attrs);
    prop_assert_eq!(changes.is_empty(), format!("{old:?}") == format!("{got:?}"));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn reconcile_keeps_inodes_and_takes_the_new_shape((b1, a, b2, b) in live_input()) {
        let mut t = Tree::build_with(b1.as_ref(), &a, UNIX_EPOCH, true);
        t.set_build_number(1);
        // A → B.
        let old = t.clone();
        let mut fresh = Tree::build_with(b2.as_ref(), &b, UNIX_EPOCH, true);
        fresh.set_build_number(1);
        let changes = t.reconcile(fresh.clone());
        check_reconcile(&old, &fresh, &t, &changes, &b)?;
        // B → A: what comes back is new again, numbered above everything so far.
        let old = t.clone();
        let mut fresh = Tree::build_with(b1.as_ref(), &a, UNIX_EPOCH, true);
        fresh.set_build_number(1);
        let changes = t.reconcile(fresh.clone());
        check_reconcile(&old, &fresh, &t, &changes, &a)?;
        // A → A: nothing.
        let again = t.clone();
        let mut fresh = Tree::build_with(b1.as_ref(), &a, UNIX_EPOCH, true);
        fresh.set_build_number(1);
        let changes = t.reconcile(fresh);
        prop_assert!(changes.is_empty(), "{:?}", changes);
        prop_assert_eq!(format!("{t:?}"), format!("{again:?}"));
    }

    #[test]
    fn any_input_gives_a_valid_tree((b, arts, shuffled) in input()) {
        let t = Tree::build(b.as_ref(), &arts, UNIX_EPOCH);
        check(&t, &arts)?;
        let t2 = Tree::build(b.as_ref(), &shuffled, UNIX_EPOCH);
        prop_assert_eq!(format!("{t:?}"), format!("{t2:?}"));
        // With logs: the same artifacts, plus one log per started command job.
        let t = Tree::build_with(b.as_ref(), &arts, UNIX_EPOCH, true);
        check(&t, &arts)?;
        let t2 = Tree::build_with(b.as_ref(), &shuffled, UNIX_EPOCH, true);
        prop_assert_eq!(format!("{t:?}"), format!("{t2:?}"));
        let want: HashSet<&str> = b
            .iter()
            .flat_map(|b| &b.jobs)
            .filter(|j| has_log(j) && !j.id.is_empty())
            .map(|j| j.id.as_str())
            .collect();
        let got: Vec<&str> = t.nodes().filter_map(|n| n.log()).map(|l| l.job_id.as_str()).collect();
        prop_assert_eq!(got.len(), want.len(), "one log per job");
        prop_assert_eq!(got.into_iter().collect::<HashSet<_>>(), want);
    }

    #[test]
    fn job_names_are_unique_and_valid(b in build()) {
        if let Some(b) = b {
            let names = name_jobs(&b.jobs);
            let set: HashSet<&String> = names.iter().map(|p| &p.1).collect();
            prop_assert_eq!(set.len(), names.len());
            for (_, n) in &names {
                prop_assert!(!n.is_empty() && n != "." && n != ".." && !n.contains('/'));
                prop_assert!(n.len() <= NAME_MAX);
            }
        }
    }

    #[test]
    fn slugs_are_safe(s in any::<String>()) {
        let slug = slugify(&s);
        prop_assert!(!slug.contains('/') && !slug.contains('\0'));
        prop_assert!(!slug.starts_with('-') && !slug.ends_with('-'));
        prop_assert!(!slug.contains("--"));
        prop_assert!(slug.is_empty() || !slug.chars().all(|c| c == '.'));
    }

    #[test]
    fn parse_time_never_panics(s in "[0-9TZ:+.-]{0,30}") {
        let _ = parse_time(&s);
    }

    #[test]
    fn parse_time_roundtrips(secs in 0i64..4_102_444_800) {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        // civil_from_days (Hinnant), to format a date for the parser.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        let s = format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        );
        prop_assert_eq!(
            parse_time(&s),
            Some(UNIX_EPOCH + std::time::Duration::from_secs(secs as u64)),
            "{}", s
        );
    }
}
