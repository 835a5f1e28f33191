//! The book's exercises (book/src/exercises.md), checked on the real `/dev/kvm`.
//!
//! Each exercise has a starting point (a step of the book, or a guest's `.S` source), a check
//! (the function named in [`EXERCISES`]: it runs the reader's result and compares its output
//! and exit status with what the exercise asks for, exactly), and a solution kept in
//! `book/solutions/`. Run without settings, each test proves two things about its exercise:
//! the solution passes the check, and the starting point does not (so the check can fail).
//!
//! A reader checks their own work by naming the file in a variable named after the exercise:
//! `EX02=my_hello.S cargo test --test exercises ex02`. A `.rs` file is a VMM of the book's kind
//! that cargo builds as an example (copied into `examples/`, built with `cargo build --example
//! NAME` first); a `.S` file is a guest, which the test builds with the recipe the book shows in
//! "Build a guest of your own" and runs with mini-kvm.
//!
//! That recipe is itself checked here: the transcripts in book/src/exercises.md and
//! docs/hypercall-abi.md marked ```` ```console,tested-by=tests/exercises.rs ```` are run command
//! by command (`as`, `ld`, `objcopy`, `mini-kvm`) in a fresh directory, on the source the page
//! shows just before them, and each command's output is compared with the page's lines.
//!
//! The Rust solutions and steps are built by `cargo build --examples` (a full `cargo test`
//! builds them on its way); a binary older than its source fails the test.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One exercise: where the book states it, where the reader starts, where its solution is,
/// and the check that tells them apart.
struct Exercise {
    id: &'static str,
    chapter: &'static str,
    grade: &'static str,
    start: &'static str,
    solution: &'static str,
    check: fn(&Path) -> Result<(), String>,
}

const EXERCISES: &[Exercise] = &[
    Exercise {
        id: "ex01",
        chapter: "ch01-first-exit.md",
        grade: "*Easy.*",
        start: "examples/step01_first_exit.rs",
        solution: "book/solutions/ex01_add.rs",
        check: check_ex01,
    },
    Exercise {
        id: "ex02",
        chapter: "ch02-port-io.md",
        grade: "*Easy.*",
        start: "guests/real/hello.S",
        solution: "book/solutions/ex02_hello_write.S",
        check: check_ex02,
    },
    Exercise {
        id: "ex03",
        chapter: "ch02-port-io.md",
        grade: "*Medium.*",
        start: "examples/step02_port_io.rs",
        solution: "book/solutions/ex03_write_hypercall.rs",
        check: check_ex03,
    },
    Exercise {
        id: "ex04",
        chapter: "ch03-guest-memory.md",
        grade: "*Medium.*",
        start: "examples/step03_guest_memory.rs",
        solution: "book/solutions/ex04_mmio_counter.rs",
        check: check_ex04,
    },
    Exercise {
        id: "ex05",
        chapter: "ch04-protected-mode.md",
        grade: "*Hard.*",
        start: "examples/step01_first_exit.rs",
        solution: "book/solutions/ex05_protected_mode.rs",
        check: check_ex05,
    },
    Exercise {
        id: "ex06",
        chapter: "ch05-long-mode.md",
        grade: "*Medium.*",
        start: "examples/step05_long_mode.rs",
        solution: "book/solutions/ex06_write_protect.rs",
        check: check_ex06,
    },
    Exercise {
        id: "ex07",
        chapter: "ch06-interrupts.md",
        grade: "*Easy.*",
        start: "guests/real/hello.S",
        solution: "book/solutions/ex07_triple_fault.S",
        check: check_ex07,
    },
    Exercise {
        id: "ex08",
        chapter: "ch06-interrupts.md",
        grade: "*Medium.*",
        start: "book/solutions/ex07_triple_fault.S",
        solution: "book/solutions/ex08_divide_handler.S",
        check: check_ex08,
    },
    Exercise {
        id: "ex09",
        chapter: "ch07-smp.md",
        grade: "*Medium.*",
        start: "examples/step07_smp.rs",
        solution: "book/solutions/ex09_third_cpu.rs",
        check: check_ex09,
    },
    Exercise {
        id: "ex10",
        chapter: "ch08-virtio.md",
        grade: "*Hard.*",
        start: "examples/step08_virtio.rs",
        solution: "book/solutions/ex10_entropy.rs",
        check: check_ex10,
    },
];

