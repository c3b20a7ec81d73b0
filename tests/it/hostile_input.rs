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
//! Part 2 (tokio + axum on 127.0.0.1): unknown/missing/null fields, odd `Link` headers,
//! malformed pages (errors name the path, never the query), links to another origin (refused,
//! the token never leaves).
//! Three of them pin pagination fixes: relative `Link` URLs resolve against the page that
//! carried them, every `Link` header field is read, and a pagination loop is an error.
//!
//! Over 1,000 lines, knowingly: three parts (wire types, tree builder, REST pagination) that
//! share one oracle; now a module of tests/it, it can split into a directory module next.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bkfs::api::model::{Artifact, Build};
use bkfs::api::{ApiClient, ApiError};
use bkfs::build_ref::BuildRef;
use bkfs::secret::Token;
use bkfs::tree::{name_jobs, NodeKind, Tree, NAME_MAX, ROOT_INO};
use bkfs_fake::scripted::{self, Reply, Seen};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

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

// ---------------------------------------------------------------------------------------------
// Part 2: the REST client against a local server
// ---------------------------------------------------------------------------------------------

const ARTIFACTS_PATH: &str = "/v2/organizations/o/pipelines/p/builds/1/artifacts";
const BUILD_PATH: &str = "/v2/organizations/o/pipelines/p/builds/1";

#[derive(Clone)]
struct Canned {
    status: u16,
    /// One `Link` header field per entry.
    links: Vec<String>,
    body: String,
}

/// Answers `(path, page query parameter)` from a table; anything else is a 404. Every
/// request is recorded by the scripted server underneath.
struct Server {
    routes: Arc<Mutex<HashMap<(String, String), Canned>>>,
    http: scripted::Server,
}

impl Server {
    fn route(&self, path: &str, page: &str, c: Canned) {
        self.routes
            .lock()
            .unwrap()
            .insert((path.to_string(), page.to_string()), c);
    }

    fn log(&self) -> Vec<Seen> {
        self.http.seen()
    }

    /// How many requests each page of the artifacts listing got.
    fn page_hits(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for s in self.log() {
            *m.entry(format!("{}#{}", s.path, page_of(&s))).or_default() += 1;
        }
        m
    }
}

fn page_of(s: &Seen) -> &str {
    s.param("page").unwrap_or("")
}

/// Starts a server on `ip` (port chosen by the OS) and returns it with its origin.
async fn start(ip: &str) -> (Server, String) {
    let routes: Arc<Mutex<HashMap<(String, String), Canned>>> = Arc::default();
    let table = routes.clone();
    let http = scripted::serve_on(ip, move |_, s, _| {
        let key = (s.path.clone(), page_of(s).to_string());
        let c = table.lock().unwrap().get(&key).cloned();
        let c = c.unwrap_or(Canned {
            status: 404,
            links: vec![],
            body: r#"{"message":"No route"}"#.into(),
        });
        let mut r = Reply::status(c.status, &c.body);
        for l in &c.links {
            r = r.header("link", l);
        }
        r
    })
    .await;
    let origin = http.base.clone();
    (Server { routes, http }, origin)
}

fn client(origin: &str) -> ApiClient {
    ApiClient::new(origin, Token::new("t")).unwrap()
}

fn build_ref() -> BuildRef {
    BuildRef {
        org: "o".into(),
        pipeline: "p".into(),
        number: 1,
    }
}

fn page_body(page: usize) -> String {
    json!([
        {"id": format!("p{page}-a"), "state": "finished", "path": format!("p{page}/a.txt")},
        {"id": format!("p{page}-b"), "state": "finished", "path": format!("p{page}/b.txt")},
    ])
    .to_string()
}

fn ok(links: Vec<String>, body: String) -> Canned {
    Canned {
        status: 200,
        links,
        body,
    }
}

/// `{o}` → origin, `{p}` → artifacts path, `{x}` → `other`.
fn fill(t: &str, origin: &str, other: &str) -> String {
    t.replace("{o}", origin)
        .replace("{p}", ARTIFACTS_PATH)
        .replace("{x}", other)
}

