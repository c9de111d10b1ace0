//! The module structure ARCHITECTURE.md describes, checked on the source: no import cycle between
//! files, and no module using a layer above its own. Reads `src/` as text: a `crate::…` or
//! `super::…` path outside `#[cfg(test)]` code is an import of the file that path names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, bottom up: a module may use its own layer and those below it. `lib.rs` (the public
/// re-exports) is above them all.
const LAYERS: &[&[&str]] = &[
    &["error", "clock", "faults", "shutdown", "utc", "lane_md5"],
    &["hash_key", "io"],
    &["types"],
    &["log"],
    &["sequence", "iterator", "throttle", "names"],
    &["manifest"],
    &["stream"],
    &["store", "restore"],
    &["replica"],
    &["consumer"],
    &["firehose"],
    &["server"],
    &["cli"],
];

/// A source file's module path (`["log", "segment", "active"]`) → its text, test code cut off.
fn sources() -> BTreeMap<Vec<String>, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files
        .into_iter()
        .filter(|p| !p.starts_with(root.join("bin")))
        .map(|p| {
            let rel = p.strip_prefix(&root).unwrap().with_extension("");
            let mut module: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod" || m == "lib") {
                module.pop();
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let code = match text.find("#[cfg(test)]\nmod tests") {
                Some(at) => text[..at].to_string(),
                None => text,
            };
            (module, code)
        })
        .collect()
}

/// The files a file's `crate::` and `super::` paths name (the longest prefix that is a file).
fn imports(module: &[String], code: &str, files: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    // `super` is the module's parent, whether the file is `a/b.rs` or `a/b/mod.rs`.
    let parent = module[..module.len().saturating_sub(1)].to_vec();
    let mut out = BTreeSet::new();
    for (anchor, base) in [("crate::", Vec::new()), ("super::", parent)] {
        for (at, _) in code.match_indices(anchor) {
            let preceded_by_ident = code[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            if preceded_by_ident {
                continue;
            }
            let mut path = base.clone();
            for segment in code[at + anchor.len()..].split("::") {
                let ident: String = segment
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                let whole = ident.len() == segment.len();
                if ident.is_empty() {
                    break;
                }
                path.push(ident);
                if !whole {
                    break;
                }
            }
            while !path.is_empty() && !files.contains(&path) {
                path.pop();
            }
            if !path.is_empty() && path != module {
                out.insert(path);
            }
        }
    }
    out
}

fn graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let sources = sources();
    let files: BTreeSet<Vec<String>> = sources.keys().cloned().collect();
    sources
        .iter()
        .map(|(module, code)| (module.clone(), imports(module, code, &files)))
        .collect()
}

/// Groups of files that import each other, directly or through others (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'g [String], usize>,
        low: BTreeMap<&'g [String], usize>,
        stack: Vec<&'g [String]>,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g [String]) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        for w in &s.graph[v] {
            let w = w.as_slice();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                component.push(w.join("/"));
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_slice()) {
            visit(&mut state, v);
        }
    }
    state.found
}

fn layer_of(module: &[String]) -> Option<usize> {
    let top = module.first()?;
    LAYERS
        .iter()
        .position(|layer| layer.contains(&top.as_str()))
}

#[test]
fn no_file_imports_a_file_that_imports_it() {
    let found = cycles(&graph());
    assert!(found.is_empty(), "import cycles between files: {found:?}");
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let mut wrong = Vec::new();
    for (module, imports) in graph() {
        let Some(own) = layer_of(&module) else {
            assert!(
                module.is_empty(),
                "{module:?} is in no layer: add it to LAYERS"
            );
            continue;
        };
        for import in imports {
            let theirs = layer_of(&import).expect("every imported file is in a layer");
            if theirs > own {
                wrong.push(format!("{} uses {}", module.join("/"), import.join("/")));
            }
        }
    }
    assert!(wrong.is_empty(), "layer violations: {wrong:#?}");
}

#[test]
fn the_checks_see_imports() {
    // The parser finds what it is meant to: a known import each way, so the tests above cannot
    // pass by finding nothing.
    let graph = graph();
    let active = graph[&vec!["log".to_string(), "segment".into(), "active".into()]].clone();
    assert!(active.contains(&vec!["log".to_string(), "format".into()]));
    let store = &graph[&vec!["store".to_string()]];
    assert!(store
        .iter()
        .any(|m| m.first().is_some_and(|m| m == "stream")));
    let repair = &graph[&vec!["log".to_string(), "repair".into(), "salvage".into()]];
    assert!(
        repair.contains(&vec!["log".to_string(), "repair".into()]),
        "super:: is followed"
    );
}