// ---- The checks: each gets what to run (a VMM binary, or a flat guest image) ----

/// Step 1's guest computes 6 + 7.
fn check_ex01(vmm: &Path) -> Result<(), String> {
    expect_program(
        vmm,
        "[vmm] VM exit: KVM_EXIT_HLT at 1000:0007\n[vmm] the guest left AX = 13\n",
    )
}

/// `hello` prints through one WRITE: 2 exits with --no-coalesce, all on the hypercall port.
fn check_ex02(guest: &Path) -> Result<(), String> {
    let run = run_guest(&["--stats", "--no-coalesce"], guest);
    expect_run(&run, "Hello, KVM!\n", 0)?;
    let name = guest.file_name().unwrap().to_string_lossy();
    let total = format!("VM exits of '{name}': 2");
    if run.stderr.lines().next() != Some(total.as_str()) {
        return Err(format!(
            "--stats should begin with {total:?}:\n{}",
            run.stderr
        ));
    }
    let ports = stats_rows(&run.stderr, "by port");
    if ports != [["0x0500", "out", "2", "hypercall"]] {
        return Err(format!(
            "--stats should count 2 exits on port 0x500 and none elsewhere, not {ports:?}"
        ));
    }
    Ok(())
}

/// Step 2 prints its line with a WRITE hypercall of its own: 4 exits instead of 45.
fn check_ex03(vmm: &Path) -> Result<(), String> {
    expect_program(
        vmm,
        "Hello from port I/O!\n42\n[vmm] the guest called EXIT(0) after 4 VM exits\n",
    )
}

/// Step 3 with a counter at 0x20000: the guest reads back 1 instead of 0xff. The VMM's own
/// lines about the MMIO exits are the reader's to word: the check compares the guest's lines
/// and the last one.
fn check_ex04(vmm: &Path) -> Result<(), String> {
    let run = run_program(vmm);
    let stdout = run.stdout_text();
    let guest_lines: Vec<&str> = stdout
        .lines()
        .filter(|line| !line.starts_with("[vmm]"))
        .collect();
    let last = stdout.lines().last().unwrap_or("");
    let wanted_last = "[vmm] the guest called EXIT(0) after 6 VM exits";
    if guest_lines != ["Hello from slot 1!", "1"] || last != wanted_last || run.status != 0 {
        return Err(format!(
            "expected the guest's lines \"Hello from slot 1!\" and \"1\", then \
             {wanted_last:?} and status 0; got status {}:\n{stdout}",
            run.status
        ));
    }
    Ok(())
}

/// Step 1's guest enters protected mode itself and computes a 32-bit product.
fn check_ex05(vmm: &Path) -> Result<(), String> {
    expect_program(
        vmm,
        "[vmm] VM exit: KVM_EXIT_HLT in 32-bit protected mode, CS = 0x08\n\
         [vmm] the guest left EAX = 4200000000\n",
    )
}

/// Step 5 with a read-only page and CR0.WP: the guest's first write is a page fault that ends in
/// a triple fault, which the VMM reports (what it adds after the words is the reader's).
fn check_ex06(vmm: &Path) -> Result<(), String> {
    let run = run_program(vmm);
    let stdout = run.stdout_text();
    let lines: Vec<&str> = stdout.lines().collect();
    let header = [
        "[vmm] vCPU 0: CR0 = 0x80010011, CR3 = 0x2000, CR4 = 0x20, EFER = 0x500",
        "[vmm] vCPU 0: CS = 0x08 (64-bit), RIP = 0x10000",
        "[vmm] guest-physical memory:",
        "[vmm]   0x000000-0x01ffff  128 KiB  slot 0, RAM: GDT 0x1000, page tables 0x2000, program 0x10000",
        "[vmm]   0x020000-0x0fffff  896 KiB  no slot: an access is an MMIO exit",
        "[vmm]   0x100000-0x100fff    4 KiB  slot 1, RAM: also at virtual 0x40100000",
    ];
    let shutdown = "[vmm] triple fault (KVM_EXIT_SHUTDOWN)";
    let good = lines.len() == header.len() + 1
        && lines[..header.len()] == header
        && lines[header.len()].starts_with(shutdown)
        && run.status == 125
        && run.stderr.is_empty();
    if !good {
        return Err(format!(
            "expected Step 5's first lines with CR0 = 0x80010011, then a line that starts \
             {shutdown:?}, and status 125; got status {}:\n{stdout}(stderr: {})",
            run.status, run.stderr
        ));
    }
    Ok(())
}

