//! The layering of docs/architecture.md, checked on the source: no file imports
//! another in a loop (names brought through re-exports count as imports of the file
//! that defines them), no protocol of `serve/grpc/` imports another, and serving reads
//! nothing of the training stack.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// A module path inside the crate, e.g. `["serve", "engine"]`.
type ModulePath = Vec<String>;

struct SourceFile {
    path: PathBuf,
    module: ModulePath,
    /// Paths it names, as written (`crate::a::B`, `super::c`, `self::d`), after expanding `{}`.
    uses: Vec<String>,
    /// Re-exports: a name made public here → the path it comes from.
    reexports: BTreeMap<String, String>,
    /// A `mod.rs`/`lib.rs`: its re-exports are a façade, not its own imports (a name
    /// taken through one is an import of the file that defines it).
    is_module_root: bool,
}

/// The source of a file without its `#[cfg(test)]` module (tests use `super::*` of
/// their own file) and without comments.
fn code_of(text: &str) -> String {
    let body = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    body.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e` (`self` in a group is
/// the group's own path; `as` renames dropped).
fn expand(tree: &str) -> Vec<String> {
    // Renames (`a as b`) dropped, keeping the punctuation after them.
    let mut kept = String::new();
    let mut tokens = tree.split_whitespace();
    while let Some(token) = tokens.next() {
        if token == "as" {
            let renamed = tokens.next().unwrap_or_default();
            kept.extend(renamed.chars().filter(|c| matches!(c, ',' | '}' | '{')));
        } else {
            kept.push_str(token);
        }
    }
    let tree = kept;
    fn walk(prefix: &str, tree: &str, out: &mut Vec<String>) {
        match tree.find('{') {
            None => {
                let item = tree;
                let joined = match (prefix.is_empty(), item) {
                    (_, "self") => prefix.trim_end_matches("::").to_string(),
                    (true, item) => item.to_string(),
                    (false, item) => format!("{prefix}{item}"),
                };
                out.push(joined);
            }
            Some(open) => {
                let head = &tree[..open];
                let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
                let mut depth = 0;
                let mut start = 0;
                let chars: Vec<char> = inner.chars().collect();
                for (index, c) in chars.iter().enumerate() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            let part: String = chars[start..index].iter().collect();
                            if !part.is_empty() {
                                walk(&format!("{prefix}{head}"), &part, out);
                            }
                            start = index + 1;
                        }
                        _ => {}
                    }
                }
                let part: String = chars[start..].iter().collect();
                if !part.is_empty() {
                    walk(&format!("{prefix}{head}"), &part, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk("", &tree, &mut out);
    out
}

fn read_source(root: &Path) -> Vec<SourceFile> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|name| name != "bin") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            let relative = path.strip_prefix(root).expect("under src");
            let mut module: ModulePath = relative.with_extension("").iter().map(|part| part.to_string_lossy().into_owned()).collect();
            let is_module_root = matches!(module.last().map(String::as_str), Some("mod" | "lib"));
            if is_module_root {
                module.pop();
            }
            let code = code_of(&fs::read_to_string(&path).expect("readable"));
            let (uses, reexports) = paths_named(&code);
            files.push(SourceFile { path, module, uses, reexports, is_module_root });
        }
    }
    files
}

/// Every `crate::`/`super::`/`self::` path in `code`, from `use` items and inline, and the
/// names `pub use` makes public.
fn paths_named(code: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let mut uses = Vec::new();
    let mut reexports = BTreeMap::new();
    let mut rest = code;
    // `use` items, which may span lines.
    while let Some(at) = rest.find("use ") {
        let preceded_ok = at == 0 || rest[..at].ends_with(|c: char| c.is_whitespace() || c == ')' || c == ';' || c == '{' || c == '}');
        let Some(end) = rest[at..].find(';') else { break };
        let item = &rest[at + 4..at + end];
        if preceded_ok && !item.contains('(') && !item.contains('"') {
            let public = rest[..at].trim_end().ends_with("pub") || rest[..at].trim_end().ends_with(')');
            for path in expand(item) {
                if public {
                    let name = path.rsplit("::").next().unwrap_or(&path).to_string();
                    reexports.insert(name, path.clone());
                }
                uses.push(path);
            }
        }
        rest = &rest[at + 4..];
    }
    // Inline paths (`super::dynamics::MAX_MODEL_NAME`, `crate::data::DIMS`).
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(start) {
            let begin = from + at;
            let before = code[..begin].chars().last();
            let end = code[begin..].find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).map_or(code.len(), |e| begin + e);
            if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':')) {
                uses.push(code[begin..end].trim_end_matches(':').to_string());
            }
            from = end.max(begin + start.len());
        }
    }
    (uses, reexports)
}

/// The file a path names from `file`, following re-exports to the defining file.
fn resolve(path: &str, file: &SourceFile, modules: &BTreeMap<ModulePath, usize>, files: &[SourceFile], depth: usize) -> Option<usize> {
    let mut segments = path.split("::").filter(|s| !s.is_empty());
    let mut module: ModulePath = match segments.next()? {
        "crate" => Vec::new(),
        "super" => {
            let mut parent = file.module.clone();
            parent.pop();
            parent
        }
        "self" => file.module.clone(),
        // A child module named without `self::` (2018 paths); anything else is another crate.
        child => {
            let mut own = file.module.clone();
            own.push(child.to_string());
            if !modules.contains_key(&own) {
                return None;
            }
            own
        }
    };
    let mut rest: Vec<&str> = segments.collect();
    while rest.first() == Some(&"super") {
        module.pop();
        rest.remove(0);
    }
    // The longest prefix that is a module file.
    for segment in &rest {
        let mut deeper = module.clone();
        deeper.push(segment.to_string());
        if modules.contains_key(&deeper) {
            module = deeper;
            continue;
        }
        // `segment` is an item of `module`: follow a re-export to its source.
        let owner = *modules.get(&module)?;
        if depth < 8
            && let Some(source) = files[owner].reexports.get(*segment)
        {
            return resolve(source, &files[owner], modules, files, depth + 1).or(Some(owner));
        }
        return Some(owner);
    }
    modules.get(&module).copied()
}

fn edges(files: &[SourceFile]) -> BTreeMap<usize, BTreeSet<usize>> {
    let modules: BTreeMap<ModulePath, usize> = files.iter().enumerate().map(|(index, file)| (file.module.clone(), index)).collect();
    let mut graph: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for (index, file) in files.iter().enumerate() {
        for path in file.uses.iter().filter(|path| !(file.is_module_root && file.reexports.values().any(|source| source == *path))) {
            if let Some(target) = resolve(path, file, &modules, files, 0)
                && target != index
            {
                graph.entry(index).or_default().insert(target);
            }
        }
    }
    graph
}

/// Every cycle's files (strongly connected components of more than one file).
fn cycles(graph: &BTreeMap<usize, BTreeSet<usize>>, count: usize) -> Vec<Vec<usize>> {
    // Tarjan's algorithm.
    struct State<'a> {
        graph: &'a BTreeMap<usize, BTreeSet<usize>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        found: Vec<Vec<usize>>,
    }
    fn visit(state: &mut State, node: usize) {
        state.index[node] = Some(state.next);
        state.low[node] = state.next;
        state.next += 1;
        state.stack.push(node);
        state.on_stack[node] = true;
        for &next in state.graph.get(&node).into_iter().flatten() {
            match state.index[next] {
                None => {
                    visit(state, next);
                    state.low[node] = state.low[node].min(state.low[next]);
                }
                Some(index) if state.on_stack[next] => state.low[node] = state.low[node].min(index),
                Some(_) => {}
            }
        }
        if Some(state.low[node]) == state.index[node] {
            let mut component = Vec::new();
            while let Some(top) = state.stack.pop() {
                state.on_stack[top] = false;
                component.push(top);
                if top == node {
                    break;
                }
            }
            if component.len() > 1 {
                state.found.push(component);
            }
        }
    }
    let mut state = State { graph, index: vec![None; count], low: vec![0; count], on_stack: vec![false; count], stack: Vec::new(), next: 0, found: Vec::new() };
    for node in 0..count {
        if state.index[node].is_none() {
            visit(&mut state, node);
        }
    }
    state.found
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn name(file: &SourceFile) -> String {
    file.path.strip_prefix(src()).unwrap_or(&file.path).display().to_string()
}

#[test]
fn the_checker_finds_a_loop_through_a_reexport() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        fs::write(path, text).expect("written");
    };
    write("lib.rs", "pub mod serve;\n");
    write("serve/mod.rs", "mod a;\nmod b;\npub use a::Alpha;\npub use b::Beta;\n");
    write("serve/a.rs", "use super::b::Beta;\npub struct Alpha(Beta);\n");
    write("serve/b.rs", "use super::{\n    Alpha,\n};\npub struct Beta;\nfn f(_: Alpha) {}\n");
    let files = read_source(dir.path());
    let found = cycles(&edges(&files), files.len());
    let named: Vec<Vec<String>> = found.iter().map(|c| c.iter().map(|&i| files[i].module.join("::")).collect()).collect();
    assert_eq!(named.len(), 1, "{named:?}");
    assert!(named[0].contains(&"serve::a".to_string()) && named[0].contains(&"serve::b".to_string()), "{named:?}");

    // Without the re-export's loop: none.
    write("serve/b.rs", "pub struct Beta;\n");
    let files = read_source(dir.path());
    assert!(cycles(&edges(&files), files.len()).is_empty());
}

#[test]
fn no_file_imports_another_in_a_loop() {
    let files = read_source(&src());
    let found = cycles(&edges(&files), files.len());
    let described: Vec<String> = found.iter().map(|cycle| cycle.iter().map(|&i| name(&files[i])).collect::<Vec<_>>().join(" ↔ ")).collect();
    assert!(described.is_empty(), "files importing each other in a loop: {described:#?}");
}

#[test]
fn protocols_do_not_import_each_other_and_serving_reads_no_training_code() {
    let files = read_source(&src());
    let graph = edges(&files);
    let protocols = ["serve/grpc/dynamics.rs", "serve/grpc/inference.rs", "serve/rest.rs"];
    let training = ["train", "models", "nn", "e3"];
    let mut faults = Vec::new();
    for (from, targets) in &graph {
        let from_name = name(&files[*from]);
        for target in targets {
            let target_name = name(&files[*target]);
            if protocols.contains(&from_name.as_str()) && protocols.contains(&target_name.as_str()) {
                faults.push(format!("{from_name} imports the other protocol {target_name}"));
            }
            let serving = from_name.starts_with("serve/") || from_name.starts_with("client/");
            if serving && training.iter().any(|layer| files[*target].module.first().is_some_and(|m| m == layer)) {
                faults.push(format!("{from_name} imports the training stack's {target_name}"));
            }
        }
    }
    assert!(protocols.iter().all(|p| files.iter().any(|f| name(f) == *p)), "the protocol files moved: update this test and docs/architecture.md");
    assert!(faults.is_empty(), "{faults:#?}");
}
