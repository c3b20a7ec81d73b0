//! The source layout (issue 14): no import circle between the product's top-level modules.
//! A module may use its submodules and they may use it; across top-level modules
//! (`fs`, `backend`, `source`, `content`, …) the `crate::` references form a DAG.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `crate::NAME` references in code (comments, doc comments and unit-test code left out).
fn references(code: &str) -> BTreeSet<String> {
    // Unit tests may reach anywhere: cut a trailing `#[cfg(test)] mod tests { … }`.
    let code = match code.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &code[..i],
        None => code,
    };
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let line = line.split(" //").next().unwrap_or(line);
        for (i, _) in line.match_indices("crate::") {
            let name: String = line[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn is_test_file(rel: &str) -> bool {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    file == "tests.rs"
        || file.ends_with("_tests.rs")
        || file == "proptests.rs"
        || rel.contains("/testing/")
}

fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, root, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

/// Edges `module → module` with one file that makes each.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut files = Vec::new();
    walk(src, src, &mut files);
    assert!(files.len() > 20, "read the product sources at {src:?}");
    let tops: BTreeSet<String> = files
        .iter()
        .map(|(rel, _)| top_of(rel))
        .filter(|t| t != "lib" && t != "main")
        .collect();
    let mut g: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (rel, code) in &files {
        if is_test_file(rel) {
            continue;
        }
        let top = top_of(rel);
        for r in references(code) {
            if r != top && tops.contains(&r) {
                g.entry(top.clone())
                    .or_default()
                    .entry(r)
                    .or_insert(rel.clone());
            }
        }
    }
    g
}

fn top_of(rel: &str) -> String {
    rel.split('/')
        .next()
        .unwrap()
        .trim_end_matches(".rs")
        .to_string()
}

/// One cycle of the graph, if there is any.
fn find_cycle(g: &BTreeMap<String, BTreeMap<String, String>>) -> Option<Vec<String>> {
    fn dfs(
        v: &str,
        g: &BTreeMap<String, BTreeMap<String, String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == v) {
            let mut c = path[i..].to_vec();
            c.push(v.to_string());
            return Some(c);
        }
        if done.contains(v) {
            return None;
        }
        path.push(v.to_string());
        for w in g.get(v).into_iter().flat_map(|m| m.keys()) {
            if let Some(c) = dfs(w, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(v.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys().find_map(|v| dfs(v, g, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_circle_between_top_level_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = module_graph(&src);
    assert!(
        g.get("fs").is_some_and(|m| m.contains_key("backend")),
        "the scan sees fs use the backend seam: {g:?}"
    );
    if let Some(c) = find_cycle(&g) {
        let why: Vec<String> = c
            .windows(2)
            .map(|w| format!("{} -> {} (in src/{})", w[0], w[1], g[&w[0]][&w[1]]))
            .collect();
        panic!("import circle: {}", why.join(", "));
    }
}

#[test]
fn the_cycle_check_finds_a_planted_circle() {
    let mut g: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (a, b) in [("fs", "backend"), ("backend", "tree"), ("tree", "fs")] {
        g.entry(a.into())
            .or_default()
            .insert(b.into(), "x.rs".into());
    }
    let c = find_cycle(&g).expect("a cycle");
    assert_eq!(c.first(), c.last());
    assert_eq!(c.len(), 4);
    g.get_mut("tree").unwrap().clear();
    assert_eq!(find_cycle(&g), None);
    let refs = references("use crate::fs::X; // crate::api\n//! crate::source\nlet a = crate::tree::y;\n#[cfg(test)]\nmod tests {\n use crate::mount;\n}");
    assert_eq!(refs, ["fs", "tree"].map(String::from).into());
}
