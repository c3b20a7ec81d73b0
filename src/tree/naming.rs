//! Naming rules: job directory names and artifact path components.
//!
//! The rules themselves are in `docs/SEMANTICS.md`, sections "Job directory names" and
//! "Artifact paths"; this file implements them as plain string functions.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sha1::{Digest, Sha1};

use crate::api::model::Job;

/// The longest file name Linux accepts (`NAME_MAX`), in bytes.
pub const NAME_MAX: usize = 255;

/// Longest id fragment (escaped, in bytes) used in a `~<artifact id>` rename tag.
const TAG_ID_MAX: usize = 100;

/// The directory for artifacts whose `job_id` is missing, null or empty.
pub const UNKNOWN_JOB_DIR: &str = "unknown-job";

/// The longest prefix of `s` that is at most `max` bytes and ends on a char boundary.
pub fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn is_shortcode_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-')
}

/// Removes emoji shortcodes (`:[A-Za-z0-9_+\-]+:`), scanning left to right like a regex
/// `find_iter` (non-overlapping, leftmost first).
fn strip_shortcodes(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == ':' {
            let mut j = i + 1;
            while j < chars.len() && is_shortcode_char(chars[j]) {
                j += 1;
            }
            if j > i + 1 && j < chars.len() && chars[j] == ':' {
                i = j + 1;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Step 1 of the job naming rule on any string: drop emoji shortcodes, lowercase, turn every
/// run of characters other than letters, digits, `.` and `_` into one `-`, trim `-` at both
/// ends. A result made only of dots is returned as empty. May return an empty string.
///
/// Characters are classified before lowercasing (so a letter whose lowercase form contains a
/// combining mark keeps it).
pub fn slugify(s: &str) -> String {
    let stripped = strip_shortcodes(s);
    let mut out = String::with_capacity(stripped.len());
    let mut pending_dash = false;
    for c in stripped.chars() {
        if c.is_alphabetic() || c.is_numeric() || c == '.' || c == '_' {
            if pending_dash && !out.is_empty() {
                out.push('-');
            }
            pending_dash = false;
            out.extend(c.to_lowercase());
        } else {
            pending_dash = true;
        }
    }
    if out.chars().all(|c| c == '.') {
        out.clear();
    }
    out
}

/// Steps 1–2: the slug of the label, else the slug of the step key, else `job`.
pub fn job_base_name(label: Option<&str>, step_key: Option<&str>) -> String {
    [label, step_key]
        .into_iter()
        .flatten()
        .map(slugify)
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "job".to_string())
}

/// `base` cut at a char boundary so that `base + suffix` fits in [`NAME_MAX`] bytes (a suffix
/// that is itself too long is cut as well).
pub fn fit(base: &str, suffix: &str) -> String {
    let room = NAME_MAX.saturating_sub(suffix.len());
    let mut s = String::with_capacity(NAME_MAX);
    s.push_str(truncate_bytes(base, room));
    s.push_str(truncate_bytes(suffix, NAME_MAX - s.len()));
    s
}

/// Escapes an identifier for use inside a name: NUL → `%00`, `/` → `%2F`.
fn escape_id(id: &str) -> String {
    id.replace('\0', "%00").replace('/', "%2F")
}

/// The first 8 bytes of a sha1 of `raw`, in hex.
fn hash8(raw: &str) -> String {
    let mut h = hex::encode(Sha1::digest(raw.as_bytes()));
    h.truncate(8);
    h
}

/// Shortens a name over [`NAME_MAX`] bytes: cut at a char boundary, then `~<sha1 hex8 of raw>`.
fn shorten(name: String, raw: &str) -> String {
    if name.len() <= NAME_MAX {
        return name;
    }
    format!("{}~{}", truncate_bytes(&name, NAME_MAX - 9), hash8(raw))
}

/// One artifact path component (never empty and never `.`: those are dropped before) as a
/// name: `..` → `%2E%2E`, NUL → `%00`, over 255 bytes → cut + `~<hex8 of sha1(raw)>`.
pub fn sanitize_component(raw: &str) -> String {
    if raw == ".." {
        return "%2E%2E".to_string();
    }
    shorten(raw.replace('\0', "%00"), raw)
}

/// A whole identifier (job id, artifact id) as a name: NUL → `%00`, `/` → `%2F`, `.` →
/// `%2E`, `..` → `%2E%2E`, empty → `%`, over 255 bytes → cut + `~<hex8 of sha1(raw)>`.
pub fn escape_name(raw: &str) -> String {
    match raw {
        "" => "%".to_string(),
        "." => "%2E".to_string(),
        ".." => "%2E%2E".to_string(),
        _ => shorten(escape_id(raw), raw),
    }
}

/// The components of an artifact path: split on `/`, empty and `.` components dropped, the
/// rest sanitized with [`sanitize_component`].
pub fn path_components(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(sanitize_component)
        .collect()
}

/// The name of an artifact whose path has no components: its `filename` if usable (non-empty,
/// no `/`, not `.` or `..`; sanitized like a component), else its id ([`escape_name`]), else
/// `artifact`.
pub fn fallback_file_name(filename: Option<&str>, id: &str) -> String {
    match filename {
        Some(f) if !f.is_empty() && !f.contains('/') && f != "." && f != ".." => {
            sanitize_component(f)
        }
        _ if !id.is_empty() => escape_name(id),
        _ => "artifact".to_string(),
    }
}

/// The rename tag for attempt `k` of a colliding file: `~<first 8 chars of id>` (k = 0),
/// `~<id>` (k = 1), `~<id>~<k>` (k ≥ 2). The id is escaped ([`escape_id`]) and cut to 100
/// bytes.
pub fn rename_tag(id: &str, k: u32) -> String {
    if k == 0 {
        let short: String = id.chars().take(8).collect();
        return format!("~{}", truncate_bytes(&escape_id(&short), TAG_ID_MAX));
    }
    let full = escape_id(id);
    let full = truncate_bytes(&full, TAG_ID_MAX);
    if k == 1 {
        format!("~{full}")
    } else {
        format!("~{full}~{k}")
    }
}

/// Inserts `tag` before the extension of `name` (the part from the last `.`, unless that dot
/// is the first character: `.env` has no extension), shortening the stem so the result fits
/// in [`NAME_MAX`] bytes. An extension too long to keep with the tag counts as part of the stem.
pub fn with_tag(name: &str, tag: &str) -> String {
    let (mut stem, mut ext) = match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    };
    if ext.len() + tag.len() >= NAME_MAX {
        (stem, ext) = (name, "");
    }
    let room = NAME_MAX - tag.len() - ext.len();
    format!("{}{tag}{ext}", truncate_bytes(stem, room))
}

/// Makes `names` unique, in order: a name that is in `reserved`, or that an earlier entry of
/// `names` already holds, becomes `<name>~2`, `<name>~3`, … (the first free one; the name is
/// cut so the result stays within [`NAME_MAX`]). Names unique from the start never change.
pub fn make_unique(names: Vec<String>, reserved: &BTreeSet<String>) -> Vec<String> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for n in &names {
        *counts.entry(n.as_str()).or_default() += 1;
    }
    let mut taken: BTreeSet<String> = reserved.clone();
    taken.extend(names.iter().filter(|n| counts[n.as_str()] == 1).cloned());
    let mut claimed: HashSet<String> = HashSet::new();
    let mut out = Vec::with_capacity(names.len());
    for n in &names {
        let clash = reserved.contains(n) || counts[n.as_str()] > 1;
        if !clash {
            out.push(n.clone());
        } else if !reserved.contains(n) && claimed.insert(n.clone()) {
            taken.insert(n.clone());
            out.push(n.clone());
        } else {
            let mut k = 2u64;
            let unique = loop {
                let cand = fit(n, &format!("~{k}"));
                if !taken.contains(&cand) {
                    break cand;
                }
                k += 1;
            };
            taken.insert(unique.clone());
            out.push(unique);
        }
    }
    out
}

