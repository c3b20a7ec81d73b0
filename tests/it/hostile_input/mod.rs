//! Hostile and odd input: arbitrary JSON through the wire types into the tree builder, and the
//! REST client against a scripted local server (`bkfs_fake::scripted`) that answers with odd
//! but valid (and some invalid) pages and `Link` headers.
//!
//! Part 1 (proptest): any JSON either fails to parse cleanly or gives a tree whose invariants
//! hold (unique, valid names; every finished artifact exactly once; every node reaches the
//! root). Whether a list parses is predicted by a small oracle ([`artifact_well_typed`],
//! [`build_well_typed`]), which documents the current rule: a single element with a
//! wrong-typed field fails the whole list.
//!
//! Part 2 ([`rest`], the scripted server on 127.0.0.1): unknown/missing/null fields, odd `Link` headers,
//! malformed pages (errors name the path, never the query), links to another origin (refused,
//! the token never leaves).
//! Three of them pin pagination fixes: relative `Link` URLs resolve against the page that
//! carried them, every `Link` header field is read, and a pagination loop is an error.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::UNIX_EPOCH;

use bkfs::api::model::{Artifact, Build};
use bkfs::tree::{name_jobs, NodeKind, Tree, NAME_MAX, ROOT_INO};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

mod rest;

// ---------------------------------------------------------------------------------------------
// Part 1: JSON -> Vec<Artifact> / Build -> Tree
// ---------------------------------------------------------------------------------------------

/// Every field name of [`Artifact`], in declaration order (the oracle needs the order for
/// serde's positional form); unknown extra fields are drawn from names not in here.
const ARTIFACT_FIELDS: &[&str] = &[
    "id",
    "job_id",
    "url",
    "download_url",
    "state",
    "path",
    "dirname",
    "filename",
    "mime_type",
    "file_size",
    "sha1sum",
    "glob_path",
    "original_path",
];
const JOB_FIELDS: &[&str] = &[
    "id",
    "type",
    "name",
    "step_key",
    "state",
    "parallel_group_index",
    "parallel_group_total",
    "retried",
    "retried_in_job_id",
    "created_at",
    "started_at",
    "finished_at",
    "web_url",
    "artifacts_url",
];
const BUILD_FIELDS: &[&str] = &[
    "id",
    "number",
    "state",
    "web_url",
    "created_at",
    "started_at",
    "finished_at",
    "message",
    "branch",
    "commit",
    "jobs",
];

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

/// Job ids shared by artifacts and builds, so that artifacts land in named job dirs, dangling
/// ones, `unknown-job`, and escaped-id dirs.
fn job_id_pool() -> Vec<String> {
    vec![
        "j1".into(),
        "j2".into(),
        "j3".into(),
        "j4".into(),
        "0189aaaa-1".into(),
        "0189aaaa-2".into(),
        "../x".into(),
        "a/b".into(),
        ".".into(),
        "..".into(),
        "\0".into(),
        String::new(),
        "unknown-job".into(),
        "lint".into(),
        "dangling".into(),
        "x".repeat(300),
        "日本".into(),
    ]
}

fn job_id_value() -> BoxedStrategy<Value> {
    prop::sample::select(job_id_pool())
        .prop_map(Value::String)
        .boxed()
}

/// One path component, mostly hostile.
fn component() -> BoxedStrategy<String> {
    // A `select` from a pool first: a `prop_oneof!` with many arms costs a forked RNG per
    // arm before the picked one, which made generation dominate the run time.
    let pool: Vec<String> = vec![
        "..".into(),
        ".".into(),
        String::new(),
        "...".into(),
        " ".into(),
        "a".into(),
        "b".into(),
        "report.xml".into(),
        ".env".into(),
        "nul\0byte".into(),
        "\0".into(),
        "back\\slash".into(),
        "%2E%2E".into(),
        "%00".into(),
        "%2F".into(),
        "日本語".into(),
        "🚀".into(),
        "e\u{301}".into(),
        "\u{202e}txt.exe".into(),
        "unknown-job".into(),
        "a~12345678".into(),
        "report~1.xml".into(),
        "x".repeat(255),
        "y".repeat(256),
        "z".repeat(1000),
        "é".repeat(200),
        format!("{}.log", "é".repeat(130)),
        format!("{}.{}", "s".repeat(10), "e".repeat(300)),
    ];
    prop_oneof![
        12 => prop::sample::select(pool),
        1 => "[a-c.~ ]{1,3}",
        1 => any::<String>().prop_map(|s| s.chars().take(24).collect()),
    ]
    .boxed()
}

