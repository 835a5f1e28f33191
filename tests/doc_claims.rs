//! Claims in the docs, the help texts and the source comments that go stale when the code moves
//! on, checked against the thing they describe:
//!
//! * every repository path that the docs, the book, the guests' sources and the code's comments
//!   name (`src/vmm/vcpu.rs`, `guests/real/hello.S`, `tests/gdb.rs`, ...) exists;
//! * the exit counts of `hello` that the README, `run --help`, `hello.S` and docs/kvm-api.md
//!   give are the ones a real `--stats` run counts, with and without `--no-coalesce`;
//! * docs/README.md lists every page of docs/ once, in its reading order or among the
//!   maintainers' pages.
//!
//! It reads the sources, so the hardware-KVM rig leaves it out (tests/hw-kvm/run, `host_only`).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{mini_kvm, require_kvm, total_exits};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The files whose text names repository paths: the docs and the book, and every source file
/// (its comments) of mini-kvm, its examples, its tests and its guests.
fn files_that_name_paths() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy();
            if path.is_dir() {
                // Build output, not sources.
                if name != "target" && name != "build" {
                    walk(&path, found);
                }
            } else if [".md", ".rs", ".S", ".inc", ".ld"]
                .iter()
                .any(|ext| name.ends_with(ext))
            {
                found.push(path);
            }
        }
    }
    let mut found = vec![repo().join("README.md"), repo().join("build.rs")];
    for dir in [
        "docs", "book", "src", "guests", "examples", "tests", "benches",
    ] {
        walk(&repo().join(dir), &mut found);
    }
    found.sort();
    found
}

/// The top-level directories a path named in the text can start with.
const ROOTS: [&str; 7] = [
    "src/",
    "guests/",
    "tests/",
    "examples/",
    "docs/",
    "book/",
    "benches/",
];

/// Paths that are not files of the repository but start like them: QEMU's specification of
/// fw_cfg, and the directory a learner's own `cargo build` of the teaching OS makes.
const ELSEWHERE: [&str; 2] = ["docs/specs/fw_cfg.rst", "guests/os/target"];

/// The repository paths that `text` names: words that start with one of `ROOTS` (not in the
/// middle of a longer path), without the punctuation after them. Patterns and placeholders
/// (`guests/real/*.S`, `examples/stepNN_NAME.rs`, `tests/FILE.rs`) are not paths. In Markdown,
/// fenced blocks are left out: they show commands and program output, where `src/` may be a
/// directory of the reader's or of a guest's.
fn named_paths(text: &str, markdown: bool) -> Vec<(usize, String)> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "_./-".contains(c);
    let mut found = Vec::new();
    let mut in_block = false;
    for (index, line) in text.lines().enumerate() {
        if markdown && line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            continue;
        }
        for root in ROOTS {
            for (at, _) in line.match_indices(root) {
                if line[..at].chars().next_back().is_some_and(is_path_char) {
                    continue;
                }
                let rest = &line[at..];
                let end = rest.find(|c: char| !is_path_char(c)).unwrap_or(rest.len());
                let path = rest[..end].trim_end_matches(['.', '-']);
                let placeholder = rest[end..].starts_with(['*', '{'])
                    || path.contains("NAME")
                    || path.contains("NN")
                    || path.contains("FILE")
                    || path.contains("PATH");
                if !placeholder && path.len() > root.len() && !ELSEWHERE.contains(&path) {
                    found.push((index + 1, path.to_string()));
                }
            }
        }
    }
    found
}

#[test]
fn every_path_named_in_the_docs_and_the_comments_exists() {
    let mut missing = Vec::new();
    let mut checked = 0;
    for file in files_that_name_paths() {
        let name = file.strip_prefix(repo()).unwrap().display().to_string();
        if name == "tests/doc_claims.rs" {
            continue; // its own test cases
        }
        let markdown = name.ends_with(".md");
        for (line, path) in named_paths(&read(&file), markdown) {
            // From the repository's root; or from the teaching OS's, a crate of its own whose
            // files are named from its root (`src/kernel/boot.rs`); or from the file's own
            // directory (book/README.md names `src/SUMMARY.md`).
            // A guest's image (`guests/real/hello.bin`) is built from its source.
            let source = path
                .strip_suffix(".bin")
                .or_else(|| path.strip_suffix(".elf"))
                .map(|stem| format!("{stem}.S"));
            let exists = [repo(), &repo().join("guests/os"), file.parent().unwrap()]
                .iter()
                .any(|base| {
                    base.join(&path).exists()
                        || source
                            .as_ref()
                            .is_some_and(|source| base.join(source).exists())
                });
            if !exists {
                missing.push(format!("{name}:{line}: {path}"));
            }
            checked += 1;
        }
    }
    assert!(
        missing.is_empty(),
        "paths named in the docs or comments that do not exist:\n{}",
        missing.join("\n")
    );
    assert!(checked > 300, "only {checked} paths found");
}