/// Job directory names for every job of a build (rules 1–6 of the module doc), as
/// `(job id, name)` in the build's job order. Jobs with an empty id are skipped; a repeated
/// id keeps its first occurrence.
pub fn name_jobs(jobs: &[Job]) -> Vec<(String, String)> {
    let mut seen = HashSet::new();
    let jobs: Vec<&Job> = jobs
        .iter()
        .filter(|j| !j.id.is_empty() && seen.insert(j.id.as_str()))
        .collect();

    // Retry chains: pred[B] = the first job (in build order) retried into B.
    let retried_in = |j: &Job| -> Option<String> {
        j.retried_in_job_id
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let mut pred: HashMap<String, &str> = HashMap::new();
    for j in &jobs {
        if let Some(next) = retried_in(j) {
            if next != j.id {
                pred.entry(next).or_insert(j.id.as_str());
            }
        }
    }

    // Rules 1-4, truncated per rule 6: (base, suffix).
    let parts: Vec<(String, String)> = jobs
        .iter()
        .map(|j| {
            let base = job_base_name(j.name.as_deref(), j.step_key.as_deref());
            let mut suffix = String::new();
            if j.parallel_group_total.unwrap_or(0) > 1 || j.parallel_group_index.is_some() {
                let idx = u64::from(j.parallel_group_index.unwrap_or(0)) + 1;
                suffix.push_str(&format!("-{idx}"));
            }
            if retried_in(j).is_some() {
                let mut n = 1u64;
                let mut cur = j.id.as_str();
                let mut visited = HashSet::from([cur]);
                while let Some(p) = pred.get(cur) {
                    if !visited.insert(p) {
                        break;
                    }
                    n += 1;
                    cur = p;
                }
                suffix.push_str(&format!("-attempt-{n}"));
            }
            (base, suffix)
        })
        .collect();
    let names: Vec<String> = parts.iter().map(|(b, s)| fit(b, s)).collect();

    // Rule 5: shared names get the job id.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for n in &names {
        *counts.entry(n.as_str()).or_default() += 1;
    }
    let shared: Vec<bool> = names.iter().map(|n| counts[n.as_str()] > 1).collect();
    let short: BTreeMap<usize, String> = (0..jobs.len())
        .filter(|&i| shared[i])
        .map(|i| {
            let id8: String = jobs[i].id.chars().take(8).collect();
            let (b, s) = &parts[i];
            (i, fit(b, &format!("{s}-{}", escape_id(&id8))))
        })
        .collect();
    let mut all: HashMap<&str, usize> = HashMap::new();
    for (i, n) in names.iter().enumerate() {
        if !shared[i] {
            *all.entry(n.as_str()).or_default() += 1;
        }
    }
    for n in short.values() {
        *all.entry(n.as_str()).or_default() += 1;
    }
    let resolved: Vec<String> = (0..jobs.len())
        .map(|i| match short.get(&i) {
            None => names[i].clone(),
            Some(s) if all[s.as_str()] == 1 => s.clone(),
            Some(_) => {
                let (b, s) = &parts[i];
                fit(b, &format!("{s}-{}", escape_id(&jobs[i].id)))
            }
        })
        .collect();

    let unique = make_unique(resolved, &BTreeSet::new());
    jobs.iter().map(|j| j.id.clone()).zip(unique).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortcodes_removed() {
        assert_eq!(slugify(":rspec: RSpec Tests"), "rspec-tests");
        assert_eq!(slugify(":docker::rspec:"), "");
        assert_eq!(slugify(":docker: :+1: build :x_y-z:"), "build");
        assert_eq!(slugify("::a:"), "");
        assert_eq!(slugify("a:b"), "a-b");
        assert_eq!(slugify(":not a code: x"), "not-a-code-x");
        assert_eq!(slugify("ratio 1:2:3"), "ratio-13");
    }

    #[test]
    fn slug_characters() {
        assert_eq!(slugify("Tëst 日本"), "tëst-日本");
        assert_eq!(slugify("  --Foo--  "), "foo");
        assert_eq!(slugify("a.b_c / D"), "a.b_c-d");
        assert_eq!(slugify("Build 🚀 now!"), "build-now");
        assert_eq!(slugify("x\0y/z"), "x-y-z");
        assert_eq!(slugify("..."), "");
        assert_eq!(slugify(". ."), ".-.");
        assert_eq!(slugify(".hidden"), ".hidden");
        assert_eq!(slugify("ÄÖÜ 42"), "äöü-42");
    }

    #[test]
    fn job_base_name_falls_back_to_job() {
        assert_eq!(job_base_name(Some(":rspec: RSpec"), None), "rspec");
        assert_eq!(job_base_name(Some(""), None), "job");
        assert_eq!(job_base_name(Some(":bomb:"), None), "job");
        assert_eq!(
            job_base_name(Some(":bomb:"), Some("unit-tests")),
            "unit-tests"
        );
        assert_eq!(job_base_name(None, Some("..")), "job");
        assert_eq!(job_base_name(None, None), "job");
    }

    #[test]
    fn components() {
        assert_eq!(
            path_components("../../etc/passwd"),
            ["%2E%2E", "%2E%2E", "etc", "passwd"]
        );
        assert_eq!(path_components("a/./b"), ["a", "b"]);
        assert_eq!(path_components("a//b/"), ["a", "b"]);
        assert_eq!(path_components("/abs/path"), ["abs", "path"]);
        assert_eq!(path_components("a\\b"), ["a\\b"]);
        assert_eq!(path_components("a\0b"), ["a%00b"]);
        assert!(path_components("/./").is_empty());
        let long = "x".repeat(300);
        let c = &path_components(&long)[0];
        assert_eq!(c.len(), 255);
        assert!(c.starts_with(&"x".repeat(246)));
        assert_eq!(&c[246..], format!("~{}", hash8(&long)));
        // Multi-byte characters are never split.
        let long = "é".repeat(200);
        let c = &path_components(&long)[0];
        assert!(c.len() <= 255);
        assert!(c.starts_with(&"é".repeat(123)));
    }

    #[test]
    fn names_from_ids() {
        assert_eq!(escape_name("a/b"), "a%2Fb");
        assert_eq!(escape_name(".."), "%2E%2E");
        assert_eq!(escape_name("."), "%2E");
        assert_eq!(escape_name("x\0"), "x%00");
        assert!(escape_name(&"/".repeat(200)).len() <= 255);
        assert_eq!(fallback_file_name(Some("f.txt"), "id"), "f.txt");
        assert_eq!(fallback_file_name(Some("a/b"), "id"), "id");
        assert_eq!(fallback_file_name(Some(".."), "id"), "id");
        assert_eq!(fallback_file_name(None, ""), "artifact");
    }

    #[test]
    fn tags() {
        let id = "76365070-a1b2-4c3d-8e9f-000000000000";
        assert_eq!(
            with_tag("report.xml", &rename_tag(id, 0)),
            "report~76365070.xml"
        );
        assert_eq!(with_tag("report", &rename_tag(id, 0)), "report~76365070");
        assert_eq!(with_tag(".env", &rename_tag(id, 0)), ".env~76365070");
        assert_eq!(
            with_tag("a.tar.gz", &rename_tag(id, 0)),
            "a.tar~76365070.gz"
        );
        assert_eq!(with_tag("a.xml", &rename_tag(id, 1)), format!("a~{id}.xml"));
        assert_eq!(
            with_tag("a.xml", &rename_tag(id, 3)),
            format!("a~{id}~3.xml")
        );
        let long = format!("{}.log", "y".repeat(251));
        let t = with_tag(&long, "~76365070");
        assert_eq!(t.len(), 255);
        assert!(t.ends_with("~76365070.log"));
        let long_ext = format!("a.{}", "z".repeat(253));
        let t = with_tag(&long_ext, "~76365070");
        assert_eq!(t.len(), 255);
        assert!(t.ends_with("~76365070"));
        assert_eq!(rename_tag("a/b\0", 0), "~a%2Fb%00");
    }

    #[test]
    fn unique_names() {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let reserved: BTreeSet<String> = ["r".to_string()].into();
        assert_eq!(
            make_unique(v(&["a", "b", "a", "r", "a~2"]), &reserved),
            v(&["a", "b", "a~3", "r~2", "a~2"])
        );
    }
}
