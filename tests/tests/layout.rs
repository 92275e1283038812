//! The house rules of DESIGN §1, checked on the source tree rather than
//! trusted: inside each crate the modules form no import circle, every
//! source file opens with its `//!` paragraph, and no non-test source file
//! is longer than [`MAX_LINES`].
//!
//! "Import circle" is judged at file granularity: each file is a module
//! (`a.rs` and `a/mod.rs` are `a`, `a/b.rs` is `a::b`); every `crate::…` and
//! `super::…` path in its non-test code (comments and `#[cfg(test)]` items
//! removed) is an edge to the longest module prefix it names. A module's uses
//! of its own descendants are not edges (a `mod.rs` naturally uses its
//! children); everything else must form a directed acyclic graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest a non-test source file may be (DESIGN §1: one concept per
/// file; "about 600 lines").
const MAX_LINES: usize = 620;

/// The library crates the rules apply to (their `src/` trees).
const CRATES: &[&str] = &["proto", "server", "agent"];

type Module = Vec<String>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module a file of `src/` defines; `None` for binary roots.
fn module_of(src: &Path, file: &Path) -> Option<Module> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    if parts.first().is_some_and(|p| p == "bin") || last == "main.rs" {
        return None;
    }
    match last.as_str() {
        "lib.rs" if parts.is_empty() => {}
        "mod.rs" => {}
        other => parts.push(other.trim_end_matches(".rs").to_string()),
    }
    Some(parts)
}

/// A test-only file: `tests.rs`, or anything under a `tests/` folder.
fn is_test_file(src: &Path, file: &Path) -> bool {
    let rel = file.strip_prefix(src).unwrap_or(file);
    rel.iter().any(|c| c == "tests" || c == "tests.rs")
}

