//! The server crate's layers depend one way: no import cycle among `src/`'s top-level modules,
//! and no file-level cycle of more than four files.
//!
//! The import graph is read from the text the way `shared/tools/modgraph.py` reads it:
//! `crate::a::b` and `super::…` paths (doc links included, since they name a dependency for the
//! reader), resolved to the longest module path that is a file, ignoring `#[cfg(test)]` modules
//! at the end of a file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level cycles tolerated, each as its sorted member list: none since the re-layer. A new
/// cycle fails the test.
const KNOWN: &[&[&str]] = &[];
/// Largest file-level cycle allowed.
const MAX_FILE_CYCLE: usize = 4;

type Module = Vec<String>;

fn files(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    // Bounded: a source tree has far fewer than 10k directories.
    for _ in 0..10_000 {
        let Some(dir) = stack.pop() else { break };
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(src).unwrap().with_extension("");
                let mut m: Module = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                    m.pop();
                }
                out.insert(m, p);
            }
        }
    }
    out
}

fn resolve(files: &BTreeMap<Module, PathBuf>, path: &[String]) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|k| path[..k].to_vec())
        .find(|m| files.contains_key(m))
}

fn edges(files: &BTreeMap<Module, PathBuf>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut out: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (m, p) in files {
        let text = std::fs::read_to_string(p).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap();
        let bytes = text.as_bytes();
        for (i, _) in text.match_indices("::") {
            // The word before `::` must be `crate` or `super`, starting a path.
            let start = text[..i]
                .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                .map_or(0, |k| k + 1);
            let word = &text[start..i];
            if !(word == "crate" || word == "super") {
                continue;
            }
            if start > 0 && (bytes[start - 1] == b':' || bytes[start - 1].is_ascii_alphanumeric()) {
                continue;
            }
            let mut parts = Vec::new();
            let mut rest = &text[i..];
            while let Some(r) = rest.strip_prefix("::") {
                let end = r
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(r.len());
                if end == 0 {
                    break;
                }
                parts.push(r[..end].to_string());
                rest = &r[end..];
            }
            let full: Vec<String> = if word == "crate" {
                parts
            } else {
                // `super` of `a/b.rs` (module a::b) and of `a/b/mod.rs` (also a::b) is `a`.
                let mut base = m[..m.len().saturating_sub(1)].to_vec();
                base.extend(parts);
                base
            };
            if let Some(t) = resolve(files, &full) {
                if &t != m {
                    out.entry(m.clone()).or_default().insert(t);
                }
            }
        }
        // `use crate::{a, b::c}` groups.
        for (i, _) in text.match_indices("use crate::{") {
            let body = &text[i + "use crate::{".len()..];
            let body = &body[..body.find('}').unwrap_or(0)];
            for item in body.split(',') {
                let parts: Vec<String> = item
                    .trim()
                    .split("::")
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if let Some(t) = resolve(files, &parts) {
                    if &t != m {
                        out.entry(m.clone()).or_default().insert(t);
                    }
                }
            }
        }
    }
    out
}

/// Strongly connected components with more than one member (Tarjan, iterative).
fn cycles(nodes: &BTreeSet<Module>, adj: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    let ids: Vec<&Module> = nodes.iter().collect();
    let at: BTreeMap<&Module, usize> = ids.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let succ: Vec<Vec<usize>> = ids
        .iter()
        .map(|m| {
            adj.get(*m)
                .into_iter()
                .flatten()
                .filter_map(|t| at.get(t).copied())
                .collect()
        })
        .collect();
    let n = ids.len();
    let (mut index, mut low, mut on) = (vec![usize::MAX; n], vec![0; n], vec![false; n]);
    let (mut stack, mut out, mut next) = (Vec::new(), Vec::new(), 0);
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work = vec![(root, 0usize)];
        while let Some((v, k)) = work.pop() {
            if k == 0 {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on[v] = true;
            }
            if let Some(&w) = succ[v].get(k) {
                work.push((v, k + 1));
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut comp = Vec::new();
                while let Some(w) = stack.pop() {
                    on[w] = false;
                    comp.push(ids[w].clone());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    out.push(comp);
                }
            }
        }
    }
    out
}

#[test]
fn layers_depend_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = files(&src);
    assert!(files.len() > 10, "found the crate's files");
    let edges = edges(&files);
    let mut top: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (a, bs) in &edges {
        for b in bs {
            if !a.is_empty() && !b.is_empty() && a[0] != b[0] {
                top.entry(vec![a[0].clone()])
                    .or_default()
                    .insert(vec![b[0].clone()]);
            }
        }
    }
    let topn: BTreeSet<Module> = files
        .keys()
        .filter(|m| !m.is_empty())
        .map(|m| vec![m[0].clone()])
        .collect();
    let known: Vec<Vec<String>> = KNOWN
        .iter()
        .map(|c| c.iter().map(|s| s.to_string()).collect())
        .collect();
    for c in cycles(&topn, &top) {
        let names: Vec<String> = c.iter().map(|m| m[0].clone()).collect();
        assert!(
            known.iter().any(|k| names.iter().all(|n| k.contains(n))),
            "import cycle among top-level modules: {names:?} (the layers must depend one way)"
        );
    }
    let all: BTreeSet<Module> = files.keys().cloned().collect();
    for c in cycles(&all, &edges) {
        assert!(
            c.len() <= MAX_FILE_CYCLE,
            "file-level import cycle of {} files: {:?}",
            c.len(),
            c.iter().map(|m| m.join("::")).collect::<Vec<_>>()
        );
    }
}

/// The checker sees a cycle it is shown (so a pass means something).
#[test]
fn the_checker_finds_a_planted_cycle() {
    let m = |s: &str| vec![s.to_string()];
    let adj: BTreeMap<Module, BTreeSet<Module>> = [
        (m("a"), [m("b")].into()),
        (m("b"), [m("c")].into()),
        (m("c"), [m("a")].into()),
        (m("d"), [m("a")].into()),
    ]
    .into();
    let nodes: BTreeSet<Module> = [m("a"), m("b"), m("c"), m("d")].into();
    assert_eq!(cycles(&nodes, &adj), vec![vec![m("a"), m("b"), m("c")]]);
}