/// A whole artifact path: components joined by odd separators, leading/trailing slashes,
/// very deep or very long paths, and arbitrary strings.
fn odd_path() -> BoxedStrategy<String> {
    let special: Vec<String> = vec![
        String::new(),
        "/".into(),
        "////".into(),
        "/./../".into(),
        format!("{}etc/passwd", "../".repeat(50)),
        "a/".repeat(200),
        format!("a/{}", "b".repeat(5000)),
    ];
    let joined = (
        prop::collection::vec(
            (
                component(),
                prop::sample::select(vec!["/", "//", "/./", "/../", "\\"]),
            ),
            0..5,
        ),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(parts, lead, trail)| {
            let mut p = String::new();
            if lead {
                p.push('/');
            }
            for (i, (c, sep)) in parts.iter().enumerate() {
                if i > 0 {
                    p.push_str(sep);
                }
                p.push_str(c);
            }
            if trail {
                p.push('/');
            }
            p
        });
    prop_oneof![
        12 => joined,
        3 => prop::sample::select(special),
        1 => any::<String>(),
    ]
    .boxed()
}

/// Nested junk of any JSON type.
fn junk() -> BoxedStrategy<Value> {
    let fixed = vec![
        Value::Null,
        json!(true),
        json!(false),
        json!(0),
        json!(1.5),
        json!(-1),
        json!(1e300),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(4_294_967_296u64),
        json!("123"),
        json!("finished"),
        json!(""),
        json!([]),
        json!({}),
    ];
    let leaf = prop_oneof![
        6 => prop::sample::select(fixed),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(Value::from),
        1 => ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A field that should hold `good`: absent, null, good, or (with weight `level` per 100)
/// junk of any type.
fn field(name: &'static str, good: BoxedStrategy<Value>, level: u32) -> BoxedStrategy<Field> {
    // The likeliest arm first: a union forks the RNG for every arm before the picked one.
    let mut choices: Vec<(u32, BoxedStrategy<Option<Value>>)> = vec![
        (70, good.prop_map(Some).boxed()),
        (
            30,
            prop::sample::select(vec![None, Some(Value::Null)]).boxed(),
        ),
    ];
    if level > 0 {
        choices.push((level, junk().prop_map(Some).boxed()));
    }
    prop::strategy::Union::new_weighted(choices)
        .prop_map(move |v| (name, v))
        .boxed()
}

/// A required string field (`id`): a good string, or (with weight `level` per 100) missing,
/// null or junk.
fn required(name: &'static str, good: BoxedStrategy<Value>, level: u32) -> BoxedStrategy<Field> {
    let mut choices: Vec<(u32, BoxedStrategy<Option<Value>>)> =
        vec![(100, good.prop_map(Some).boxed())];
    if level > 0 {
        choices.push((
            2 * level,
            prop::sample::select(vec![None, Some(Value::Null)]).boxed(),
        ));
        choices.push((level, junk().prop_map(Some).boxed()));
    }
    prop::strategy::Union::new_weighted(choices)
        .prop_map(move |v| (name, v))
        .boxed()
}

type Field = (&'static str, Option<Value>);

/// Unknown extra fields (never one of `known`).
fn extras(known: &'static [&'static str]) -> BoxedStrategy<Vec<(String, Value)>> {
    let name = prop_oneof![
        3 => prop::sample::select(vec![
            "ID".to_string(),
            "Path".to_string(),
            "file-size".to_string(),
            "__proto__".to_string(),
            String::new(),
            "state ".to_string(),
            "artifacts".to_string(),
            "brand_new_field".to_string(),
        ]),
        1 => "x_[a-z]{0,5}",
    ];
    prop::collection::vec((name, junk()), 0..2)
        .prop_map(move |v| {
            v.into_iter()
                .filter(|(k, _)| !known.contains(&k.as_str()))
                .collect()
        })
        .boxed()
}

fn object(fields: Vec<Field>, extra: Vec<(String, Value)>) -> Value {
    let mut m = Map::new();
    for (k, v) in extra {
        m.insert(k, v);
    }
    for (k, v) in fields {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    }
    Value::Object(m)
}

/// A string for a field the tree does not look at (urls, sums, messages): mostly from a
/// pool, sometimes arbitrary (arbitrary strings are slow to generate).
fn any_str(max: usize) -> BoxedStrategy<Value> {
    prop_oneof![
        8 => prop::sample::select(vec![
            String::new(),
            "\0".to_string(),
            "text/plain".to_string(),
            "https://api.example/x?token=secret".to_string(),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709".to_string(),
            "日本 🚀".to_string(),
            "x".repeat(300),
            "null".to_string(),
        ]),
        1 => any::<String>().prop_map(move |s| s.chars().take(max).collect()),
    ]
    .prop_map(Value::String)
    .boxed()
}

fn artifact_json(level: u32) -> BoxedStrategy<Value> {
    let id = prop_oneof![
        10 => prop::sample::select(vec![
            "1".to_string(),
            "2".to_string(),
            "12345678-aaaa".to_string(),
            "12345678-bbbb".to_string(),
            "12345678".to_string(),
            String::new(),
            "a/b".to_string(),
            ".".to_string(),
            "..".to_string(),
            "\0".to_string(),
            "z".repeat(300),
        ]),
        2 => "[0-9a-f]{1,10}",
        1 => any::<String>().prop_map(|s| s.chars().take(10).collect()),
    ]
    .prop_map(Value::String)
    .boxed();
    let state = prop_oneof![
        12 => prop::sample::select(vec![
            "finished", "finished", "finished", "finished", "finished", "finished",
            "finished", "finished", "finished", "finished", "finished", "finished",
            "FINISHED", "finished ", "new", "error", "deleted", "expired",
        ])
        .prop_map(s),
        1 => ".{0,10}".prop_map(Value::String),
    ]
    .boxed();
    let size = prop_oneof![
        4 => (0u64..1_000_000).prop_map(Value::from),
        1 => prop::sample::select(vec![json!(0), json!(u64::MAX)]),
    ]
    .boxed();
    let fields = vec![
        required("id", id, level),
        field("job_id", job_id_value(), level),
        field("url", any_str(40), level),
        field("download_url", any_str(40), level),
        field("state", state, level),
        field("path", odd_path().prop_map(Value::String).boxed(), level),
        field("dirname", odd_path().prop_map(Value::String).boxed(), level),
        field(
            "filename",
            component().prop_map(Value::String).boxed(),
            level,
        ),
        field("mime_type", any_str(20), level),
        field("file_size", size, level),
        field("sha1sum", any_str(40), level),
        field("glob_path", any_str(20), level),
        field(
            "original_path",
            odd_path().prop_map(Value::String).boxed(),
            level,
        ),
    ];
    (fields, extras(ARTIFACT_FIELDS))
        .prop_map(|(f, e)| object(f, e))
        .boxed()
}

/// An artifact list, or (rarely) something that is not a list at all.
fn artifact_list_json() -> BoxedStrategy<Value> {
    // The hostility level is chosen per list; strategies are built once, up front (building
    // them per case, e.g. in `prop_flat_map`, recompiles every regex and is 50x slower).
    let lists: Vec<BoxedStrategy<Value>> = (0..4)
        .map(|level| {
            prop::collection::vec(artifact_json(level), 0..16)
                .prop_map(Value::Array)
                .boxed()
        })
        .collect();
    let mixed = prop::collection::vec(
        prop_oneof![3 => artifact_json(0), 1 => positional(ARTIFACT_FIELDS.len())],
        0..6,
    )
    .prop_map(Value::Array);
    prop_oneof![
        30 => prop::strategy::Union::new(lists),
        2 => mixed,
        1 => junk(),
        1 => Just(json!({"artifacts": []})),
    ]
    .boxed()
}

/// A record in serde's positional form: an array of up to `n + 1` values (one too many
/// fails), mostly strings, nulls and `finished`.
fn positional(n: usize) -> BoxedStrategy<Value> {
    prop::collection::vec(
        prop_oneof![
            4 => odd_path().prop_map(Value::String),
            2 => Just(s("finished")),
            2 => Just(Value::Null),
            1 => junk(),
        ],
        0..=n + 1,
    )
    .prop_map(Value::Array)
    .boxed()
}

fn label() -> BoxedStrategy<Value> {
    let pool: Vec<&'static str> = vec![
        ":rspec: RSpec",
        ":docker::buildkite: Build",
        ":bomb:",
        "::",
        ":a:b:c:",
        ":smile",
        ":not a code: x",
        ":+1: :-1:",
        "🚀 Deploy",
        "",
        "...",
        "..",
        ".",
        "-",
        "Unknown Job",
        "unknown-job",
        "j1",
        "lint",
        "Lint",
        "LINT!",
        "lint-0189aaaa",
        "lint-j1",
        "rspec-2",
        "rspec-attempt-1",
        "rspec-2-attempt-1",
        "Tëst 日本",
        "a/b",
        "\0",
        "%2E%2E",
    ];
    prop_oneof![
        6 => prop::sample::select(pool).prop_map(s),
        1 => Just(Value::String(format!(":{}: {}", "e".repeat(40), "l".repeat(400)))),
        1 => Just(Value::String("é".repeat(300))),
        1 => (prop::sample::select(vec![":rspec:", ":docker:", "::", ":x", ""]), ".{0,12}")
            .prop_map(|(e, l)| Value::String(format!("{e}{l}"))),
        1 => any::<String>().prop_map(|s| Value::String(s.chars().take(30).collect())),
    ]
    .boxed()
}

fn time_value() -> BoxedStrategy<Value> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "2020-01-01T00:00:00Z",
            "2021-06-01T10:00:00.123+00:00",
            "2021-06-01T10:00:00.123456789-07:30",
            "junk",
            "9999-99-99T99:99:99Z",
            "",
        ])
        .prop_map(s),
        1 => "[0-9TZ:+.-]{0,25}".prop_map(Value::String),
    ]
    .boxed()
}

