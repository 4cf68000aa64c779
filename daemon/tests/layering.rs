//! Issue 15: data flows one way through the daemon crate. This test reads every `crate::`
//! path in `daemon/src` (outside `#[cfg(test)]` modules), builds the graph of which
//! top-level module uses which, and fails on any import cycle between top-level modules
//! (tests may reach across layers).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The source text of a file without its `#[cfg(test)] mod ... { ... }` blocks.
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        // Skip to the item's opening brace (or `;` for `mod x;`), then to its match.
        let Some(open) = after.find(['{', ';']) else {
            rest = "";
            break;
        };
        if after.as_bytes()[open] == b';' {
            rest = &after[open + 1..];
            continue;
        }
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The identifier at the start of `s` (after spaces).
fn ident(s: &str) -> String {
    s.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Top-level modules named after `crate::` in `text` (also inside `use crate::{a, b::c}`).
fn uses(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                // `crate::{a, b::c}` on one line, or the start of a multi-line group.
                out.extend(group.split(',').map(ident).filter(|n| modules.contains(n)));
            } else {
                let name = ident(after);
                if modules.contains(&name) {
                    out.insert(name);
                }
            }
            rest = after;
        }
    }
    // Multi-line `use crate::{` groups: the names at the start of the following lines.
    let mut in_group = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("use crate::{") && !t.contains('}') {
            in_group = true;
            continue;
        }
        if in_group {
            out.extend(t.split(',').map(ident).filter(|n| modules.contains(n)));
            if t.contains('}') {
                in_group = false;
            }
        }
    }
    out
}