#[test]
fn the_path_finder_finds_paths_and_only_paths() {
    let text = "See src/vmm/vcpu.rs, `guests/real/hello.S` and (tests/gdb.rs).\n\
                Not guests/real/*.S, examples/stepNN_NAME.rs, /rig/tests/faults or \
                test-guests/x.bin.\n```\ncat src/main.c\n```\nAnd docs/gdb.md.\n";
    let found: Vec<String> = named_paths(text, true)
        .into_iter()
        .map(|(line, path)| format!("{line}:{path}"))
        .collect();
    assert_eq!(
        found,
        [
            "1:src/vmm/vcpu.rs",
            "1:guests/real/hello.S",
            "1:tests/gdb.rs",
            "6:docs/gdb.md"
        ]
    );
    // In a source file there are no fenced blocks.
    assert_eq!(
        named_paths("```\nsrc/a.rs\n```", false),
        [(2, "src/a.rs".into())]
    );
}

/// `hello`'s VM exits as `--stats` counts them: (coalesced, with `--no-coalesce`).
fn hello_exits() -> (u64, u64) {
    require_kvm();
    let count = |args: &[&str]| {
        let run = mini_kvm(args, b"");
        assert_eq!(run.status, 0, "{run:?}");
        assert_eq!(run.stdout, b"Hello, KVM!\n", "{run:?}");
        total_exits(&run.stderr)
    };
    (
        count(&["run", "--stats", "hello"]),
        count(&["run", "--stats", "--no-coalesce", "hello"]),
    )
}

#[test]
fn the_exit_counts_of_hello_are_the_real_ones() {
    let (coalesced, plain) = hello_exits();
    // One exit per byte of "Hello, KVM!\n" and one for EXIT; coalesced, the first byte and EXIT.
    assert_eq!((coalesced, plain), (2, 13));

    let help = mini_kvm(&["run", "--help"], b"");
    assert_eq!(help.status, 0, "{help:?}");
    let claims = [
        (
            "mini-kvm run --help".to_string(),
            help.stdout_text(),
            format!("hello counts {plain} exits instead of {coalesced})"),
        ),
        (
            "README.md".into(),
            read(&repo().join("README.md")),
            format!("(`hello`: {coalesced} exits instead of {plain};"),
        ),
        (
            "README.md".into(),
            read(&repo().join("README.md")),
            format!(
                "({coalesced} exits: the first byte, then `EXIT`; {plain} with `--no-coalesce`)"
            ),
        ),
        (
            "guests/real/hello.S".into(),
            read(&repo().join("guests/real/hello.S")),
            format!("the EXIT hypercall = {plain} VM exits."),
        ),
        (
            "guests/real/hello.S".into(),
            read(&repo().join("guests/real/hello.S")),
            format!("the EXIT hypercall: {coalesced} VM exits"),
        ),
        (
            "docs/kvm-api.md".into(),
            read(&repo().join("docs/kvm-api.md")),
            format!("`hello` needs {coalesced} exits instead of {plain}"),
        ),
        (
            "docs/kvm-api.md".into(),
            read(&repo().join("docs/kvm-api.md")),
            format!("one `EXIT` hypercall as {plain} `KVM_RUN`s"),
        ),
        (
            "src/vmm/coalesced.rs".into(),
            read(&repo().join("src/vmm/coalesced.rs")),
            format!("{coalesced} exits instead of {plain}."),
        ),
    ];
    for (place, text, claim) in claims {
        // Comments and Markdown wrap lines: compare with the line breaks as spaces.
        let flat: String = text
            .lines()
            .map(|line| line.trim_start_matches(['#', '/', '!', ' ']))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(flat.contains(&claim), "{place} does not say: {claim}");
    }
}

/// docs/README.md is the way into docs/: every page there is in its reading order or among the
/// maintainers' pages, once, and nothing else is.
#[test]
fn the_docs_index_lists_every_page_once() {
    let index = read(&repo().join("docs/README.md"));
    let (order, maintainers) = index
        .split_once("\n## For maintainers\n")
        .expect("docs/README.md has a \"For maintainers\" section");
    let order = order
        .split_once("\n## Reading order\n")
        .expect("docs/README.md has a \"Reading order\" section")
        .1;
    // "1. [kvm-api.md](kvm-api.md): ..." and "- [testing.md](testing.md): ...".
    let pages = |section: &str, marker: fn(&str) -> bool| -> Vec<String> {
        section
            .lines()
            .filter(|line| marker(line))
            .filter_map(|line| line.split_once("](")?.1.split_once(')'))
            .map(|(target, _)| target.to_string())
            .collect()
    };
    let mut listed = pages(order, |line| {
        line.split_once(". [")
            .is_some_and(|(number, _)| number.parse::<u32>().is_ok())
    });
    assert!(!listed.is_empty(), "no numbered reading order");
    listed.extend(pages(maintainers, |line| line.starts_with("- [")));
    let mut on_disk: Vec<String> = fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md") && name != "README.md")
        .collect();
    on_disk.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, on_disk, "docs/README.md lists {listed:?}");
}