/// Serves an artifacts listing of `links.len()` pages (page `i` answers with the Link header
/// fields `links[i-1]`), lists it, and checks that every page was fetched exactly once and the
/// artifacts came back in page order.
async fn check_listing(name: &str, links: &[&[&str]]) {
    let (srv, origin) = start("127.0.0.1").await;
    for (i, ls) in links.iter().enumerate() {
        let page = i + 1;
        let ls = ls.iter().map(|l| fill(l, &origin, "")).collect();
        srv.route(ARTIFACTS_PATH, &page.to_string(), ok(ls, page_body(page)));
    }
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        client(&origin).list_build_artifacts(&build_ref()),
    )
    .await
    .unwrap_or_else(|_| panic!("{name}: listing hung"));
    let arts = r.unwrap_or_else(|e| panic!("{name}: {e}\nrequests: {:#?}", srv.log()));
    let ids: Vec<String> = arts.into_iter().map(|a| a.id).collect();
    let want: Vec<String> = (1..=links.len())
        .flat_map(|p| [format!("p{p}-a"), format!("p{p}-b")])
        .collect();
    assert_eq!(ids, want, "{name}: requests: {:#?}", srv.log());
    let hits = srv.page_hits();
    let want_hits: BTreeMap<String, usize> = (1..=links.len())
        .map(|p| (format!("{ARTIFACTS_PATH}#{p}"), 1))
        .collect();
    assert_eq!(hits, want_hits, "{name}");
    for s in srv.log() {
        assert_eq!(s.header("authorization"), Some("Bearer t"), "{name}");
    }
}

#[tokio::test]
async fn tolerates_unknown_missing_and_null_fields() {
    let (srv, origin) = start("127.0.0.1").await;
    let body = json!([
        {"id": "a", "state": "finished", "path": "x/a.txt", "file_size": 3,
         "brand_new": {"nested": [1, 2, {"deep": null}]}, "job_id": null},
        {"id": "b"},
        {"id": "c", "state": "finished", "job_id": "j1", "url": null, "download_url": null,
         "path": null, "dirname": null, "filename": null, "mime_type": null, "file_size": null,
         "sha1sum": null, "glob_path": null, "original_path": null, "extra": "x"},
    ]);
    srv.route(ARTIFACTS_PATH, "1", ok(vec![], body.to_string()));
    srv.route(
        BUILD_PATH,
        "",
        ok(
            vec![],
            json!({"id": "b", "number": 1, "jobs": null, "pipeline": {"slug": "p"},
                   "state": null, "message": null, "creator": {"name": "x"}})
            .to_string(),
        ),
    );
    let c = client(&origin);
    let arts = c.list_build_artifacts(&build_ref()).await.unwrap();
    assert_eq!(arts.len(), 3);
    assert_eq!(arts[0].file_size, Some(3));
    assert_eq!(arts[0].job_id, None);
    assert_eq!(arts[1].state, None);
    assert_eq!(arts[2].path, None);
    assert_eq!(arts[2].job_id.as_deref(), Some("j1"));
    let b = c.get_build(&build_ref()).await.unwrap();
    assert!(b.jobs.is_empty());
    // And the tree takes it.
    let t = Tree::build(Some(&b), &arts, UNIX_EPOCH);
    check_tree(&t, &arts, None).unwrap();
}