fn job_json(level: u32) -> BoxedStrategy<Value> {
    let small_u32 = prop_oneof![
        4 => (0u32..4).prop_map(Value::from),
        1 => Just(json!(u32::MAX)),
    ]
    .boxed();
    let fields = vec![
        required("id", job_id_value(), level),
        field(
            "type",
            prop::sample::select(vec!["script", "waiter", "manual", "trigger", "block"])
                .prop_map(s)
                .boxed(),
            level,
        ),
        field("name", label(), level),
        field("step_key", label(), level),
        field("state", any_str(10), level),
        field("parallel_group_index", small_u32.clone(), level),
        field("parallel_group_total", small_u32, level),
        field(
            "retried",
            any::<bool>().prop_map(Value::Bool).boxed(),
            level,
        ),
        field("retried_in_job_id", job_id_value(), level),
        field("created_at", time_value(), level),
        field("started_at", time_value(), level),
        field("finished_at", time_value(), level),
        field("web_url", any_str(30), level),
        field("artifacts_url", any_str(30), level),
    ];
    (fields, extras(JOB_FIELDS))
        .prop_map(|(f, e)| object(f, e))
        .boxed()
}

fn build_json() -> BoxedStrategy<Value> {
    prop_oneof![
        20 => prop::strategy::Union::new((0..4).map(build_json_at)),
        1 => positional(BUILD_FIELDS.len()),
    ]
    .boxed()
}