/// A guest that prints `before` and triple-faults at a `div`: mini-kvm's report, status 125.
fn check_ex07(guest: &Path) -> Result<(), String> {
    let run = run_guest(&[], guest);
    expect_run(&run, "before\n", 125)?;
    let name = guest.file_name().unwrap().to_string_lossy();
    let first = format!("mini-kvm: guest '{name}' faulted: triple fault (KVM_EXIT_SHUTDOWN): ");
    let lines: Vec<&str> = run.stderr.lines().collect();
    if !lines.first().is_some_and(|line| line.starts_with(&first)) {
        return Err(format!("no triple fault report:\n{}", run.stderr));
    }
    // The report's last line is the instruction that faulted: "  at 1000:0013: div %cx  [f7 f1]".
    // Except with kvm_amd, which resets the vCPU at a shutdown: the report says so instead.
    if common::host_kvm_module() == "kvm_amd" {
        let note = "(kvm_amd resets the vCPU at a triple fault";
        if !run.stderr.contains(note) {
            return Err(format!("the report lacks {note:?}:\n{}", run.stderr));
        }
        return Ok(());
    }
    let culprit = lines.last().unwrap();
    if !(culprit.starts_with("  at 1000:") && culprit.contains(": div ")) {
        return Err(format!(
            "the fault should be at a `div`, but the report ends with {culprit:?}"
        ));
    }
    Ok(())
}

/// The same guest survives: its IVT handler for the divide error prints and exits with 3.
fn check_ex08(guest: &Path) -> Result<(), String> {
    let run = run_guest(&[], guest);
    expect_run(&run, "before\ndivide error\n", 3)?;
    if !run.stderr.is_empty() {
        return Err(format!("mini-kvm reported:\n{}", run.stderr));
    }
    Ok(())
}

/// Step 7 with a third vCPU, the two APs printing in order. The lines before the guest's are
/// the VMM's description of the machine, which the exercise leaves to the reader: the check
/// compares the output from the BSP's `0` on.
fn check_ex09(vmm: &Path) -> Result<(), String> {
    let mut run = run_program(vmm);
    let stdout = run.stdout_text();
    if let Some(at) = stdout.find("\n0\n") {
        run.stdout = stdout.as_bytes()[at + 1..].to_vec();
    }
    expect_run(
        &run,
        "0\n1\n2\n\
         [vmm] vCPU 0 called EXIT(0) after 3 VM exits\n\
         [vmm] vCPU 1 called EXIT(0) after 3 VM exits\n\
         [vmm] vCPU 2 called EXIT(0) after 3 VM exits\n",
        0,
    )
}

/// Step 8 with an entropy device too: the guest prints through the console as before, asks the
/// entropy device for 16 bytes and exits with the length the device put in the used ring. The
/// bytes are random, and the VMM's lines about the devices are the reader's to word: the check
/// compares the guest's line, the last line (22 exits more than Step 8's 23: the entropy
/// device's handshake and its handler) and the status.
fn check_ex10(vmm: &Path) -> Result<(), String> {
    let run = run_program(vmm);
    let stdout = run.stdout_text();
    let guest_lines: Vec<&str> = stdout
        .lines()
        .filter(|line| !line.starts_with("[vmm]"))
        .collect();
    let last = stdout.lines().last().unwrap_or("");
    let wanted_last = "[vmm] the guest called EXIT(16) after 45 VM exits";
    if guest_lines != ["Hello from virtio!"] || last != wanted_last || run.status != 16 {
        return Err(format!(
            "expected the guest's line \"Hello from virtio!\", then {wanted_last:?} and status \
             16; got status {}:\n{stdout}(stderr: {})",
            run.status, run.stderr
        ));
    }
    Ok(())
}

