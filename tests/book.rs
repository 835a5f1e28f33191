//! The book (`book/src/`) is tested like the code it teaches:
//!
//! * each step (`examples/stepNN_*.rs`) runs on the real `/dev/kvm` and prints exactly what the
//!   table below says, with the exit status it says;
//! * each transcript in the book is the real output of its command (the format is below);
//! * each "Where mini-kvm does this" pointer names a file that exists and a function it defines;
//! * each line count the book prints ("`examples/step01_first_exit.rs`, 114 lines") is true;
//! * each relative link in the book, and the README's links into it, lead to a file that exists.
//!
//! **Transcripts.** A fenced block whose info string is `console` is a transcript. A line that
//! starts with `$ ` is a command; the lines after it, up to the next command or the end of the
//! block, are its output (stdout), compared line by line. The one command a transcript may run
//! is `cargo run --quiet --example NAME`, which the test runs as the example binary cargo has
//! built. Where the output varies from run to run, the book writes `…` (U+2026): in an expected
//! line, it stands for any text within that line. Any other command fails the test, and so does
//! a `$ ` line in any other kind of block, so that nothing shown as a transcript goes unchecked.
//! A step that needs hardware KVM (Step 9 boots Linux) runs in the rig instead: its chapter's
//! block is ```` ```console,tested-by=tests/FILE.rs ````, whose command may give the example
//! arguments; here FILE must exist and name the chapter, and FILE's test runs the command and
//! compares the lines.
//!
//! Each step's chapter also has the book's shape: the concept, the step, what you should see,
//! what to read, where mini-kvm does this, and exercises graded easy, medium and hard.
//!
//! The steps are built by `cargo build --examples`, which a full `cargo test` does on its way.
//! With `cargo test --test book` alone, build them first: a step older than its source fails
//! the test instead of testing stale code.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One step of the book: its example, the chapter that teaches it, and what it prints.
struct Step {
    name: &'static str,
    chapter: &'static str,
    stdout: &'static str,
    status: i32,
    /// For a step that needs hardware KVM (booting Linux): the test that runs it in the rig
    /// (tests/hw-kvm/run), which the chapter's transcript names
    /// (```` ```console,tested-by=tests/FILE.rs ````). Its `stdout` and `status` are that
    /// test's to check; here its chapter is checked like the others.
    rig_only: Option<&'static str>,
}