fn build_json_at(level: u32) -> BoxedStrategy<Value> {
    let jobs = prop_oneof![
        1 => Just(None),
        1 => Just(Some(Value::Null)),
        8 => prop::collection::vec(job_json(level), 0..10).prop_map(|v| Some(Value::Array(v))),
    ]
    .prop_map(|v| ("jobs", v))
    .boxed();
    let number = prop_oneof![(0u64..10_000).prop_map(Value::from), Just(json!(u64::MAX)),].boxed();
    let fields = vec![
        required("id", any_str(20), level),
        required("number", number, level),
        field("state", any_str(10), level),
        field("web_url", any_str(30), level),
        field("created_at", time_value(), level),
        field("started_at", time_value(), level),
        field("finished_at", time_value(), level),
        field("message", any_str(30), level),
        field("branch", any_str(30), level),
        field("commit", any_str(40), level),
        jobs,
    ];
    (fields, extras(BUILD_FIELDS))
        .prop_map(|(f, e)| object(f, e))
        .boxed()
}

// --- The oracle: which JSON the wire types accept. ---

fn opt_string_ok(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null) | Some(Value::String(_)))
}

fn opt_u64_ok(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(v) => v.as_u64().is_some(),
    }
}

fn opt_u32_ok(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(v) => v.as_u64().is_some_and(|n| u32::try_from(n).is_ok()),
    }
}

