//! The book (`book/src/`) is tested like the code it teaches:
//!
//! * each step (`examples/stepNN_*.rs`) runs on the real `/dev/kvm` and prints exactly what the
//!   table below says, with the exit status it says;
//! * each step's chapter shows it running, in a transcript that tests/transcripts.rs runs;
//! * each "Where mini-kvm does this" pointer names a file that exists and a function it defines;
//! * each line count the book prints ("`examples/step01_first_exit.rs`, 114 lines") is true;
//! * each relative link in the book, and the README's links into it, lead to a file that exists.
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
        name: "step08_virtio",
        chapter: "ch08-virtio.md",
        stdout: "\
[vmm] in the kernel: PIC, IOAPIC, local APIC (KVM_CREATE_IRQCHIP)
[vmm] virtio console at 0x20000: an ioeventfd on QueueNotify (0x20050), an irqfd on GSI 5
[vmm] guest-physical memory:
[vmm]   0x000000-0x01ffff  128 KiB  slot 0, RAM: GDT 0x1000, page tables 0x2000, IDT 0x5000
[vmm]   0x020000-0x020fff    4 KiB  no slot: the virtio console's registers
[vmm]   0x021000-0x0fffff  892 KiB  no slot: nothing
[vmm]   0x100000-0x100fff    4 KiB  slot 1, RAM: the guest's virtqueue
[vmm] MMIO read  0x000 MagicValue        -> 0x74726976
[vmm] MMIO read  0x004 Version           -> 0x2
[vmm] MMIO read  0x008 DeviceID          -> 0x3
[vmm] MMIO write 0x070 Status            <- 0x0
[vmm] MMIO write 0x070 Status            <- 0x1
[vmm] MMIO write 0x070 Status            <- 0x3
[vmm] MMIO write 0x014 DeviceFeaturesSel <- 0x1
[vmm] MMIO read  0x010 DeviceFeatures    -> 0x1
[vmm] MMIO write 0x024 DriverFeaturesSel <- 0x1
[vmm] MMIO write 0x020 DriverFeatures    <- 0x1
[vmm] MMIO write 0x070 Status            <- 0xb
[vmm] MMIO read  0x070 Status            -> 0xb
[vmm] MMIO write 0x030 QueueSel          <- 0x1
[vmm] MMIO read  0x034 QueueNumMax       -> 0x10
[vmm] MMIO write 0x038 QueueNum          <- 0x4
[vmm] MMIO write 0x080 QueueDescLow      <- 0x100000
[vmm] MMIO write 0x090 QueueDriverLow    <- 0x100040
[vmm] MMIO write 0x0a0 QueueDeviceLow    <- 0x100080
[vmm] MMIO write 0x044 QueueReady        <- 0x1
[vmm] MMIO write 0x070 Status            <- 0xf
[vmm] console thread: the doorbell rang (QueueNotify)
[vmm] console thread: transmitq, descriptor 0: 19 bytes
Hello from virtio!
[vmm] console thread: InterruptStatus = 0x1, GSI 5 raised through the irqfd
[vmm] MMIO read  0x060 InterruptStatus   -> 0x1
[vmm] MMIO write 0x064 InterruptACK      <- 0x1
[vmm] the guest called EXIT(0) after 23 VM exits
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

#[test]
fn every_step_chapter_shows_its_step_running() {
    // The transcript itself is run and compared by tests/transcripts.rs, or for a step that
    // needs hardware KVM by its rig test, which may give the example arguments.
    for step in STEPS {
        let text = read(&book_src().join(step.chapter));
        let transcript = match step.rig_only {
            None => format!("```console\n$ cargo run --quiet --example {}\n", step.name),
            Some(test) => format!(
                "```console,tested-by={test}\n$ cargo run --quiet --example {}",
                step.name
            ),
        };
        assert!(
            text.contains(&transcript),
            "{} has no transcript of {}",
            step.chapter,
            step.name
        );
    }
}

/// The pointers of a chapter's "Where mini-kvm does this" section: (file, function) pairs,
/// written as `` `src/vmm/builder.rs`, `Vm::create` `` (or a plain `` `fn_name` ``).
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
    for step in STEPS {
        let text = read(&book_src().join(step.chapter));
        assert!(
            !pointers(&text).is_empty(),
            "{} has no pointers under \"## Where mini-kvm does this\"",
            step.chapter
        );
    }
    let mut checked = 0;
    // Every chapter's pointers, the steps' and the others' (trace-one-exit.md).
    for path in chapters() {
        let chapter = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = read(&path);
        for (file, function) in pointers(&text) {
            let source = fs::read_to_string(repo().join(&file))
                .unwrap_or_else(|_| panic!("{chapter}: points at {file}, which does not exist"));
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
                "{chapter}: {file} defines no fn {name}"
            );
            if let Some(owner) = owner {
                assert!(
                    source.contains(&format!("impl {owner} "))
                        || source.contains(&format!(" for {owner} "))
                        || source.contains(&format!("impl {owner}<")),
                    "{chapter}: {file} has no impl of {owner}"
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