/// The source with comments, string literals' contents and `#[cfg(test)]`
/// items removed (lines kept, so lengths still count code lines).
fn strip(source: &str) -> String {
    let b = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == b'\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if b[i] == b'r'
            && (i == 0 || !is_ident(b[i - 1]))
            && b[i + 1..].iter().take_while(|&&c| c == b'#').count() > 0
            && b.get(i + 1 + b[i + 1..].iter().take_while(|&&c| c == b'#').count()) == Some(&b'"')
        {
            // A raw string r#"…"#: skipped whole, newlines kept.
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            let body = i + 2 + hashes;
            let end = b[body..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(b.len(), |p| body + p + close.len());
            out.push_str("\"\"");
            out.extend(std::iter::repeat_n(
                '\n',
                b[i..end].iter().filter(|&&c| c == b'\n').count(),
            ));
            i = end;
        } else if b[i] == b'"' {
            // A plain string literal (raw strings in this code base hold no
            // `crate::`, and a stray quote only hides a few characters).
            out.push('"');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                if i < b.len() && b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            out.push('"');
            i += 1;
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal such as '"' or '\n' (not a lifetime).
            let end = b[i + 1..]
                .iter()
                .position(|&c| c == b'\'')
                .map_or(b.len(), |p| i + 1 + p + 1);
            out.push_str("' '");
            i = end.max(i + 3);
        } else {
            let ch = source[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    remove_cfg_test(&out)
}

/// Removes each `#[cfg(test)]` item (up to its closing brace or semicolon),
/// keeping its newlines out of the result.
fn remove_cfg_test(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let b = item.as_bytes();
        let mut depth = 0usize;
        let mut end = item.len();
        for (k, &c) in b.iter().enumerate() {
            match c {
                b'{' => depth += 1,
                // The item is a field or an arm of an enclosing block.
                b'}' if depth == 0 => {
                    end = k;
                    break;
                }
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                b';' | b',' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every path a `crate::` or `super::` (chain) names, resolved to absolute
/// segments; `{a, b::c}` groups expand to one path each.
fn referenced_paths(code: &str, here: &Module, is_mod_rs: bool) -> Vec<Module> {
    let b = code.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let before_ok = i == 0 || !(is_ident(b[i - 1]) || b[i - 1] == b':');
        if before_ok && (b[i..].starts_with(b"crate::") || b[i..].starts_with(b"super::")) {
            // The module `super` is relative to: a file `a/b.rs` is module
            // a::b, so `super` is `a`; `a/mod.rs` is module `a`, `super` is
            // the root.
            let mut base: Module;
            let mut j = i;
            if b[j..].starts_with(b"crate::") {
                base = Vec::new();
                j += "crate::".len();
            } else {
                base = here.clone();
                let _ = is_mod_rs;
                while b[j..].starts_with(b"super::") {
                    base.pop();
                    j += "super::".len();
                }
            }
            j = parse_tree(b, j, &base, &mut found);
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    found
}

/// Parses `seg::seg::{…}` from `j`, pushing each complete path; returns the
/// index after it.
fn parse_tree(b: &[u8], mut j: usize, prefix: &Module, found: &mut Vec<Module>) -> usize {
    let mut path = prefix.clone();
    loop {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if j < b.len() && b[j] == b'{' {
            j += 1;
            loop {
                while j < b.len() && (b[j].is_ascii_whitespace() || b[j] == b',') {
                    j += 1;
                }
                if j >= b.len() || b[j] == b'}' {
                    return j + 1;
                }
                let before = j;
                j = parse_tree(b, j, &path, found);
                if j == before {
                    j += 1;
                }
            }
        }
        let start = j;
        while j < b.len() && is_ident(b[j]) {
            j += 1;
        }
        if start == j {
            found.push(path);
            return j;
        }
        path.push(String::from_utf8_lossy(&b[start..j]).into_owned());
        if b[j..].starts_with(b"::") {
            j += 2;
        } else {
            found.push(path);
            return j;
        }
    }
}

/// The longest known module that `path` starts with.
fn resolve(path: &Module, modules: &BTreeSet<Module>) -> Module {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| modules.contains(m))
        .unwrap_or_default()
}

fn module_name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// Strongly connected components with more than one member (Tarjan).
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct T<'g> {
        g: &'g BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on: BTreeSet<Module>,
        next: usize,
        out: Vec<Vec<Module>>,
    }
    fn visit(t: &mut T<'_>, v: &Module) {
        t.index.insert(v.clone(), t.next);
        t.low.insert(v.clone(), t.next);
        t.next += 1;
        t.stack.push(v.clone());
        t.on.insert(v.clone());
        for w in t.g.get(v).into_iter().flatten() {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low[v];
                t.low.insert(v.clone(), lv.min(lw));
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low[v];
                t.low.insert(v.clone(), lv.min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            loop {
                let w = t.stack.pop().expect("v is on the stack");
                t.on.remove(&w);
                let done = &w == v;
                scc.push(w);
                if done {
                    break;
                }
            }
            if scc.len() > 1 {
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

struct Crate {
    name: &'static str,
    /// (file, module, stripped code) of every library source file.
    files: Vec<(PathBuf, Module, String)>,
    tests: Vec<PathBuf>,
}

fn load(name: &'static str) -> Crate {
    let src = workspace().join(name).join("src");
    let mut all = Vec::new();
    rust_files(&src, &mut all);
    let mut files = Vec::new();
    let mut tests = Vec::new();
    for f in all {
        if is_test_file(&src, &f) {
            tests.push(f);
            continue;
        }
        let Some(m) = module_of(&src, &f) else {
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        files.push((f, m, strip(&text)));
    }
    Crate { name, files, tests }
}

fn import_graph(c: &Crate) -> BTreeMap<Module, BTreeSet<Module>> {
    let modules: BTreeSet<Module> = c.files.iter().map(|(_, m, _)| m.clone()).collect();
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (f, m, code) in &c.files {
        let is_mod_rs = f
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs");
        let edges = graph.entry(m.clone()).or_default();
        for p in referenced_paths(code, m, is_mod_rs) {
            let target = resolve(&p, &modules);
            // Uses of oneself or of one's own descendants are not edges.
            if target.starts_with(m) {
                continue;
            }
            edges.insert(target);
        }
    }
    graph
}

#[test]
fn no_import_circle_inside_any_crate() {
    let mut report = Vec::new();
    for name in CRATES {
        let c = load(name);
        let graph = import_graph(&c);
        assert!(
            graph.len() > 5,
            "{name}: the scan found only {} modules: the scanner is broken",
            graph.len()
        );
        for scc in cycles(&graph) {
            let members: BTreeSet<&Module> = scc.iter().collect();
            let mut lines = Vec::new();
            for m in &scc {
                let to: Vec<String> = graph[m]
                    .iter()
                    .filter(|t| members.contains(t))
                    .map(module_name)
                    .collect();
                lines.push(format!("    {} -> {}", module_name(m), to.join(", ")));
            }
            report.push(format!(
                "{}: circle of {} modules:\n{}",
                c.name,
                scc.len(),
                lines.join("\n")
            ));
        }
    }
    assert!(report.is_empty(), "import circles:\n{}", report.join("\n"));
}

#[test]
fn the_circle_finder_finds_a_circle() {
    // The checker must be able to fail: a two-file circle, a parent using
    // its child (allowed) and `super` from a child (an edge).
    let m = |s: &str| -> Module {
        if s.is_empty() {
            Vec::new()
        } else {
            s.split("::").map(String::from).collect()
        }
    };
    let modules: BTreeSet<Module> = ["", "config", "key", "key::disk"]
        .into_iter()
        .map(m)
        .collect();
    let refs = referenced_paths(
        "use crate::{key::KeyType, config::{A, b::C}};\nsuper::Thing",
        &m("key::disk"),
        false,
    );
    let resolved: BTreeSet<Module> = refs.iter().map(|p| resolve(p, &modules)).collect();
    assert_eq!(
        resolved,
        [m("key"), m("config")].into_iter().collect::<BTreeSet<_>>()
    );
    let mut g: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    g.entry(m("config")).or_default().insert(m("key"));
    g.entry(m("key::disk")).or_default().insert(m("config"));
    g.entry(m("key")).or_default();
    assert!(
        cycles(&g).is_empty(),
        "a parent using its child is no circle"
    );
    g.entry(m("key")).or_default().insert(m("config"));
    assert_eq!(cycles(&g).len(), 1);
    let stripped = strip(
        "// crate::a\nlet s = \"crate::b\";\n#[cfg(test)]\nmod tests { use crate::c; }\nuse crate::d;",
    );
    let refs = referenced_paths(&stripped, &m(""), true);
    assert_eq!(refs, vec![m("d")]);
}

#[test]
fn every_source_file_opens_with_its_paragraph() {
    let mut missing = Vec::new();
    for name in CRATES {
        let c = load(name);
        let all = c.files.iter().map(|(f, _, _)| f).chain(c.tests.iter());
        for f in all {
            let text = std::fs::read_to_string(f).expect("readable");
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            if !first.starts_with("//!") {
                missing.push(
                    f.strip_prefix(workspace())
                        .unwrap_or(f)
                        .display()
                        .to_string(),
                );
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a `//!` paragraph on top: {missing:?}"
    );
}

#[test]
fn no_source_file_is_over_the_limit() {
    let mut long = Vec::new();
    for name in CRATES {
        let c = load(name);
        for (f, _, code) in &c.files {
            let lines = code.lines().count();
            if lines > MAX_LINES {
                long.push(format!(
                    "{} ({lines} lines without tests)",
                    f.strip_prefix(workspace()).unwrap_or(f).display()
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "source files over {MAX_LINES} lines (split them by concept): {long:?}"
    );
}