/// A record as serde's derived `Deserialize` takes it: an object (fields by name, unknown
/// ones ignored), or — a serde quirk — an array giving the fields by position, in declaration
/// order, trailing `#[serde(default)]` fields omittable. `ok(field, value)` checks one field
/// (`None` = absent).
fn record_ok(v: &Value, fields: &[&str], ok: &dyn Fn(&str, Option<&Value>) -> bool) -> bool {
    match v {
        Value::Object(o) => fields.iter().all(|k| ok(k, o.get(*k))),
        Value::Array(items) => {
            items.len() <= fields.len()
                && fields.iter().enumerate().all(|(i, k)| ok(k, items.get(i)))
        }
        _ => false,
    }
}

/// True iff `serde_json` should accept `v` as an [`Artifact`]: `id` a string, every other
/// known field absent, null or of its type; unknown fields anything.
fn artifact_well_typed(v: &Value) -> bool {
    record_ok(v, ARTIFACT_FIELDS, &|k, v| match k {
        "id" => matches!(v, Some(Value::String(_))),
        "file_size" => opt_u64_ok(v),
        _ => opt_string_ok(v),
    })
}

fn job_well_typed(v: &Value) -> bool {
    record_ok(v, JOB_FIELDS, &|k, v| match k {
        "id" => matches!(v, Some(Value::String(_))),
        "parallel_group_index" | "parallel_group_total" => opt_u32_ok(v),
        "retried" => matches!(v, None | Some(Value::Null) | Some(Value::Bool(_))),
        _ => opt_string_ok(v),
    })
}

fn build_well_typed(v: &Value) -> bool {
    record_ok(v, BUILD_FIELDS, &|k, v| match k {
        "id" => matches!(v, Some(Value::String(_))),
        "number" => v.and_then(Value::as_u64).is_some(),
        "jobs" => match v {
            None | Some(Value::Null) => true,
            Some(Value::Array(js)) => js.iter().all(job_well_typed),
            Some(_) => false,
        },
        _ => opt_string_ok(v),
    })
}

fn list_well_typed(v: &Value) -> bool {
    matches!(v, Value::Array(items) if items.iter().all(artifact_well_typed))
}

// --- Tree invariants. ---

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n != "."
        && n != ".."
        && !n.contains('/')
        && !n.contains('\0')
        && n.len() <= NAME_MAX
}