fn rust_files(p: &Path) -> Vec<PathBuf> {
    if p.is_file() {
        return vec![p.to_owned()];
    }
    let mut out = Vec::new();
    let mut todo = vec![p.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// Module -> the other top-level modules it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let modules: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .chain(lib.lines().filter_map(|l| l.trim().strip_prefix("mod ")))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    let mut g = BTreeMap::new();
    for m in &modules {
        let file = src().join(format!("{m}.rs"));
        let path = if file.is_file() { file } else { src().join(m) };
        let mut used = BTreeSet::new();
        for f in rust_files(&path) {
            let text = without_tests(&std::fs::read_to_string(&f).unwrap());
            used.extend(uses(&text, &modules));
        }
        used.remove(m);
        g.insert(m.clone(), used);
    }
    g
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        for w in &t.g[v] {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut c = BTreeSet::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                c.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                t.out.push(c);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// Edges of `g` that lie inside a cycle.
fn cycle_edges(g: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for c in cycles(g) {
        for a in &c {
            for b in &g[a] {
                if c.contains(b) {
                    out.insert((a.clone(), b.clone()));
                }
            }
        }
    }
    out
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let g = graph();
    assert!(g.len() > 10, "{g:?}");
    let edges = cycle_edges(&g);
    assert!(
        edges.is_empty(),
        "import edges that close a cycle between top-level modules: {edges:?}\ncycles: {:?}",
        cycles(&g)
    );
}

#[test]
fn the_checker_sees_cycles() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let edge = |g: &mut BTreeMap<String, BTreeSet<String>>, a: &str, b: &str| {
        g.entry(a.into()).or_default().insert(b.into());
        g.entry(b.into()).or_default();
    };
    edge(&mut g, "index", "assign");
    edge(&mut g, "assign", "pipeline");
    edge(&mut g, "pipeline", "index");
    edge(&mut g, "config", "header");
    assert_eq!(cycles(&g).len(), 1);
    assert_eq!(cycle_edges(&g).len(), 3);
    let modules: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let found = uses(
        "use crate::a::X;\nuse crate::{\n    b::Y,\n    c,\n};\n// crate::z\n",
        &modules,
    );
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(
        without_tests("fn a() {}\n#[cfg(test)]\nmod tests { fn b() { crate::x() } }\nfn c() {}"),
        "fn a() {}\n\nfn c() {}"
    );
}

/// The stage modules: nothing in the configuration layer or below may name them.
const STAGES: &[&str] = &[
    "admission",
    "assign",
    "committer",
    "control",
    "deid",
    "forward",
    "jobs",
    "node",
    "pipeline",
    "pixel",
    "scp",
    "serve",
    "web",
];

#[test]
fn configuration_is_plain_data_below_the_stages() {
    let g = graph();
    for m in ["config", "project", "model", "clock", "part10"] {
        let named: Vec<&String> = g[m]
            .iter()
            .filter(|u| STAGES.contains(&u.as_str()))
            .collect();
        assert!(named.is_empty(), "{m} names the stages {named:?}");
    }
    // The bottom records and the clock name nothing of the crate.
    for m in ["model", "clock"] {
        assert!(g[m].iter().all(|u| u == "header"), "{m} uses {:?}", g[m]);
    }
}

#[test]
fn mask_and_ocr_share_image_types_without_naming_each_other() {
    let read =
        |f: &str| without_tests(&std::fs::read_to_string(src().join("pixel").join(f)).unwrap());
    let (mask, ocr, image) = (read("mask.rs"), read("ocr.rs"), read("image.rs"));
    assert!(!mask.contains("super::ocr") && !mask.contains("pixel::ocr"));
    assert!(!ocr.contains("super::mask") && !ocr.contains("pixel::mask"));
    for other in ["super::mask", "super::ocr", "super::detect", "super::scrub"] {
        assert!(!image.contains(other), "image.rs names {other}");
    }
}

/// `docs/ARCHITECTURE.md` draws the layers as lines `modules : what they are`, top first.
/// Every top-level module is on exactly one line, and uses only modules on lower lines: the
/// picture is the code's.
#[test]
fn the_layer_picture_in_the_architecture_document_is_true() {
    let g = graph();
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/ARCHITECTURE.md"),
    )
    .unwrap();
    let block = doc
        .split("### Layers")
        .nth(1)
        .and_then(|s| s.split("```").nth(1))
        .expect("a code block after ### Layers");
    let mut line_of: BTreeMap<String, usize> = BTreeMap::new();
    for (i, l) in block.lines().enumerate() {
        let Some((names, _)) = l.split_once(':') else {
            continue;
        };
        for n in names.split_whitespace() {
            assert!(g.contains_key(n), "the picture names `{n}`, not a module");
            assert!(
                line_of.insert(n.to_string(), i).is_none(),
                "`{n}` drawn twice"
            );
        }
    }
    let missing: Vec<&String> = g.keys().filter(|m| !line_of.contains_key(*m)).collect();
    // The level each module would need (longest chain below it), to redraw the picture.
    fn level(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        memo: &mut BTreeMap<String, usize>,
    ) -> usize {
        if let Some(l) = memo.get(m) {
            return *l;
        }
        memo.insert(m.to_string(), 0);
        let l = g[m]
            .iter()
            .map(|u| level(u, g, memo) + 1)
            .max()
            .unwrap_or(0);
        memo.insert(m.to_string(), l);
        l
    }
    let mut memo = BTreeMap::new();
    let levels: BTreeMap<usize, Vec<&String>> = g.keys().fold(BTreeMap::new(), |mut acc, m| {
        acc.entry(level(m, &g, &mut memo)).or_default().push(m);
        acc
    });
    assert!(
        missing.is_empty(),
        "not drawn: {missing:?}; levels: {levels:#?}"
    );
    for (a, used) in &g {
        for b in used {
            assert!(
                line_of[a] < line_of[b],
                "`{a}` uses `{b}`, drawn on the same line or above it; levels: {levels:#?}"
            );
        }
    }
}

#[test]
fn the_command_line_is_the_top_layer() {
    let g = graph();
    assert!(g.contains_key("cli"), "{g:?}");
    let users: Vec<&String> = g
        .iter()
        .filter(|(_, used)| used.contains("cli"))
        .map(|(m, _)| m)
        .collect();
    assert!(users.is_empty(), "modules that use cli: {users:?}");
    // It reaches the daemon through the control API's client, not by opening the index.
    assert!(g["cli"].contains("control"), "{:?}", g["cli"]);
}