const STEPS: &[Step] = &[
    Step {
        name: "step01_first_exit",
        chapter: "ch01-first-exit.md",
        stdout: "\
[vmm] VM exit: KVM_EXIT_HLT at 1000:0007
[vmm] the guest left AX = 42
",
        status: 0,
        rig_only: None,
    },
    Step {
        name: "step02_port_io",
        chapter: "ch02-port-io.md",
        stdout: "\
Hello from port I/O!
42
[vmm] the guest called EXIT(0) after 45 VM exits
",
        status: 0,
        rig_only: None,
    },
    Step {
        name: "step03_guest_memory",
        chapter: "ch03-guest-memory.md",
        stdout: "\
[vmm] guest-physical memory:
[vmm]   0x00000-0x1ffff  128 KiB  slot 0, RAM: the program at 0x10000, its stack
[vmm]   0x20000-0x2ffff   64 KiB  no slot: an access is an MMIO exit
[vmm]   0x30000-0x30fff    4 KiB  slot 1, RAM
Hello from slot 1!
[vmm] MMIO write at 0x20000: [58], dropped
[vmm] MMIO read at 0x20000: answered [ff]
255
[vmm] the guest called EXIT(0) after 6 VM exits
",
        status: 0,
        rig_only: None,
    },
    Step {
        name: "step04_protected_mode",
        chapter: "ch04-protected-mode.md",
        stdout: "\
[vmm] vCPU 0: CR0 = 0x11, CS = 0x08 (base 0x0, limit 0xffffffff, 32-bit), EIP = 0x10000
[vmm] guest-physical memory:
[vmm]   0x000000-0x01ffff  128 KiB  slot 0, RAM: the GDT at 0x1000, the program at 0x10000
[vmm]   0x020000-0x0fffff  896 KiB  no slot: an access is an MMIO exit
[vmm]   0x100000-0x100fff    4 KiB  slot 1, RAM: above 1 MiB, out of real mode's reach
Hello from protected mode, at 1 MiB!
4000000000
[vmm] the guest called EXIT(0) after 4 VM exits
",
        status: 0,
        rig_only: None,
    },
    Step {
        name: "step05_long_mode",
        chapter: "ch05-long-mode.md",
        stdout: "\
[vmm] vCPU 0: CR0 = 0x80000011, CR3 = 0x2000, CR4 = 0x20, EFER = 0x500
[vmm] vCPU 0: CS = 0x08 (64-bit), RIP = 0x10000
[vmm] guest-physical memory:
[vmm]   0x000000-0x01ffff  128 KiB  slot 0, RAM: GDT 0x1000, page tables 0x2000, program 0x10000
[vmm]   0x020000-0x0fffff  896 KiB  no slot: an access is an MMIO exit
[vmm]   0x100000-0x100fff    4 KiB  slot 1, RAM: also at virtual 0x40100000
[vmm] WRITE: virtual 0x40100000 is guest-physical 0x100000
Hello from long mode, through the alias at 1 GiB!
10000000000000000000
[vmm] the guest called EXIT(0) after 4 VM exits
",
        status: 0,
        rig_only: None,
    },
    Step {
        name: "step06_interrupts",
        chapter: "ch06-interrupts.md",
        stdout: "\
[vmm] in the kernel: PIC, IOAPIC, local APIC (KVM_CREATE_IRQCHIP), PIT (KVM_CREATE_PIT2)
[vmm] vCPU 0: CR0 = 0x80000011, CR3 = 0x2000, CR4 = 0x20, EFER = 0x500
[vmm] vCPU 0: CS = 0x08 (64-bit), RIP = 0x10000
[vmm] guest-physical memory:
[vmm]   0x000000-0x01ffff  128 KiB  slot 0, RAM: GDT 0x1000, page tables 0x2000, IDT 0x5000
[vmm]   0x020000-0x0fffff  896 KiB  no slot: an access is an MMIO exit
[vmm]   0x100000-0x100fff    4 KiB  slot 1, RAM: also at virtual 0x40100000
1
2
3
4
5
[vmm] the guest called EXIT(0) after 11 VM exits
",
        status: 0,
        rig_only: None,
    },
    Step {
        name: "step07_smp",
        chapter: "ch07-smp.md",
        stdout: "\
[vmm] in the kernel: PIC, IOAPIC, a local APIC per vCPU (KVM_CREATE_IRQCHIP)
[vmm] vCPU 0: CR0 = 0x80000011, CR3 = 0x2000, CR4 = 0x20, EFER = 0x500
[vmm] vCPU 0: CS = 0x08 (64-bit), RIP = 0x10000
[vmm] vCPU 1: MP state UNINITIALIZED, waits for INIT and STARTUP
[vmm] guest-physical memory:
[vmm]   0x000000-0x01ffff  128 KiB  slot 0, RAM: GDT 0x1000, page tables 0x2000, AP 0x8000
[vmm]   0x020000-0x0fffff  896 KiB  no slot: an access is an MMIO exit
[vmm]   0x100000-0x100fff    4 KiB  slot 1, RAM: also at virtual 0x40100000
0
1
[vmm] vCPU 0 called EXIT(0) after 3 VM exits
[vmm] vCPU 1 called EXIT(0) after 3 VM exits
",
        status: 0,
        rig_only: None,
    },
    Step {
        name: "step09_linux",
        chapter: "ch09-linux.md",
        stdout: "",
        status: 0,
        rig_only: Some("tests/book_linux.rs"),
    },
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn book_src() -> PathBuf {
    repo().join("book/src")
}

/// Every Markdown file of the book, in a stable order.
fn chapters() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(book_src())
        .expect("book/src exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no chapters in book/src");
    files
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The example binary of step `name`, built by cargo next to the mini-kvm binary
/// (target/<triple>/debug/examples/), and not older than its source.
fn step_binary(name: &str) -> PathBuf {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_mini-kvm")).parent().unwrap();
    let binary = bin_dir.join("examples").join(name);
    let source = repo().join("examples").join(format!("{name}.rs"));
    let modified = |path: &Path| fs::metadata(path).and_then(|m| m.modified()).ok();
    let (Some(built), Some(written)) = (modified(&binary), modified(&source)) else {
        panic!(
            "{} is not built: run `cargo build --examples` (a full `cargo test` does)",
            binary.display()
        );
    };
    assert!(
        built >= written,
        "{} is older than {}: run `cargo build --examples` first",
        binary.display(),
        source.display()
    );
    binary
}

fn run_step(name: &str) -> common::Run {
    common::require_kvm();
    common::mini_kvm_with(&mut Command::new(step_binary(name)), b"")
}

#[test]
fn every_step_prints_exactly_its_output() {
    for step in STEPS.iter().filter(|step| step.rig_only.is_none()) {
        let run = run_step(step.name);
        assert_eq!(run.stdout_text(), step.stdout, "{}: {run:?}", step.name);
        assert_eq!(run.status, step.status, "{}: {run:?}", step.name);
        assert_eq!(run.stderr, "", "{}: {run:?}", step.name);
    }
}

#[test]
fn the_steps_are_all_in_the_table() {
    let mut found: Vec<String> = fs::read_dir(repo().join("examples"))
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let stem = name.strip_suffix(".rs")?;
            stem.starts_with("step").then(|| stem.to_string())
        })
        .collect();
    found.sort();
    let listed: Vec<&str> = STEPS.iter().map(|step| step.name).collect();
    assert_eq!(
        found, listed,
        "examples/step*.rs and the STEPS table differ"
    );
}