/// Checks every invariant of a built tree. `build_names` (job id → name from `name_jobs`) is
/// given when the tree was built with the build.
fn check_tree(
    tree: &Tree,
    artifacts: &[Artifact],
    build_names: Option<&HashMap<String, String>>,
) -> Result<(), TestCaseError> {
    let mut names_seen: HashSet<(u64, &str)> = HashSet::new();
    let mut files: BTreeMap<&str, usize> = BTreeMap::new();
    let mut job_dir_ids: Vec<String> = Vec::new();
    let mut count = 0usize;
    let mut total = 0u64;
    let root = tree.get(ROOT_INO).expect("root exists");
    prop_assert_eq!(root.parent, ROOT_INO);
    prop_assert!(root.is_dir());
    for node in tree.nodes() {
        count += 1;
        prop_assert_eq!(tree.get(node.ino).map(|n| n.ino), Some(node.ino));
        if node.ino != ROOT_INO {
            let name = node.name.as_str();
            prop_assert!(
                valid_name(name),
                "bad name {:?} ({} bytes)",
                name,
                name.len()
            );
            prop_assert!(
                names_seen.insert((node.parent, name)),
                "name {:?} twice in dir {}",
                name,
                node.parent
            );
            prop_assert_eq!(
                tree.lookup(node.parent, name).map(|n| n.ino),
                Some(node.ino)
            );
            // The parent chain reaches the root, without cycles.
            let mut cur = node.parent;
            let mut steps = 0usize;
            while cur != ROOT_INO {
                let p = tree.get(cur);
                prop_assert!(p.is_some(), "dangling parent {}", cur);
                prop_assert!(p.unwrap().is_dir(), "parent {} is a file", cur);
                cur = p.unwrap().parent;
                steps += 1;
                prop_assert!(steps <= tree.len(), "parent cycle at {}", node.ino);
            }
        }
        match &node.kind {
            NodeKind::Dir { children, job } => {
                for (name, &child) in children {
                    let c = tree.get(child);
                    prop_assert!(c.is_some(), "dangling child {:?}", name);
                    prop_assert_eq!(&c.unwrap().name, name);
                    prop_assert_eq!(c.unwrap().parent, node.ino);
                }
                let is_job_dir = node.parent == ROOT_INO && node.ino != ROOT_INO;
                prop_assert_eq!(job.is_some(), is_job_dir);
                if let Some(j) = job {
                    job_dir_ids.push(j.job_id.clone());
                    if let Some(want) = build_names.and_then(|m| m.get(&j.job_id)) {
                        prop_assert_eq!(&node.name, want, "job {:?}", j.job_id);
                    }
                }
            }
            NodeKind::File(f) => {
                *files.entry(f.artifact_id.as_str()).or_default() += 1;
                total = total.saturating_add(f.size);
                prop_assert_ne!(node.parent, ROOT_INO, "file at the root");
                prop_assert_eq!(f.state.as_deref(), Some("finished"));
                // Inside the job dir of its own job.
                let mut top = node;
                while top.parent != ROOT_INO {
                    top = tree.get(top.parent).unwrap();
                }
                let NodeKind::Dir { job: Some(j), .. } = &top.kind else {
                    return Err(TestCaseError::fail("file outside a job dir"));
                };
                prop_assert_eq!(&j.job_id, &f.job_id);
                // Reachable by its path.
                let p = tree.path_of(node.ino);
                prop_assert_eq!(tree.resolve(&p).map(|n| n.ino), Some(node.ino), "{:?}", p);
            }
            NodeKind::Log(_) => {
                prop_assert_eq!(node.parent, ROOT_INO, "log below the root");
                prop_assert!(node.name.ends_with(".log"), "{:?}", node.name);
            }
        }
    }
    prop_assert_eq!(count, tree.len());
    prop_assert_eq!(total, tree.total_size());

    // Every finished artifact exactly once (a multiset: ids may repeat).
    let finished: Vec<&Artifact> = artifacts.iter().filter(|a| a.is_finished()).collect();
    let mut want: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &finished {
        *want.entry(a.id.as_str()).or_default() += 1;
    }
    prop_assert_eq!(files, want);

    // One job dir per job that has a finished artifact, and no other.
    let dir_set: HashSet<&str> = job_dir_ids.iter().map(String::as_str).collect();
    prop_assert_eq!(dir_set.len(), job_dir_ids.len(), "a job has two dirs");
    let want_jobs: HashSet<&str> = finished
        .iter()
        .map(|a| a.job_id.as_deref().unwrap_or(""))
        .collect();
    prop_assert_eq!(dir_set, want_jobs);
    Ok(())
}