// ---- Running what the reader (or the solution) made ----

/// Compares a run's output and status with an exercise's.
fn expect_run(run: &common::Run, stdout: &str, status: i32) -> Result<(), String> {
    if run.stdout_text() != stdout || run.status != status {
        return Err(format!(
            "expected status {status} and this output:\n{stdout}\
             but it exited with {} and printed:\n{}\
             (stderr: {})",
            run.status,
            run.stdout_text(),
            run.stderr
        ));
    }
    Ok(())
}

fn run_program(vmm: &Path) -> common::Run {
    common::require_kvm();
    common::mini_kvm_with(&mut Command::new(vmm), b"")
}

/// Runs a VMM of the book's kind and expects exactly `stdout`, status 0 and nothing on stderr.
fn expect_program(vmm: &Path, stdout: &str) -> Result<(), String> {
    let run = run_program(vmm);
    expect_run(&run, stdout, 0)?;
    if !run.stderr.is_empty() {
        return Err(format!("it printed on stderr:\n{}", run.stderr));
    }
    Ok(())
}

/// Runs `mini-kvm run OPTIONS GUEST` from the guest's directory, as `./NAME`.
fn run_guest(options: &[&str], guest: &Path) -> common::Run {
    common::require_kvm();
    let name = format!("./{}", guest.file_name().unwrap().to_string_lossy());
    let mut command = common::mini_kvm_command();
    command
        .current_dir(guest.parent().unwrap())
        .arg("run")
        .args(options)
        .arg(name);
    common::mini_kvm_with(&mut command, b"")
}