/// A transcript: a command and the output the book shows for it.
#[derive(Debug)]
struct Transcript {
    file: String,
    line: usize,
    command: String,
    output: Vec<String>,
    /// `console,tested-by=tests/FILE.rs`: the test that runs this one (in the rig).
    tested_by: Option<String>,
}

/// The transcripts of one Markdown text (the format is at the top of this file).
fn transcripts(file: &str, text: &str) -> Vec<Transcript> {
    let mut found: Vec<Transcript> = Vec::new();
    let mut in_console = false;
    let mut in_other_block = false;
    let mut tested_by: Option<String> = None;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            if in_console || in_other_block {
                (in_console, in_other_block) = (false, false);
            } else if trimmed == "```console" {
                in_console = true;
                tested_by = None;
            } else if let Some(test) = trimmed.strip_prefix("```console,tested-by=") {
                in_console = true;
                tested_by = Some(test.to_string());
            } else {
                in_other_block = true;
            }
            continue;
        }
        if !in_console {
            // A command with its output outside a console block would go unchecked.
            assert!(
                !(in_other_block && line.starts_with("$ ")),
                "{file}:{}: a `$ ` command outside a ```console block",
                index + 1
            );
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            found.push(Transcript {
                file: file.to_string(),
                line: index + 1,
                command: command.to_string(),
                output: Vec::new(),
                tested_by: tested_by.clone(),
            });
        } else {
            let current = found.last_mut().unwrap_or_else(|| {
                panic!(
                    "{file}:{}: a console block must start with a `$ ` command",
                    index + 1
                )
            });
            current.output.push(line.to_string());
        }
    }
    assert!(!in_console, "{file}: a console block is not closed");
    found
}