fn check_job_names(b: &Build) -> Result<HashMap<String, String>, TestCaseError> {
    let names = name_jobs(&b.jobs);
    let mut ids_in_order: Vec<&str> = Vec::new();
    for j in &b.jobs {
        if !j.id.is_empty() && !ids_in_order.contains(&j.id.as_str()) {
            ids_in_order.push(&j.id);
        }
    }
    let got_ids: Vec<&str> = names.iter().map(|p| p.0.as_str()).collect();
    prop_assert_eq!(got_ids, ids_in_order);
    let mut seen = HashSet::new();
    for (id, n) in &names {
        prop_assert!(valid_name(n), "job {:?}: bad dir name {:?}", id, n);
        prop_assert!(seen.insert(n.as_str()), "dir name {:?} twice", n);
    }
    Ok(names.into_iter().collect())
}

/// Parses both ways the code does (`from_value` here, `from_slice` in the client) and checks
/// they agree with each other and with the oracle.
fn parse_artifacts(v: &Value) -> Result<Option<Vec<Artifact>>, TestCaseError> {
    let from_value = serde_json::from_value::<Vec<Artifact>>(v.clone());
    let from_text = serde_json::from_str::<Vec<Artifact>>(&v.to_string());
    prop_assert_eq!(from_value.is_ok(), from_text.is_ok());
    prop_assert_eq!(
        from_value.is_ok(),
        list_well_typed(v),
        "oracle disagrees: {:?}",
        from_value.as_ref().err()
    );
    if let (Ok(a), Ok(b)) = (&from_value, &from_text) {
        prop_assert_eq!(a, b);
    }
    Ok(from_value.ok())
}

fn parse_build(v: &Value) -> Result<Option<Build>, TestCaseError> {
    let from_value = serde_json::from_value::<Build>(v.clone());
    let from_text = serde_json::from_str::<Build>(&v.to_string());
    prop_assert_eq!(from_value.is_ok(), from_text.is_ok());
    prop_assert_eq!(
        from_value.is_ok(),
        build_well_typed(v),
        "oracle disagrees: {:?}",
        from_value.as_ref().err()
    );
    Ok(from_value.ok())
}

proptest! {
    // XorShift: unions fork the RNG per arm, and forking ChaCha made generation ~2x slower.
    #![proptest_config(ProptestConfig {
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..ProptestConfig::with_cases(2000)
    })]

    /// Arbitrary artifact JSON (with an optional, arbitrary build): parsing never panics and
    /// is predicted by the oracle; a parsed list always gives a valid tree, with and without
    /// the build, whatever the list order.
    #[test]
    fn artifact_json_fuzz(list in artifact_list_json(), build in prop::option::of(build_json())) {
        let Some(artifacts) = parse_artifacts(&list)? else { return Ok(()) };
        let t = Tree::build(None, &artifacts, UNIX_EPOCH);
        check_tree(&t, &artifacts, None)?;
        let mut reversed = artifacts.clone();
        reversed.reverse();
        let t2 = Tree::build(None, &reversed, UNIX_EPOCH);
        prop_assert_eq!(format!("{t:?}"), format!("{t2:?}"));
        if let Some(bv) = build {
            if let Some(b) = parse_build(&bv)? {
                let names = check_job_names(&b)?;
                let t = Tree::build(Some(&b), &artifacts, UNIX_EPOCH);
                check_tree(&t, &artifacts, Some(&names))?;
            }
        }
    }

    /// Arbitrary build JSON: parsing never panics and is predicted by the oracle; job
    /// directory names are unique and valid, whatever the labels, parallel indexes and retry
    /// chains (cycles, self-retries, dangling ids, repeated ids).
    #[test]
    fn build_json_fuzz(bv in build_json()) {
        if let Some(b) = parse_build(&bv)? {
            let names = check_job_names(&b)?;
            // One finished artifact per job (and one dangling, one job-less) to materialize
            // every job dir.
            let mut arts: Vec<Artifact> = b
                .jobs
                .iter()
                .chain([&Default::default()])
                .enumerate()
                .map(|(i, j)| Artifact {
                    id: format!("a{i}"),
                    job_id: Some(j.id.clone()),
                    state: Some("finished".into()),
                    path: Some("f".into()),
                    ..Default::default()
                })
                .collect();
            arts.push(Artifact {
                id: "dangling".into(),
                job_id: Some("not-in-build".into()),
                state: Some("finished".into()),
                ..Default::default()
            });
            let t = Tree::build(Some(&b), &arts, UNIX_EPOCH);
            check_tree(&t, &arts, Some(&names))?;
        }
    }
}

