//! The rooms of `src/` depend on each other one way only (README, "A tour of the code"):
//! `arch` and `console` on nothing of ours, `devices` on those two, `loader` on `arch`, `config`
//! on `arch` and `loader`, `vmm` on all of them, the GDB stub (`gdb`) on `vmm` and what is below
//! it, the terminal only on the console, and the `--tui`/`--display` view on the rooms below the
//! stub. This test reads the sources and fails on any `crate::` path that goes the wrong way.

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