/// Whether `actual` is what the book shows as `expected`, where `…` stands for any text.
fn line_matches(expected: &str, actual: &str) -> bool {
    let pieces: Vec<&str> = expected.split('…').collect();
    let (first, rest) = pieces.split_first().unwrap();
    let Some(mut remaining) = actual.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for piece in middle {
        match remaining.find(piece) {
            Some(at) => remaining = &remaining[at + piece.len()..],
            None => return false,
        }
    }
    remaining.ends_with(last)
}

/// The example a transcript's command runs; any other command is an error. A transcript that
/// its own test runs may give the example arguments (`-- ARGS`).
fn transcript_step(transcript: &Transcript) -> &str {
    let command = match &transcript.tested_by {
        Some(_) => transcript.command.split(" -- ").next().unwrap(),
        None => &transcript.command,
    };
    command
        .strip_prefix("cargo run --quiet --example ")
        .filter(|name| !name.contains(' '))
        .unwrap_or_else(|| {
            panic!(
                "{}:{}: `{}`: a transcript may only run `cargo run --quiet --example NAME`",
                transcript.file, transcript.line, transcript.command
            )
        })
}

#[test]
fn every_transcript_is_the_real_output() {
    let mut checked = 0;
    for path in chapters() {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for transcript in transcripts(&file, &read(&path)) {
            if let Some(test) = &transcript.tested_by {
                // Its test runs it and compares the lines: that test must exist and read this
                // chapter.
                let source = fs::read_to_string(repo().join(test)).unwrap_or_else(|_| {
                    panic!(
                        "{file}:{}: tested by {test}, which does not exist",
                        transcript.line
                    )
                });
                assert!(
                    source.contains(&format!("book/src/{file}")),
                    "{file}:{}: {test} does not name book/src/{file}",
                    transcript.line
                );
                transcript_step(&transcript);
                continue;
            }
            let run = run_step(transcript_step(&transcript));
            let actual: Vec<String> = run.stdout_text().lines().map(String::from).collect();
            let same = actual.len() == transcript.output.len()
                && transcript
                    .output
                    .iter()
                    .zip(&actual)
                    .all(|(expected, actual)| line_matches(expected, actual));
            assert!(
                same,
                "{}:{}: `{}` printed\n{}\nbut the book shows\n{}",
                transcript.file,
                transcript.line,
                transcript.command,
                actual.join("\n"),
                transcript.output.join("\n")
            );
            checked += 1;
        }
    }
    // Each step's chapter shows it running (a rig-only step, in a transcript its test runs).
    for step in STEPS {
        let chapter = book_src().join(step.chapter);
        let shown = transcripts(step.chapter, &read(&chapter))
            .iter()
            .any(|transcript| {
                transcript_step(transcript) == step.name
                    && transcript.tested_by.as_deref() == step.rig_only
            });
        assert!(shown, "{} has no transcript of {}", step.chapter, step.name);
    }
    let here = STEPS.iter().filter(|step| step.rig_only.is_none()).count();
    assert!(checked >= here, "only {checked} transcripts");
}

#[test]
fn the_transcript_format_catches_differences() {
    let text = "Intro.\n\n```console\n$ cargo run --quiet --example step01_first_exit\n\
                one\ntwo … three\n```\n\n```sh\ncargo build  # not a transcript\n```\n";
    let found = transcripts("t.md", text);
    let hidden = std::panic::catch_unwind(|| transcripts("t.md", "```text\n$ ls\n```\n"));
    assert!(
        hidden.is_err(),
        "a $ command in a text block must be refused"
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].line, 4);
    assert_eq!(transcript_step(&found[0]), "step01_first_exit");
    assert_eq!(found[0].output, ["one", "two … three"]);
    assert!(line_matches("two … three", "two and three"));
    assert!(line_matches("two … three", "two  three"));
    assert!(!line_matches("two … three", "two and four"));
    assert!(!line_matches("one", "one more"));
    assert!(!line_matches("one", "on"));
    assert!(line_matches("a…b…c", "a1b2c"));
    assert!(!line_matches("a…b…c", "a1c2b"));
    let rig = "```console,tested-by=tests/x.rs\n$ cargo run --quiet --example s -- a b\nout\n```\n";
    let found = transcripts("t.md", rig);
    assert_eq!(found[0].tested_by.as_deref(), Some("tests/x.rs"));
    assert_eq!(transcript_step(&found[0]), "s");
}