/// Documents the per-element rule: one artifact with a wrong-typed optional field fails the
/// whole listing (and so the whole mount), however many good artifacts surround it.
#[test]
fn one_wrong_typed_element_fails_the_whole_list() {
    let good = json!({"id": "a", "state": "finished", "path": "x.txt", "file_size": 3});
    for bad in [
        json!({"id": "b", "state": "finished", "file_size": "12"}),
        json!({"id": "b", "state": "finished", "file_size": -1}),
        json!({"id": "b", "state": "finished", "file_size": 1.5}),
        json!({"id": "b", "state": "finished", "path": 7}),
        json!({"id": "b", "state": 1}),
        json!({"id": "b", "job_id": {"id": "j"}}),
        json!({"id": 12, "state": "finished"}),
        json!({"state": "finished"}),
    ] {
        let list = json!([good.clone(), bad.clone(), good.clone()]);
        let r = serde_json::from_value::<Vec<Artifact>>(list);
        assert!(r.is_err(), "{bad} was accepted");
    }
    // Nulls, missing optional fields and unknown fields are fine.
    let list = json!([
        good,
        {"id": "b", "state": "finished", "path": null, "file_size": null, "job_id": null,
         "new_field": {"deep": [1, {"x": null}]}},
        {"id": "c"},
    ]);
    let r: Vec<Artifact> = serde_json::from_value(list).unwrap();
    assert_eq!(r.len(), 3);
}

/// A serde quirk: derived structs also accept a JSON array giving the fields by position, so
/// a list of arrays is a valid artifact list. Harmless (the tree sanitizes whatever it gets)
/// but it means some malformed pages are not reported as malformed.
#[test]
fn positional_arrays_parse_as_artifacts() {
    let list = json!([
        ["x", "j1", null, null, "finished", "../../etc/passwd"],
        ["y"]
    ]);
    let arts: Vec<Artifact> = serde_json::from_value(list).unwrap();
    assert_eq!(arts[0].id, "x");
    assert_eq!(arts[0].path.as_deref(), Some("../../etc/passwd"));
    assert!(arts[0].is_finished());
    assert_eq!(arts[1].id, "y");
    let t = Tree::build(None, &arts, UNIX_EPOCH);
    check_tree(&t, &arts, None).unwrap();
    assert!(t.resolve("j1/%2E%2E/%2E%2E/etc/passwd").is_some());
    // One element too many, or a missing id, fails.
    assert!(serde_json::from_value::<Vec<Artifact>>(json!([[]])).is_err());
    let mut long = vec![json!("x")];
    long.extend(std::iter::repeat_n(Value::Null, ARTIFACT_FIELDS.len()));
    assert!(serde_json::from_value::<Vec<Artifact>>(json!([long])).is_err());
}

/// Minimal hand-picked hostile cases, checked with the same invariants.
#[test]
fn hand_picked_hostile_paths() {
    let paths = [
        "../../etc/passwd",
        "/",
        "",
        ".",
        "..",
        "a/../..",
        "a//./b",
        "\0",
        "a/\0/b",
        "%2E%2E",
    ];
    let mut arts: Vec<Artifact> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| Artifact {
            id: format!("id{i}"),
            job_id: Some("j".into()),
            state: Some("finished".into()),
            path: Some(p.to_string()),
            filename: Some(["..", ".", "", "a/b", "\0"][i % 5].to_string()),
            ..Default::default()
        })
        .collect();
    arts.push(Artifact {
        id: "long".into(),
        job_id: Some("j".into()),
        state: Some("finished".into()),
        path: Some("é".repeat(1000)),
        ..Default::default()
    });
    let t = Tree::build(None, &arts, UNIX_EPOCH);
    check_tree(&t, &arts, None).unwrap();
}
