//! The floor plan of `src/` (ARCHITECTURE.md), checked: every module has a floor, imports go
//! only down or sideways, the imports between modules form no cycle, and no source file
//! outside tests is over 800 lines.
//!
//! An import is a `use crate::…`/`use super::…` path or such a path written inline, in the
//! code before the file's `#[cfg(test)]` (comments stripped). A folder's `mod.rs` and its own
//! files are one room: imports between them are its wiring, not an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The floor of a module, by its path; `None` for a module not placed yet.
fn floor(module: &[String]) -> Option<u8> {
    let path = module.join("::");
    let top = module.first().map(String::as_str).unwrap_or("");
    Some(match (top, path.as_str()) {
        // The crate root only declares the modules and the shells' `Error`.
        ("", _) => 0,
        (_, "audit::shell" | "plan::cluster") => 3,
        ("cli" | "plugin" | "serve", _) => 3,
        ("elb" | "binding" | "facts" | "objects" | "json", _) => 0,
        (
            "timing" | "inject" | "health" | "targets" | "drain" | "release" | "plan" | "audit",
            _,
        ) => 1,
        (
            "webhook" | "watcher" | "waits" | "cluster" | "aws" | "election" | "certs" | "metrics"
            | "logging",
            _,
        ) => 2,
        _ => return None,
    })
}

const MAX_LINES: usize = 800;

struct Crate {
    /// Module path → file.
    modules: BTreeMap<Vec<String>, PathBuf>,
}

impl Crate {
    fn read(src: &Path) -> Crate {
        let mut modules = BTreeMap::new();
        let mut stack = vec![src.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let relative = path.strip_prefix(src).unwrap().with_extension("");
                let mut module: Vec<String> = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                match module.last().map(String::as_str) {
                    Some("lib" | "main") if module.len() == 1 => module.clear(),
                    Some("mod") => {
                        module.pop();
                    }
                    _ => {}
                }
                if module.is_empty() && path.ends_with("main.rs") {
                    continue; // the binary: it imports the library by name
                }
                modules.insert(module, path);
            }
        }
        Crate { modules }
    }

    /// The code a module compiles without its tests, comments removed.
    fn code(&self, module: &[String]) -> String {
        let text = std::fs::read_to_string(&self.modules[module]).unwrap();
        let text = match text.find("\n#[cfg(test)]") {
            Some(at) => &text[..at],
            None => &text,
        };
        text.lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The longest module prefix of `path` that is a module of the crate.
    fn resolve(&self, path: &[String]) -> Option<Vec<String>> {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| self.modules.contains_key(p))
    }

    /// Every module `module` imports, rooms' own wiring left out.
    fn imports(&self, module: &[String]) -> BTreeSet<Vec<String>> {
        let code = self.code(module);
        let mut out = BTreeSet::new();
        for path in paths(&code) {
            let mut segments: Vec<&str> = path.split("::").collect();
            let mut base: Vec<String> = match segments.first() {
                Some(&"crate") => {
                    segments.remove(0);
                    vec![]
                }
                Some(&"super") | Some(&"self") => module.to_vec(),
                _ => continue,
            };
            while segments.first() == Some(&"super") {
                segments.remove(0);
                base.pop();
            }
            if segments.first() == Some(&"self") {
                segments.remove(0);
            }
            base.extend(segments.iter().map(|s| s.to_string()));
            let Some(target) = self.resolve(&base) else {
                continue;
            };
            let parent_child =
                |a: &[String], b: &[String]| a.len() == b.len() + 1 && a[..b.len()] == *b;
            if target == module || parent_child(module, &target) || parent_child(&target, module) {
                continue;
            }
            out.insert(target);
        }
        out
    }
}

/// `crate::…`, `super::…` and `self::…` paths in `code`, `use` trees expanded.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    // `use` statements, whole trees.
    while let Some(at) = find_word(rest, "use ") {
        let after = &rest[at + 4..];
        let end = after.find(';').unwrap_or(after.len());
        // One space between words, `x as y` marked, then no spaces: `a::{b@c,d}`.
        let words = after[..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let tree = words.replace(" as ", "@").replace(' ', "");
        out.extend(expand(&tree));
        rest = &after[end..];
    }
    // Inline paths anywhere else.
    let bytes = code.as_bytes();
    for root in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(root) {
            let start = from + i;
            from = start + root.len();
            if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
                continue;
            }
            let path: String = code[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(path.trim_end_matches(':').to_string());
        }
    }
    out
}