/// The pointers of a chapter's "Where mini-kvm does this" section: (file, function) pairs,
/// written as `` `src/vmm/vm.rs`, `Vm::create` `` (or a plain `` `fn_name` ``).
fn pointers(text: &str) -> Vec<(String, String)> {
    let Some(start) = text.find("\n## Where mini-kvm does this") else {
        return Vec::new();
    };
    let section = &text[start + 1..];
    let section = match section[3..].find("\n## ") {
        Some(end) => &section[..end + 3],
        None => section,
    };
    let mut found = Vec::new();
    for line in section.lines() {
        // "- `FILE`, `FUNCTION`: what it does"
        let Some(rest) = line.strip_prefix("- `") else {
            continue;
        };
        let (file, rest) = rest.split_once('`').unwrap();
        let function = rest
            .strip_prefix(", `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(function, _)| function)
            .unwrap_or_else(|| panic!("a pointer without a function: {line}"));
        found.push((file.to_string(), function.to_string()));
    }
    found
}

#[test]
fn every_pointer_into_mini_kvm_is_real() {
    let mut checked = 0;
    for step in STEPS {
        let text = read(&book_src().join(step.chapter));
        let found = pointers(&text);
        assert!(
            !found.is_empty(),
            "{} has no pointers under \"## Where mini-kvm does this\"",
            step.chapter
        );
        for (file, function) in found {
            let source = fs::read_to_string(repo().join(&file)).unwrap_or_else(|_| {
                panic!("{}: points at {file}, which does not exist", step.chapter)
            });
            // `Type::method`: the file has `impl Type` (or `impl Trait for Type`) and the fn.
            let (owner, name) = match function.rsplit_once("::") {
                Some((owner, name)) => (Some(owner), name),
                None => (None, function.as_str()),
            };
            let defines = |needle: &str| {
                source.contains(&format!("{needle}(")) || source.contains(&format!("{needle}<"))
            };
            assert!(
                defines(&format!("fn {name}")),
                "{}: {file} defines no fn {name}",
                step.chapter
            );
            if let Some(owner) = owner {
                assert!(
                    source.contains(&format!("impl {owner} "))
                        || source.contains(&format!(" for {owner} "))
                        || source.contains(&format!("impl {owner}<")),
                    "{}: {file} has no impl of {owner}",
                    step.chapter
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= STEPS.len());
}

#[test]
fn every_printed_line_count_is_true() {
    let mut checked = 0;
    for path in chapters() {
        let text = read(&path);
        // "`examples/NAME.rs`, 114 lines"
        for (at, _) in text.match_indices("`examples/") {
            let rest = &text[at + 1..];
            let (file, rest) = rest.split_once('`').unwrap();
            let Some(count) = rest
                .strip_prefix(", ")
                .and_then(|rest| rest.split_once(" lines"))
                .and_then(|(count, _)| count.parse::<usize>().ok())
            else {
                continue;
            };
            let lines = read(&repo().join(file)).lines().count();
            assert_eq!(
                count,
                lines,
                "{}: says {file} has {count} lines",
                path.display()
            );
            checked += 1;
        }
    }
    // Each step's chapter gives its size.
    for step in STEPS {
        let text = read(&book_src().join(step.chapter));
        assert!(
            text.contains(&format!("`examples/{}.rs`, ", step.name)),
            "{} does not give the line count of {}",
            step.chapter,
            step.name
        );
    }
    assert!(checked >= STEPS.len());
}

/// The relative link targets in Markdown `text`: `[text](target)` and `![alt](target)`.
fn relative_links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_code_block = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code_block = !in_code_block;
            continue;
        }
        if in_code_block {
            continue;
        }
        for (at, _) in line.match_indices("](") {
            let rest = &line[at + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
                continue;
            }
            found.push(target.to_string());
        }
    }
    found
}

#[test]
fn every_relative_link_leads_to_a_file() {
    let mut files = chapters();
    files.push(repo().join("README.md"));
    files.push(repo().join("book/README.md"));
    let mut checked = 0;
    for file in files {
        let text = read(&file);
        for target in relative_links(&text) {
            let path = target.split('#').next().unwrap();
            if path.is_empty() {
                continue; // a link within the page
            }
            let resolved = file.parent().unwrap().join(path);
            assert!(
                resolved.exists(),
                "{}: the link to {target} leads nowhere",
                file.display()
            );
            // The book is the product's: it must stand on its own in the repository.
            assert!(
                resolved
                    .canonicalize()
                    .unwrap()
                    .starts_with(repo().canonicalize().unwrap()),
                "{}: {target} is outside the repository",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
    assert_eq!(
        relative_links("[a](b.md) and ![c](img/d.svg), [e](https://x.org/f)\n```\n[g](h)\n```"),
        ["b.md", "img/d.svg"]
    );
}

#[test]
fn the_readme_points_to_the_book() {
    let readme = read(&repo().join("README.md"));
    // Right after the two commands: the first thing a newcomer reads after running them.
    let commands = readme.find("\ncargo test ").expect("the two commands");
    let block_end = commands + readme[commands..].find("```\n").unwrap() + 4;
    let after = readme[block_end..].trim_start();
    assert!(
        after.starts_with("**Learn.**"),
        "README.md: no Learn paragraph after the two commands"
    );
    let paragraph = after.split("\n\n").next().unwrap();
    assert!(
        paragraph.contains("(book/src/introduction.md)"),
        "{paragraph}"
    );
}

#[test]
fn every_diagram_is_an_svg_file_that_a_chapter_shows() {
    let texts: Vec<String> = chapters().iter().map(|path| read(path)).collect();
    let mut diagrams = 0;
    for entry in fs::read_dir(book_src().join("images")).expect("book/src/images exists") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(".svg"), "{name}: diagrams are SVG files");
        let svg = read(&path);
        // Hand-written SVG: one root element, and a title for screen readers and tooltips.
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{name}"
        );
        assert!(svg.trim_end().ends_with("</svg>"), "{name}");
        assert!(svg.contains("<title>"), "{name} has no <title>");
        assert!(
            texts
                .iter()
                .any(|text| text.contains(&format!("](images/{name})"))),
            "no chapter shows {name}"
        );
        diagrams += 1;
    }
    assert!(diagrams > 0);
}

#[test]
fn every_step_chapter_has_the_shape_of_the_book() {
    let sections = [
        "## The concept",
        "## The step",
        "## What you should see",
        "## What to read",
        "## Where mini-kvm does this",
        "## Exercises",
    ];
    for step in STEPS {
        let text = read(&book_src().join(step.chapter));
        let mut last = 0;
        for section in sections {
            let at = text
                .find(&format!("\n{section}\n"))
                .unwrap_or_else(|| panic!("{} has no \"{section}\"", step.chapter));
            assert!(at > last, "{}: \"{section}\" is out of order", step.chapter);
            last = at;
        }
        let exercises = &text[last..];
        for grade in ["*Easy.*", "*Medium.*", "*Hard.*"] {
            assert!(
                exercises.contains(grade),
                "{}: no {grade} exercise",
                step.chapter
            );
        }
        let summary = read(&book_src().join("SUMMARY.md"));
        assert!(
            summary.contains(&format!("]({})", step.chapter)),
            "SUMMARY.md does not list {}",
            step.chapter
        );
    }
}