#[tokio::test]
async fn odd_but_valid_link_headers_fetch_every_page_once() {
    const N: &str = "{o}{p}?page=2&per_page=100";
    let cases: Vec<(&str, Vec<Vec<String>>)> = vec![
        (
            "github style, next + last (concurrent fast path)",
            vec![
                vec![format!(r#"<{N}>; rel="next", <{{o}}{{p}}?page=3&per_page=100>; rel="last""#)],
                vec![r#"<{o}{p}?page=3&per_page=100>; rel="next", <{o}{p}?page=3&per_page=100>; rel="last""#.into()],
                vec![r#"<{o}{p}?page=1&per_page=100>; rel="first""#.into()],
            ],
        ),
        (
            "extra params before and after rel",
            vec![
                vec![format!(r#"<{N}>; title="next page"; rel="next"; type="application/json""#)],
                vec![r##"<{o}{p}?page=3&per_page=100>;anchor="#x";rel="next";hreflang=en"##.into()],
                vec![],
            ],
        ),
        (
            "unquoted rel",
            vec![
                vec![format!("<{N}>;rel=next")],
                vec!["<{o}{p}?page=3&per_page=100>; rel=next, <{o}{p}?page=1&per_page=100>; rel=prev".into()],
                vec!["<{o}{p}?page=2&per_page=100>; rel=prev".into()],
            ],
        ),
        (
            "several rels per link",
            vec![
                vec![format!(r#"<{N}>; rel="prefetch next""#)],
                vec![r#"<{o}{p}?page=3&per_page=100>; rel="next last""#.into()],
                vec![r#"<{o}{p}?page=1&per_page=100>; rel="first prev""#.into()],
            ],
        ),
        (
            "rel next last on page one (2 pages, fast path)",
            vec![vec![format!(r#"<{N}>; rel="next last""#)], vec![]],
        ),
        (
            "absolute-path relative URLs",
            vec![
                vec![r#"</v2/organizations/o/pipelines/p/builds/1/artifacts?page=2&per_page=100>; rel="next""#.into()],
                vec![r#"</v2/organizations/o/pipelines/p/builds/1/artifacts?page=3&per_page=100>; rel="next""#.into()],
                vec![],
            ],
        ),
        (
            "absolute-path relative last",
            vec![
                vec![r#"</v2/organizations/o/pipelines/p/builds/1/artifacts?page=3&per_page=100>; rel="last""#.into()],
                vec![],
                vec![],
            ],
        ),
        (
            "uppercase REL and value",
            vec![
                vec![format!(r#"<{N}>; REL="NEXT""#)],
                vec![r#"<{o}{p}?page=3&per_page=100>; Rel=Next"#.into()],
                vec![],
            ],
        ),
        (
            "spaces everywhere",
            vec![
                vec![format!(r#"   <  {N}  >  ;   rel  =  "next"   ,   <{{o}}{{p}}?page=1>  ;  rel = "first"  "#)],
                vec![r#"<{o}{p}?page=1>;rel="prev",<{o}{p}?page=3&per_page=100>;rel="next""#.into()],
                vec![],
            ],
        ),
        (
            "other params in the link URL, page not first",
            vec![
                vec![r#"<{o}{p}?per_page=100&page=2&x=%2F&y>; rel="next""#.into()],
                vec![r#"<{o}{p}?state=finished&page=3>; rel="next""#.into()],
                vec![],
            ],
        ),
        (
            "last with extra params (fast path keeps them)",
            vec![
                vec![r#"<{o}{p}?per_page=100&page=3&token=secret>; rel="last""#.into()],
                vec![],
                vec![],
            ],
        ),
        (
            "last without a page number falls back to next",
            vec![
                vec![format!(r#"<{N}>; rel="next", <{{o}}{{p}}?cursor=zz>; rel="last""#)],
                vec![r#"<{o}{p}?page=3>; rel="next""#.into()],
                vec![],
            ],
        ),
        (
            "last on another origin falls back to next",
            vec![
                vec![format!(r#"<{N}>; rel="next", <http://localhost:1{{p}}?page=3>; rel="last""#)],
                vec![r#"<{o}{p}?page=3>; rel="next""#.into()],
                vec![],
            ],
        ),
    ];
    for (name, pages) in &cases {
        let refs: Vec<Vec<&str>> = pages
            .iter()
            .map(|v| v.iter().map(String::as_str).collect())
            .collect();
        let refs: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
        check_listing(name, &refs).await;
    }
}

/// RFC 8288 §3.2: a relative link is resolved against the URL of the response that carried
/// it (the page), not the API root. bkfs resolves against the API root, so a query-only or
/// path-relative `next` misses the listing.
#[tokio::test]
async fn relative_link_urls_resolve_against_the_page() {
    check_listing(
        "query-only relative next",
        &[
            &[r#"<?page=2&per_page=100>; rel="next""#],
            &[r#"<?page=3&per_page=100>; rel="next""#],
            &[],
        ],
    )
    .await;
    check_listing(
        "path-relative next",
        &[&[r#"<artifacts?page=2&per_page=100>; rel="next""#], &[]],
    )
    .await;
}

/// RFC 9110 §5.3: several `Link` header fields mean the same as one comma-joined field. bkfs
/// reads only the first field, so a `next` in a second field is missed and the listing is
/// silently cut short.
#[tokio::test]
async fn several_link_header_fields() {
    check_listing(
        "next in a second Link field",
        &[
            &[
                r#"<{o}{p}?page=1>; rel="first""#,
                r#"<{o}{p}?page=2>; rel="next""#,
            ],
            &[],
        ],
    )
    .await;
}

/// A `next` link that points back at an earlier page: the listing must end (an error is
/// fine), not loop.
#[tokio::test]
async fn pagination_loop_ends() {
    let (srv, origin) = start("127.0.0.1").await;
    srv.route(
        ARTIFACTS_PATH,
        "1",
        ok(
            vec![fill(r#"<{o}{p}?page=2>; rel="next""#, &origin, "")],
            page_body(1),
        ),
    );
    srv.route(
        ARTIFACTS_PATH,
        "2",
        ok(
            vec![fill(r#"<{o}{p}?page=1>; rel="next""#, &origin, "")],
            page_body(2),
        ),
    );
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        client(&origin).list_build_artifacts(&build_ref()),
    )
    .await;
    let n = srv.log().len();
    assert!(r.is_ok(), "still looping after 10 s and {n} requests");
    assert!(n < 10, "{n} requests for a 2-page loop");
}

/// Checks an error's Display and Debug: names the listing path, redacts the query, and
/// never shows `secret`.
fn assert_redacted(e: &ApiError, what: &str) {
    let shown = e.to_string();
    let debug = format!("{e:?}");
    assert!(shown.contains(ARTIFACTS_PATH), "{what}: {shown}");
    assert!(shown.contains("?<redacted>"), "{what}: {shown}");
    assert!(!shown.contains("secret"), "{what}: {shown}");
    assert!(!debug.contains("secret"), "{what}: {debug}");
}

#[tokio::test]
async fn malformed_pages_are_malformed_errors_without_secrets() {
    let bodies = [
        ("not JSON", "<html>oops</html>".to_string()),
        ("an object", json!({"artifacts": [{"id": "x"}]}).to_string()),
        ("empty body", String::new()),
        ("truncated", r#"[{"id": "x", "state": "fini"#.to_string()),
        (
            "a wrong-typed element",
            json!([{"id": "x"}, {"id": 5}]).to_string(),
        ),
        ("null", "null".to_string()),
    ];
    for (what, body) in &bodies {
        // Page 2 via rel="next", with secrets in the query.
        let (srv, origin) = start("127.0.0.1").await;
        srv.route(
            ARTIFACTS_PATH,
            "1",
            ok(
                vec![fill(
                    r#"<{o}{p}?page=2&token=secret&sig=secret>; rel="next""#,
                    &origin,
                    "",
                )],
                page_body(1),
            ),
        );
        srv.route(ARTIFACTS_PATH, "2", ok(vec![], body.clone()));
        let e = client(&origin)
            .list_build_artifacts(&build_ref())
            .await
            .expect_err(what);
        assert!(matches!(e, ApiError::Malformed { .. }), "{what}: {e:?}");
        assert_redacted(&e, what);
        assert_eq!(srv.page_hits().len(), 2, "{what}");

        // Page 3 via the rel="last" fast path.
        let (srv, origin) = start("127.0.0.1").await;
        srv.route(
            ARTIFACTS_PATH,
            "1",
            ok(
                vec![fill(
                    r#"<{o}{p}?page=3&per_page=100&token=secret>; rel="last""#,
                    &origin,
                    "",
                )],
                page_body(1),
            ),
        );
        srv.route(ARTIFACTS_PATH, "2", ok(vec![], page_body(2)));
        srv.route(ARTIFACTS_PATH, "3", ok(vec![], body.clone()));
        let e = client(&origin)
            .list_build_artifacts(&build_ref())
            .await
            .expect_err(what);
        assert!(
            matches!(e, ApiError::Malformed { .. }),
            "{what} (fast path): {e:?}"
        );
        assert_redacted(&e, what);

        // Page 1 itself.
        let (srv, origin) = start("127.0.0.1").await;
        srv.route(ARTIFACTS_PATH, "1", ok(vec![], body.clone()));
        let e = client(&origin)
            .list_build_artifacts(&build_ref())
            .await
            .expect_err(what);
        assert!(
            matches!(e, ApiError::Malformed { .. }),
            "{what} (page 1): {e:?}"
        );
        assert!(e.to_string().contains(ARTIFACTS_PATH), "{e}");
    }
}

#[tokio::test]
async fn a_missing_page_is_not_found_without_secrets() {
    let (srv, origin) = start("127.0.0.1").await;
    srv.route(
        ARTIFACTS_PATH,
        "1",
        ok(
            vec![fill(
                r#"<{o}{p}?page=2&token=secret>; rel="next""#,
                &origin,
                "",
            )],
            page_body(1),
        ),
    );
    let e = client(&origin)
        .list_build_artifacts(&build_ref())
        .await
        .unwrap_err();
    assert!(matches!(e, bkfs::api::ApiError::NotFound { .. }), "{e:?}");
    assert_redacted(&e, "404 page");
}

#[tokio::test]
async fn links_to_another_origin_are_refused() {
    let (other, other_origin) = start("127.0.0.2").await;
    // Prove the other server is live (so "it saw nothing" means something).
    let probe = reqwest::get(format!("{other_origin}/probe")).await.unwrap();
    assert_eq!(probe.status().as_u16(), 404);
    assert_eq!(other.log().len(), 1);
    assert_eq!(other.log()[0].header("authorization"), None);

    let cases: &[(&str, &str)] = &[
        (
            "next on another IP",
            r#"<{x}{p}?page=2&token=secret>; rel="next""#,
        ),
        (
            "next and last on another IP",
            r#"<{x}{p}?page=2&token=secret>; rel="next", <{x}{p}?page=3&token=secret>; rel="last""#,
        ),
        (
            "next as next+last on another IP",
            r#"<{x}{p}?page=2&token=secret>; rel="next last""#,
        ),
        (
            "protocol-relative next",
            r#"<//{xhost}{p}?page=2&token=secret>; rel="next""#,
        ),
    ];
    let xhost = other_origin.trim_start_matches("http://").to_string();
    for (name, link) in cases {
        let (srv, origin) = start("127.0.0.1").await;
        let link = fill(link, &origin, &other_origin).replace("{xhost}", &xhost);
        srv.route(ARTIFACTS_PATH, "1", ok(vec![link], page_body(1)));
        let e = client(&origin)
            .list_build_artifacts(&build_ref())
            .await
            .expect_err(name);
        assert!(matches!(e, ApiError::Malformed { .. }), "{name}: {e:?}");
        let shown = e.to_string();
        assert!(!shown.contains("secret"), "{name}: {shown}");
        assert!(!format!("{e:?}").contains("secret"), "{name}: {e:?}");
        assert_eq!(srv.log().len(), 1, "{name}");
    }

    // Same host, other port / scheme / host name: also other origins.
    let (srv, origin) = start("127.0.0.1").await;
    let port = origin.rsplit(':').next().unwrap().to_string();
    for link in [
        format!(r#"<http://localhost:{port}{ARTIFACTS_PATH}?page=2>; rel="next""#),
        format!(r#"<https://127.0.0.1:{port}{ARTIFACTS_PATH}?page=2>; rel="next""#),
        format!(r#"<{other_origin}{ARTIFACTS_PATH}?page=2>; rel="next""#),
    ] {
        srv.http.clear();
        srv.route(ARTIFACTS_PATH, "1", ok(vec![link.clone()], page_body(1)));
        let e = client(&origin)
            .list_build_artifacts(&build_ref())
            .await
            .expect_err(&link);
        assert!(matches!(e, ApiError::Malformed { .. }), "{link}: {e:?}");
        assert_eq!(srv.log().len(), 1, "{link}");
    }

    // The other server never saw a request with the token (only the probe).
    let seen = other.log();
    assert!(
        seen.iter().all(|s| s.header("authorization").is_none()),
        "token sent to another origin: {seen:#?}"
    );
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].path, "/probe");
    assert!(seen[0].query.is_empty());
}