fn find_word(text: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find(word) {
        let at = from + i;
        let before = text[..at].chars().last();
        if before.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_')) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`; an alias (`b@x`, from `b as x`) is
/// dropped.
fn expand(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.split('@').next().unwrap_or(tree).to_string()];
    };
    let close = tree.rfind('}').unwrap_or(tree.len());
    let head = &tree[..open];
    let inner = &tree[open + 1..close];
    let mut parts = Vec::new();
    let (mut depth, mut current) = (0, String::new());
    for c in inner.chars() {
        match c {
            ',' if depth == 0 => parts.push(std::mem::take(&mut current)),
            '{' => {
                depth += 1;
                current.push(c)
            }
            '}' => {
                depth -= 1;
                current.push(c)
            }
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(&format!("{head}{p}")))
        .map(|p| p.trim_end_matches("::self").to_string())
        .collect()
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

fn src() -> Crate {
    Crate::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn every_module_has_a_floor_and_imports_only_down() {
    let krate = src();
    let mut wrong = Vec::new();
    for module in krate.modules.keys() {
        let Some(here) = floor(module) else {
            wrong.push(format!(
                "{} has no floor: place it in tests/floors.rs and ARCHITECTURE.md",
                name(module)
            ));
            continue;
        };
        let imports = krate.imports(module);
        if module.len() == 1 && module[0] == "elb" && !imports.is_empty() {
            wrong.push(format!(
                "elb, the ground floor's first words, imports {imports:?}"
            ));
        }
        for target in imports {
            if let Some(there) = floor(&target)
                && there > here
            {
                wrong.push(format!(
                    "{} (floor {here}) imports {} (floor {there})",
                    name(module),
                    name(&target)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_imports_form_no_cycle() {
    let krate = src();
    let graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = krate
        .modules
        .keys()
        .map(|m| (m.clone(), krate.imports(m)))
        .collect();
    // Depth-first search with colours: a grey module met again closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    fn visit(
        m: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        colour: &mut BTreeMap<Vec<String>, Colour>,
        trail: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        colour.insert(m.clone(), Colour::Grey);
        trail.push(m.clone());
        for next in graph.get(m).into_iter().flatten() {
            match colour.get(next).copied().unwrap_or(Colour::White) {
                Colour::Grey => {
                    let from = trail.iter().position(|t| t == next).unwrap();
                    let mut cycle = trail[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Colour::White => {
                    if let Some(cycle) = visit(next, graph, colour, trail) {
                        return Some(cycle);
                    }
                }
                Colour::Black => {}
            }
        }
        trail.pop();
        colour.insert(m.clone(), Colour::Black);
        None
    }
    let mut colour = BTreeMap::new();
    for m in graph.keys() {
        if colour.get(m).copied().unwrap_or(Colour::White) == Colour::White
            && let Some(cycle) = visit(m, &graph, &mut colour, &mut Vec::new())
        {
            let names: Vec<String> = cycle.iter().map(|m| name(m)).collect();
            panic!("import cycle: {}", names.join(" → "));
        }
    }
}

#[test]
fn no_source_file_is_over_800_lines() {
    let krate = src();
    let long: Vec<String> = krate
        .modules
        .iter()
        .filter(|(m, _)| m.last().is_none_or(|l| l != "tests"))
        .filter_map(|(_, path)| {
            let lines = std::fs::read_to_string(path).unwrap().lines().count();
            (lines > MAX_LINES).then(|| format!("{}: {lines} lines", path.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

/// The checks above must be able to fail: they see the imports this file knows are there.
#[test]
fn the_checks_see_known_imports() {
    let krate = src();
    let targets = krate.imports(&["targets".to_string()]);
    assert!(targets.contains(&vec!["elb".to_string()]), "{targets:?}");
    assert!(
        targets.contains(&vec!["objects".to_string()]),
        "{targets:?}"
    );
    // A room's own wiring is not an edge: audit/shell.rs imports its parent.
    let shell = krate.imports(&["audit".to_string(), "shell".to_string()]);
    assert!(!shell.contains(&vec!["audit".to_string()]), "{shell:?}");
    assert!(shell.contains(&vec!["cli".to_string()]), "{shell:?}");
    assert_eq!(
        expand("crate::a::{b@x,c::{d,e},f::self}"),
        [
            "crate::a::b",
            "crate::a::c::d",
            "crate::a::c::e",
            "crate::a::f"
        ]
    );
    // A higher-floor import would be caught.
    assert!(floor(&["webhook".to_string()]) > floor(&["inject".to_string()]));
    assert_eq!(floor(&["nothing_like_this".to_string()]), None);
}
