//! The rooms of `src/` depend on each other one way only (README, "A tour of the code"):
//! `arch` and `console` on nothing of ours, `devices` on those two, `loader` on `arch`, `config`
//! on `arch` and `loader`, `vmm` on all of them, the GDB stub (`gdb`) on `vmm` and what is below
//! it, the terminal only on the console, and the `--tui`/`--display` view on the rooms below the
//! stub. This test reads the sources and fails on any `crate::` path that goes the wrong way.
//!
//! Inside a room, files may use each other, but never in a circle: the second test follows every
//! `super::` and `crate::` path from one module to a sibling (two files of one directory, or
//! two subdirectories) and fails on any cycle, at any depth (`vmm/vcpu.rs` using `vcpus.rs`
//! while `vcpus.rs` uses `vcpu.rs` is one).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Each room, and the rooms it may use.
const ALLOWED: &[(&str, &[&str])] = &[
    ("arch", &[]),
    ("console", &[]),
    ("devices", &["arch", "console"]),
    ("loader", &["arch"]),
    ("config", &["arch", "loader"]),
    ("vmm", &["arch", "config", "console", "devices", "loader"]),
    ("gdb", &["arch", "config", "console", "vmm"]),
    ("terminal", &["console"]),
    ("output_file", &[]),
    ("tui", &["config", "console", "devices", "vmm"]),
];

/// The `.rs` files of a room: `src/NAME.rs` or everything under `src/NAME/`.
fn sources(room: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let file = src.join(format!("{room}.rs"));
    if file.exists() {
        return vec![file];
    }
    let mut found = Vec::new();
    let mut dirs = vec![src.join(room)];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found
}

