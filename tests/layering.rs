//! The layering of src/ stays one-way (docs/architecture.md): a top-level module imports only the
//! modules below it in `ORDER`, and no two sibling modules (same parent folder) import each other,
//! directly or around a loop. A folder's mod.rs may use its children while they use the items it
//! defines (the folder's facade). Imports are read from the source text: `crate::`, `super::` and
//! `self::` paths (with their `{..}` groups) and a parent's `child::` paths, outside comments and
//! test modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom to top. `fuzz` is a side module only the fuzzers and tests/fuzz_corpus.rs use.
const ORDER: &[&str] = &[
    "ranges",
    "tensor",
    "data",
    "layers",
    "net",
    "checkpoint",
    "optim",
    "comm",
    "train",
    "parallel",
    "plan",
    "cli",
    "dashboard",
    "fuzz",
];

type Module = Vec<String>;

/// Every module of src/ (lib.rs and main.rs aside) with its source, test modules left out.
fn modules(dir: &Path, prefix: &Module, out: &mut BTreeMap<Module, String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_str().unwrap().to_string();
        if p.is_dir() {
            let mut m = prefix.clone();
            m.push(name);
            modules(&p, &m, out);
        } else if p.extension().is_some_and(|x| x == "rs") && !name.ends_with("tests") {
            let m = match name.as_str() {
                "mod" => prefix.clone(),
                "lib" | "main" if prefix.is_empty() => continue,
                _ => prefix.iter().cloned().chain([name]).collect(),
            };
            out.insert(m, code_of(&std::fs::read_to_string(&p).unwrap()));
        }
    }
}

/// The text without line comments and without the inline `mod tests { .. }` at the end.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The paths of `s` from byte `i` on: `a::b::{c, d::e}` gives [a,b,c] and [a,b,d,e].
fn paths_at(s: &str, mut i: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    loop {
        let rest = &s[i..];
        let n = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        if n == 0 {
            if rest.starts_with('{') {
                // A group: split at the top-level commas.
                let (mut depth, mut start) = (0, i + 1);
                for (k, c) in s[i..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' | ',' if depth == 1 => {
                            let item = &s[start..i + k];
                            let at = start + (item.len() - item.trim_start().len());
                            paths_at(s, at, path.clone(), out);
                            start = i + k + 1;
                            if c == '}' {
                                return;
                            }
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
            }
            break;
        }
        path.push(rest[..n].to_string());
        i += n;
        if s[i..].starts_with("::") {
            i += 2;
        } else {
            break;
        }
    }
    out.push(path);
}

/// The modules `m` (source `code`) imports, resolved to the longest known module prefix.
fn imports(m: &Module, code: &str, known: &BTreeSet<Module>) -> BTreeSet<Module> {
    let children: BTreeSet<&str> =
        known.iter().filter(|k| k.len() == m.len() + 1 && k.starts_with(m)).map(|k| k[m.len()].as_str()).collect();
    let mut raw = Vec::new();
    for (i, _) in code.char_indices() {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| is_ident(c) || c == ':') {
            continue;
        }
        let rest = &code[i..];
        let head = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        if !rest[head..].starts_with("::") {
            continue;
        }
        let first = &rest[..head];
        if first == "crate" || first == "super" || first == "self" || children.contains(first) {
            let mut found = Vec::new();
            paths_at(code, i, Vec::new(), &mut found);
            raw.extend(found);
        }
    }
    let mut out = BTreeSet::new();
    for p in raw {
        let mut abs: Module = match p[0].as_str() {
            "crate" => Vec::new(),
            _ => m.clone(),
        };
        let mut segs = p.iter().skip_while(|s| *s == "crate").peekable();
        while let Some(s) = segs.peek() {
            match s.as_str() {
                "super" => {
                    abs.pop();
                }
                "self" => {}
                _ => break,
            }
            segs.next();
        }
        abs.extend(segs.cloned());
        let target = (1..=abs.len()).rev().map(|k| abs[..k].to_vec()).find(|t| known.contains(t));
        if let Some(t) = target {
            if &t != m && !(t.len() > m.len() && t.starts_with(m) && p[0] == "crate") {
                out.insert(t);
            }
        }
    }
    out
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let mut code = BTreeMap::new();
    modules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &Vec::new(), &mut code);
    let known: BTreeSet<Module> = code.keys().cloned().collect();
    code.iter().map(|(m, c)| (m.clone(), imports(m, c, &known))).collect()
}

fn name(m: &Module) -> String {
    m.join("::")
}

#[test]
fn no_module_imports_one_above_it() {
    let g = graph();
    let rank = |m: &Module| ORDER.iter().position(|o| *o == m[0]);
    let mut wrong = Vec::new();
    for (m, targets) in &g {
        let Some(r) = rank(m) else { panic!("src/{}: a top-level module missing from ORDER", m[0]) };
        for t in targets {
            if rank(t).is_some_and(|rt| rt > r) {
                wrong.push(format!("{} imports {}", name(m), name(t)));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layer order {ORDER:?}:\n  {}\nhint: move the shared piece down (docs/architecture.md)",
        wrong.join("\n  ")
    );
    // The reader sees the imports it should: a few known edges.
    let has = |a: &str, b: &str| g[&a.split("::").map(String::from).collect::<Module>()].iter().any(|t| name(t) == b);
    assert!(has("parallel::pipeline", "parallel::partition") && has("plan", "parallel::partition"));
    assert!(has("comm::algorithms", "ranges") && has("data::sampler", "ranges"));
}

#[test]
fn no_two_sibling_modules_import_each_other() {
    let g = graph();
    // Module a imports sibling b when anything in a's subtree imports anything in b's. A child
    // using its parent's items while the parent uses it (the facade of a folder's mod.rs) is not
    // a sibling edge.
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (m, targets) in &g {
        for t in targets {
            let common = m.iter().zip(t).take_while(|(x, y)| x == y).count();
            if common < m.len() && common < t.len() {
                edges.entry(m[..=common].to_vec()).or_default().insert(t[..=common].to_vec());
            }
        }
    }
    let reach = |a: &Module| {
        let (mut seen, mut stack) = (BTreeSet::new(), vec![a.clone()]);
        while let Some(x) = stack.pop() {
            for y in edges.get(&x).into_iter().flatten() {
                if seen.insert(y.clone()) {
                    stack.push(y.clone());
                }
            }
        }
        seen
    };
    let mut cycles = BTreeSet::new();
    for (a, targets) in &edges {
        for b in targets {
            if reach(b).contains(a) {
                cycles.insert((name(a).min(name(b)), name(a).max(name(b))));
            }
        }
    }
    let found: Vec<_> = cycles.iter().map(|(a, b)| format!("{a} <-> {b}")).collect();
    assert!(
        found.is_empty(),
        "sibling modules that import each other:\n  {}\nhint: move what both need into a module below both",
        found.join("\n  ")
    );
}