/// The rows of one section of `--stats`, each cut into its words.
fn stats_rows(stats: &str, section: &str) -> Vec<Vec<String>> {
    stats
        .lines()
        .skip_while(|line| !line.trim_start().starts_with(section))
        .skip(1)
        .take_while(|line| line.trim_start().starts_with("0x"))
        .map(|line| line.split_whitespace().map(String::from).collect())
        .collect()
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// What to run for `file`: a `.rs` file is an example cargo has built (not older than its
/// source); a `.S` file is a guest, built here with the book's recipe into a directory of its
/// own (`label` names it).
fn build(file: &Path, label: &str) -> PathBuf {
    let source = if file.is_absolute() {
        file.to_path_buf()
    } else {
        repo().join(file)
    };
    assert!(source.exists(), "{} does not exist", source.display());
    match source.extension().and_then(|ext| ext.to_str()) {
        Some("rs") => example_binary(&source),
        Some("S") => build_guest(&source, label),
        _ => panic!(
            "{}: an exercise is a .rs file (a VMM) or a .S file (a guest)",
            source.display()
        ),
    }
}

/// The example binary that cargo built from `source`, next to the mini-kvm binary.
fn example_binary(source: &Path) -> PathBuf {
    let name = source.file_stem().unwrap().to_string_lossy().into_owned();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_mini-kvm")).parent().unwrap();
    let binary = bin_dir.join("examples").join(&name);
    let modified = |path: &Path| fs::metadata(path).and_then(|m| m.modified()).ok();
    let (Some(built), Some(written)) = (modified(&binary), modified(source)) else {
        panic!(
            "{} is not built: run `cargo build --example {name}` (a .rs exercise must be in \
             examples/, or registered in Cargo.toml as the solutions are)",
            binary.display()
        );
    };
    assert!(
        built >= written,
        "{} is older than {}: run `cargo build --example {name}` first",
        binary.display(),
        source.display()
    );
    binary
}

/// A fresh directory where the book's commands work as written: `guests` leads to the
/// repository's guests/ (for `-I guests/include` and the linker scripts).
fn recipe_dir(label: &str) -> PathBuf {
    let dir = common::scratch(label);
    std::os::unix::fs::symlink(repo().join("guests"), dir.join("guests")).unwrap();
    dir
}

/// Builds the guest `source` with the recipe of book/src/exercises.md, as `my_guest.S` in a
/// fresh directory; returns the flat image, `my_guest.bin`.
fn build_guest(source: &Path, label: &str) -> PathBuf {
    let dir = recipe_dir(label);
    fs::copy(source, dir.join("my_guest.S")).unwrap();
    let (_, transcript) = recipe("book/src/exercises.md");
    for command in transcript
        .iter()
        .filter(|c| !c.line.starts_with("mini-kvm"))
    {
        let run = run_command(&command.line, &dir);
        assert_eq!(
            run.status,
            0,
            "`{}` failed on {}:\n{}",
            command.line,
            source.display(),
            run.stderr
        );
    }
    let image = dir.join("my_guest.bin");
    assert!(image.exists(), "the recipe made no my_guest.bin");
    image
}

// ---- The recipe transcripts ----

/// A command of a transcript and the lines the page shows after it.
#[derive(Debug)]
struct Shown {
    line: String,
    output: Vec<String>,
}

/// The ```console,tested-by=tests/exercises.rs block of `doc` (a path in the repository) and
/// the source the page shows before it (the ```asm block nearest above).
fn recipe(doc: &str) -> (String, Vec<Shown>) {
    let text = read(&repo().join(doc));
    let fence = "```console,tested-by=tests/exercises.rs\n";
    let at = text
        .find(fence)
        .unwrap_or_else(|| panic!("{doc} has no {fence:?} block"));
    let body = &text[at + fence.len()..];
    let body = &body[..body.find("```\n").expect("the console block is closed")];
    let mut shown: Vec<Shown> = Vec::new();
    for line in body.lines() {
        if let Some(command) = line.strip_prefix("$ ") {
            shown.push(Shown {
                line: command.to_string(),
                output: Vec::new(),
            });
        } else {
            let last = shown
                .last_mut()
                .unwrap_or_else(|| panic!("{doc}: the transcript starts without a command"));
            last.output.push(line.to_string());
        }
    }
    let before = &text[..at];
    let asm = before
        .rfind("```asm\n")
        .unwrap_or_else(|| panic!("{doc}: no ```asm block before the transcript"));
    let source = &before[asm + "```asm\n".len()..];
    let source = &source[..source.find("```\n").expect("the asm block is closed")];
    (source.to_string(), shown)
}

/// Runs one command of a transcript in `dir`: `as`, `ld`, `objcopy` or `mini-kvm` (the one
/// under test), with an optional `printf 'TEXT' | ` before it for its standard input. The
/// words are split on spaces: the book's commands need no shell quoting.
fn run_command(line: &str, dir: &Path) -> common::Run {
    let (stdin, command) = match line.strip_prefix("printf '") {
        Some(rest) => {
            let (text, command) = rest
                .split_once("' | ")
                .unwrap_or_else(|| panic!("`{line}`: printf '...' | COMMAND"));
            (text.replace("\\n", "\n"), command)
        }
        None => (String::new(), line),
    };
    let words: Vec<&str> = command.split(' ').collect();
    let mut process = match words[0] {
        "mini-kvm" => common::mini_kvm_command(),
        "as" | "ld" | "objcopy" => Command::new(words[0]),
        other => panic!("`{line}`: a recipe runs as, ld, objcopy or mini-kvm, not {other}"),
    };
    process.args(&words[1..]).current_dir(dir);
    common::mini_kvm_with(&mut process, stdin.as_bytes())
}

/// Runs a page's recipe exactly as written: writes the source it shows under the name its `as`
/// command reads, then runs each command and compares its output with the page's.
fn check_recipe(doc: &str, label: &str) {
    common::require_kvm();
    let (source, transcript) = recipe(doc);
    let assemble = transcript
        .iter()
        .find(|command| command.line.starts_with("as "))
        .unwrap_or_else(|| panic!("{doc}: the recipe has no `as` command"));
    let source_name = assemble.line.rsplit(' ').next().unwrap();
    assert!(source_name.ends_with(".S"), "{doc}: `{}`", assemble.line);
    let dir = recipe_dir(label);
    fs::write(dir.join(source_name), &source).unwrap();
    for command in &transcript {
        let run = run_command(&command.line, &dir);
        let printed: Vec<String> = run.stdout_text().lines().map(String::from).collect();
        assert_eq!(
            (printed, run.status),
            (command.output.clone(), 0),
            "{doc}: `{}`: {run:?}",
            command.line
        );
    }
    assert!(
        transcript
            .iter()
            .any(|command| command.line.contains("mini-kvm run")),
        "{doc}: the recipe never runs the guest"
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_books_recipe_builds_a_guest_that_runs() {
    check_recipe("book/src/exercises.md", "recipe-book");
    // The page tells the reader that git ignores their work files.
    let ignored = read(&repo().join(".gitignore"));
    for pattern in ["/my_*", "/examples/my_*.rs"] {
        assert!(
            ignored.lines().any(|line| line == pattern),
            ".gitignore lacks {pattern}"
        );
    }
}

#[test]
fn the_hypercall_abi_example_builds_and_runs_as_written() {
    check_recipe("docs/hypercall-abi.md", "recipe-abi");
}

// ---- Each exercise: the solution passes, the start does not; or the reader's file ----

fn exercise(id: &str) {
    let exercise = EXERCISES.iter().find(|exercise| exercise.id == id).unwrap();
    let variable = id.to_uppercase();
    if let Some(file) = std::env::var_os(&variable) {
        let file = PathBuf::from(file);
        let built = build(&file, &format!("{id}-yours"));
        if let Err(why) = (exercise.check)(&built) {
            panic!(
                "{id}: {} does not pass yet.\n{why}\n(book/src/exercises.md; its solution is {})",
                file.display(),
                exercise.solution
            );
        }
        remove_built(&built);
        return;
    }
    let solution = build(Path::new(exercise.solution), &format!("{id}-solution"));
    if let Err(why) = (exercise.check)(&solution) {
        panic!("{id}: the solution {} fails: {why}", exercise.solution);
    }
    let start = build(Path::new(exercise.start), &format!("{id}-start"));
    assert!(
        (exercise.check)(&start).is_err(),
        "{id}: the starting point {} passes the check already: it cannot fail",
        exercise.start
    );
    remove_built(&solution);
    remove_built(&start);
}

/// Removes the directory where a guest was built (a VMM example stays where cargo put it).
fn remove_built(built: &Path) {
    if built.extension().is_some_and(|ext| ext == "bin") {
        fs::remove_dir_all(built.parent().unwrap()).unwrap();
    }
}

#[test]
fn ex01_six_plus_seven() {
    exercise("ex01");
}

#[test]
fn ex02_hello_through_write() {
    exercise("ex02");
}

#[test]
fn ex03_a_write_hypercall() {
    exercise("ex03");
}

#[test]
fn ex04_a_device_in_the_hole() {
    exercise("ex04");
}

#[test]
fn ex05_the_guest_enters_protected_mode() {
    exercise("ex05");
}

#[test]
fn ex06_write_protection() {
    exercise("ex06");
}

#[test]
fn ex07_a_triple_fault() {
    exercise("ex07");
}

#[test]
fn ex08_a_divide_error_handler() {
    exercise("ex08");
}

#[test]
fn ex09_a_third_vcpu() {
    exercise("ex09");
}

#[test]
fn ex10_an_entropy_device() {
    exercise("ex10");
}

/// Every exercise has a test above, is named in its chapter's exercises at its grade, and is
/// listed in book/src/exercises.md with its starting point and its solution.
#[test]
fn every_exercise_is_in_the_book() {
    let this_file = read(&repo().join("tests/exercises.rs"));
    let page = read(&repo().join("book/src/exercises.md"));
    for exercise in EXERCISES {
        let id = exercise.id;
        assert!(
            this_file.contains(&format!("    exercise(\"{id}\");")),
            "{id} has no test"
        );
        let chapter = read(&repo().join("book/src").join(exercise.chapter));
        let section = &chapter[chapter.find("\n## Exercises\n").unwrap()..];
        let marker = format!("checked exercise `{id}`");
        let item = numbered_items(section)
            .into_iter()
            .find(|item| item.contains(&marker))
            .unwrap_or_else(|| panic!("{}: no item says {marker}", exercise.chapter));
        assert!(
            item.contains(exercise.grade),
            "{}: (`{id}`) is not marked {}",
            exercise.chapter,
            exercise.grade
        );
        for path in [exercise.start, exercise.solution] {
            assert!(repo().join(path).exists(), "{id}: {path} does not exist");
        }
        let heading = page
            .find(&format!("\n### `{id}`"))
            .unwrap_or_else(|| panic!("exercises.md has no \"### `{id}`\" heading"));
        let entry = &page[heading + 1..];
        let entry = &entry[..entry[4..].find("\n### ").map_or(entry.len(), |end| end + 4)];
        for needed in [
            exercise.start,
            exercise.solution,
            exercise.chapter,
            exercise.grade,
        ] {
            assert!(
                entry.contains(needed),
                "exercises.md, {id}: does not name {needed}"
            );
        }
        let command = format!("cargo test --test exercises {id}");
        assert!(
            entry.contains(&command),
            "exercises.md, {id}: no `{command}`"
        );
    }
    // And every solution belongs to an exercise.
    for entry in fs::read_dir(repo().join("book/solutions")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let path = format!("book/solutions/{name}");
        assert!(
            EXERCISES.iter().any(|exercise| exercise.solution == path),
            "{path} is the solution of no exercise"
        );
    }
}

/// The items of a numbered Markdown list ("1. ...", with continuation lines), each as one line.
fn numbered_items(text: &str) -> Vec<String> {
    let mut items: Vec<String> = Vec::new();
    for line in text.lines() {
        let starts_item = line.split_once(". ").is_some_and(|(number, _)| {
            !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
        });
        if starts_item {
            items.push(line.to_string());
        } else if let Some(item) = items.last_mut() {
            item.push('\n');
            item.push_str(line);
        }
    }
    // One line each, with single spaces: a phrase may be wrapped anywhere.
    items
        .iter()
        .map(|item| item.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The reader's way in: with `EXnn=FILE`, a test checks FILE instead of the solution. Run this
/// test executable again on one exercise of each kind, with a file that passes (the solution)
/// and one that does not (the starting point).
#[test]
fn a_readers_file_is_checked_instead() {
    for (test, variable, failing, passing) in [
        (
            "ex01_six_plus_seven",
            "EX01",
            "examples/step01_first_exit.rs",
            "book/solutions/ex01_add.rs",
        ),
        (
            "ex02_hello_through_write",
            "EX02",
            "guests/real/hello.S",
            "book/solutions/ex02_hello_write.S",
        ),
    ] {
        let run_with = |file: &str| {
            let mut command = Command::new(std::env::current_exe().unwrap());
            command
                .args(["--exact", test, "--test-threads=1"])
                .env(variable, file)
                .current_dir(repo());
            common::mini_kvm_with(&mut command, b"")
        };
        let run = run_with(passing);
        assert_eq!(run.status, 0, "{variable}={passing}: {run:?}");
        assert!(
            run.stdout_text().contains("1 passed"),
            "{variable}={passing}: {run:?}"
        );
        let run = run_with(failing);
        assert_ne!(run.status, 0, "{variable}={failing}: {run:?}");
        let verdict = format!("{}: {failing} does not pass yet.", variable.to_lowercase());
        assert!(
            run.stdout_text().contains(&verdict) || run.stderr.contains(&verdict),
            "{variable}={failing} should fail with {verdict:?}: {run:?}"
        );
    }
}