/// The rooms a source names as `crate::ROOM`.
fn rooms_used(text: &str) -> BTreeSet<String> {
    text.match_indices("crate::")
        .map(|(at, _)| {
            text[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn every_room_uses_only_the_rooms_below_it() {
    let mut wrong = Vec::new();
    for (room, allowed) in ALLOWED {
        let files = sources(room);
        assert!(!files.is_empty(), "no sources for {room}");
        for file in files {
            let text = fs::read_to_string(&file).unwrap();
            for used in rooms_used(&text) {
                if used != *room && !allowed.contains(&used.as_str()) {
                    wrong.push(format!("{} uses crate::{used}", file.display()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_a_wrong_way_import() {
    let used = rooms_used("use crate::vmm::memory;\nuse crate::arch::x86::layout;");
    assert_eq!(
        used,
        BTreeSet::from(["arch".to_string(), "vmm".to_string()])
    );
}

/// A module's path from the crate root: `src/vmm/vcpu.rs` is `["vmm", "vcpu"]`,
/// `src/devices/virtio/mod.rs` is `["devices", "virtio"]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut path: Vec<String> = relative
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect();
    if path.last().is_some_and(|last| last == "mod") {
        path.pop();
    }
    path
}

/// The paths a source names, made absolute: `crate::a::b` as `[a, b]`, and `super::x` (also
/// `super::super::x`) from the module `from`. Each path goes on to its last identifier, which
/// may be an item rather than a module: the caller keeps what is a module.
fn paths_used(from: &[String], text: &str) -> Vec<Vec<String>> {
    let identifier = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut found = Vec::new();
    for (at, _) in text
        .match_indices("crate::")
        .chain(text.match_indices("super::"))
    {
        // `super::` inside a longer name, or the second `super::` of `super::super::`.
        let before = text[..at].chars().next_back();
        if before.is_some_and(identifier) || text[..at].ends_with("super::") {
            continue;
        }
        let mut rest = &text[at..];
        let mut path: Vec<String> = Vec::new();
        if let Some(after) = rest.strip_prefix("crate::") {
            rest = after;
        } else {
            // A module's `super` is its parent.
            path = from.to_vec();
            while let Some(after) = rest.strip_prefix("super::") {
                path.pop();
                rest = after;
            }
        }
        use_tree(path, rest, &mut found);
    }
    found
}

/// The paths of a use tree that starts at `text`, after `prefix`: `a::b::C`, or a group
/// `{a::B, c::{D, E}}`, each path into `found`.
fn use_tree(mut prefix: Vec<String>, mut text: &str, found: &mut Vec<Vec<String>>) {
    let identifier = |c: char| c.is_ascii_alphanumeric() || c == '_';
    loop {
        if let Some(group) = text.strip_prefix('{') {
            // Split the group at its own commas (not those of a nested group).
            let mut depth = 0;
            let mut start = 0;
            for (at, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        use_tree(prefix.clone(), group[start..at].trim_start(), found);
                        return;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        use_tree(prefix.clone(), group[start..at].trim_start(), found);
                        start = at + 1;
                    }
                    _ => {}
                }
            }
            return;
        }
        let name: String = text.chars().take_while(|&c| identifier(c)).collect();
        if name.is_empty() {
            break;
        }
        text = &text[name.len()..];
        if name != "self" {
            prefix.push(name);
        }
        match text.strip_prefix("::") {
            Some(after) => text = after,
            None => break,
        }
    }
    found.push(prefix);
}

/// Is `path` a module of the crate (a file `src/PATH.rs` or a directory `src/PATH/`)?
fn is_module(src: &Path, path: &[String]) -> bool {
    let joined: PathBuf = path.iter().collect();
    src.join(&joined).with_extension("rs").is_file() || src.join(&joined).is_dir()
}

/// The uses between siblings: (parent, from, to) when a module inside `parent/from` names one
/// inside `parent/to`. A module naming its own ancestor or descendant is not a sibling use.
fn sibling_uses(src: &Path, files: &[PathBuf]) -> BTreeSet<(Vec<String>, String, String)> {
    let mut uses = BTreeSet::new();
    for file in files {
        let from = module_path(src, file);
        if from.is_empty() {
            continue; // lib.rs and main.rs: the root uses everything.
        }
        let text = fs::read_to_string(file).unwrap();
        for used in paths_used(&from, &text) {
            let common = from.iter().zip(&used).take_while(|(a, b)| a == b).count();
            if common >= from.len() || common >= used.len() {
                continue;
            }
            let parent = &used[..common];
            let sibling = [parent, &used[common..=common]].concat();
            if is_module(src, &sibling) {
                uses.insert((parent.to_vec(), from[common].clone(), used[common].clone()));
            }
        }
    }
    uses
}

/// A cycle among the sibling uses, as the names around it, if there is one.
fn find_cycle(uses: &BTreeSet<(Vec<String>, String, String)>) -> Option<Vec<String>> {
    fn visit(
        node: &(Vec<String>, String),
        uses: &BTreeSet<(Vec<String>, String, String)>,
        trail: &mut Vec<(Vec<String>, String)>,
        done: &mut BTreeSet<(Vec<String>, String)>,
    ) -> Option<Vec<String>> {
        if let Some(at) = trail.iter().position(|seen| seen == node) {
            let mut cycle: Vec<String> = trail[at..]
                .iter()
                .map(|(parent, name)| {
                    [parent.as_slice(), std::slice::from_ref(name)]
                        .concat()
                        .join("/")
                })
                .collect();
            cycle.push(cycle[0].clone());
            return Some(cycle);
        }
        if !done.insert(node.clone()) {
            return None;
        }
        trail.push(node.clone());
        for (parent, from, to) in uses {
            if *parent == node.0 && *from == node.1 {
                let next = (parent.clone(), to.clone());
                if let Some(cycle) = visit(&next, uses, trail, done) {
                    return Some(cycle);
                }
            }
        }
        trail.pop();
        None
    }
    let mut done = BTreeSet::new();
    for (parent, from, _) in uses {
        let node = (parent.clone(), from.clone());
        // (`done` marks a node once its whole search has started: a cycle through it was found
        // then, if there was one.)
        if let Some(cycle) = visit(&node, uses, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

fn all_sources(src: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn no_files_of_a_room_use_each_other_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let uses = sibling_uses(&src, &all_sources(&src));
    // The checker sees the uses it must: vcpus.rs starts the run loops of vcpu.rs.
    assert!(uses.contains(&(
        vec!["vmm".to_string()],
        "vcpus".to_string(),
        "vcpu".to_string()
    )));
    if let Some(cycle) = find_cycle(&uses) {
        panic!("modules that use each other: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_checker_sees_super_paths_and_cycles() {
    let from = ["vmm".to_string(), "vcpu".to_string()];
    let paths = paths_used(
        &from,
        "use super::vcpus::{VcpuControl};\nuse crate::arch::x86::modes::RFLAGS_IF;\n\
         mod tests { use super::*; }\nuse super::super::loader;\n\
         use super::{exit::{self, VmExit}, stats};",
    );
    let path = |parts: &[&str]| parts.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    assert!(paths.contains(&path(&["vmm", "vcpus", "VcpuControl"])));
    assert!(paths.contains(&path(&["arch", "x86", "modes", "RFLAGS_IF"])));
    assert!(paths.contains(&path(&["loader"])));
    assert!(paths.contains(&path(&["vmm", "exit", "VmExit"])));
    assert!(paths.contains(&path(&["vmm", "exit"])));
    assert!(paths.contains(&path(&["vmm", "stats"])));
    let vmm = || vec!["vmm".to_string()];
    let mut uses = BTreeSet::from([
        (vmm(), "vcpus".to_string(), "vcpu".to_string()),
        (vmm(), "vm".to_string(), "vcpus".to_string()),
    ]);
    assert_eq!(find_cycle(&uses), None);
    uses.insert((vmm(), "vcpu".to_string(), "vcpus".to_string()));
    assert_eq!(
        find_cycle(&uses),
        Some(path(&["vmm/vcpu", "vmm/vcpus", "vmm/vcpu"]))
    );
}
