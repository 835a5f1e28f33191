//! The book's Step 9 (`examples/step09_linux.rs`, book/src/ch09-linux.md): a VMM of one file
//! that boots Debian's kernel to a shell. Linux needs hardware KVM, so the boot runs in the
//! rig (tests/hw-kvm/run carries the example in and names its directory in
//! MINI_KVM_EXAMPLES, and the kernel in MINI_KVM_LINUX_KERNEL); the host checks the step's
//! errors, which come before any KVM call.
//!
//! The chapter's transcript is a ```console,tested-by=tests/book_linux.rs block: this test
//! compiles the chapter in, runs its command, types the commands the chapter says into the
//! guest's shell, and compares what the step printed with the lines shown. In a shown line,
//! `…` stands for any text; a line that is only `…` stands for any number of lines (the
//! kernel's own messages, which vary between kernels).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The chapter, compiled in: the rig has no sources.
const CHAPTER: &str = include_str!("../book/src/ch09-linux.md");
const CHAPTER_PATH: &str = "book/src/ch09-linux.md";

/// The initramfs's /init, as the chapter shows it.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc && mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev
stty -echo
echo "step09: /init is running"
setsid cttyhack sh
reboot -f
"#;
const MARKER: &str = "step09: /init is running";
/// The shell's prompt (root, in /), after which it reads a line.
const PROMPT: &str = "/ # ";
/// What the chapter's reader types at the prompt, one line each; the last ends the VM.
const TYPED: [&str; 3] = ["uname -sr", "cat /proc/cmdline", "reboot -f"];
/// The step's default command line, which /proc/cmdline shows.
const DEFAULT_CMDLINE: &str = "console=ttyS0 acpi=off reboot=k,panic_warm panic=-1 quiet";
/// The static busybox (Debian: busybox-static), here and in the rig.
const BUSYBOX: &str = "/bin/busybox";
/// A bound on one boot, for a hung guest: the rig's nested KVM is slow (about 30 s to /init).
const BOOT_BOUND: Duration = Duration::from_secs(280);

/// The step's binary: the one cargo built, next to the mini-kvm binary, or in the rig
/// MINI_KVM_EXAMPLES/step09_linux.
fn step09() -> PathBuf {
    if common::in_rig() {
        let dir =
            std::env::var_os("MINI_KVM_EXAMPLES").expect("MINI_KVM_RIG=1 but no MINI_KVM_EXAMPLES");
        let binary = Path::new(&dir).join("step09_linux");
        assert!(
            binary.exists(),
            "MINI_KVM_EXAMPLES: no {}",
            binary.display()
        );
        return binary;
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_mini-kvm")).parent().unwrap();
    let binary = bin_dir.join("examples").join("step09_linux");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/step09_linux.rs");
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    match (modified(&binary), modified(&source)) {
        (Some(built), Some(written)) if built >= written => binary,
        (Some(_), _) => panic!(
            "{} is older than its source: run `cargo build --examples` first",
            binary.display()
        ),
        (None, _) => panic!(
            "{} is not built: run `cargo build --examples` (a full `cargo test` does)",
            binary.display()
        ),
    }
}

/// The bzImage: MINI_KVM_LINUX_KERNEL (the rig's), or this machine's newest /boot/vmlinuz-*.
fn linux_kernel() -> PathBuf {
    if let Some(path) = std::env::var_os("MINI_KVM_LINUX_KERNEL") {
        return PathBuf::from(path);
    }
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("/boot")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.to_string_lossy().starts_with("/boot/vmlinuz-"))
        .collect();
    kernels.sort();
    kernels.pop().expect(
        "Step 9 boots a distribution kernel: install one (Debian: apt install \
         linux-image-cloud-amd64) or name a bzImage in MINI_KVM_LINUX_KERNEL",
    )
}

/// Makes the chapter's initramfs in `dir`: busybox and /init, packed by busybox's cpio.
fn make_initramfs(dir: &Path) -> PathBuf {
    let root = dir.join("initramfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    std::fs::write(root.join("init"), INIT).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(root.join("init"), mode).unwrap();
    let output = dir.join("initrd.cpio");
    let mut cpio = Command::new(BUSYBOX)
        .args(["cpio", "-o", "-H", "newc", "-R", "0:0"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&output).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("busybox cpio");
    // What `find .` lists, parents first.
    let files = ".\n./bin\n./bin/busybox\n./init\n";
    cpio.stdin
        .take()
        .unwrap()
        .write_all(files.as_bytes())
        .unwrap();
    assert!(cpio.wait().unwrap().success());
    output
}

/// The chapter's transcript: its command and the lines it shows.
fn transcript() -> (String, Vec<String>) {
    let opening = "```console,tested-by=tests/book_linux.rs\n";
    let start = CHAPTER.find(opening).expect("the chapter's transcript") + opening.len();
    let block = &CHAPTER[start..start + CHAPTER[start..].find("```").unwrap()];
    let mut lines = block.lines();
    let command = lines
        .next()
        .unwrap()
        .strip_prefix("$ ")
        .expect("a command first");
    (command.to_string(), lines.map(String::from).collect())
}

/// Whether `actual` is `expected`, where `…` in a line stands for any text within it.
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

/// Whether the `actual` lines are the `expected` ones, where a line that is only `…` stands for
/// any number of lines.
fn lines_match(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((any, rest)) if any == "…" => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((line, rest)) => actual
            .split_first()
            .is_some_and(|(first, others)| line_matches(line, first) && lines_match(rest, others)),
    }
}

#[test]
fn the_transcript_format_catches_differences() {
    let shown: Vec<String> = ["a", "…", "b … c", "d"].map(String::from).to_vec();
    assert!(lines_match(&shown, &["a", "b x c", "d"]));
    assert!(lines_match(&shown, &["a", "1", "2", "b x c", "d"]));
    assert!(!lines_match(&shown, &["a", "b x c"]));
    assert!(!lines_match(&shown, &["a", "b x c", "d", "e"]));
    assert!(!lines_match(&shown, &["x", "b x c", "d"]));
    assert!(!lines_match(&shown, &["a", "b x", "d"]));
    // The chapter's block is there, runs the step, and shows its /init.
    let (command, lines) = transcript();
    assert_eq!(
        command,
        "cargo run --quiet --example step09_linux -- /boot/vmlinuz-$(uname -r) initrd.cpio"
    );
    assert!(lines.iter().any(|line| line == MARKER), "{lines:?}");
    assert!(
        CHAPTER.contains(INIT),
        "the chapter's /init differs from the test's"
    );
}

/// Runs the step with `args` and no input; returns the run.
fn run_step(args: &[&str]) -> common::Run {
    common::mini_kvm_with(Command::new(step09()).args(args), b"")
}

#[test]
fn the_step_explains_its_arguments() {
    let run = run_step(&[]);
    assert_eq!(run.status, 2, "{run:?}");
    assert_eq!(
        run.stderr,
        "step09: expected 2 or 3 arguments, got 0\n\
         usage: step09_linux KERNEL INITRAMFS [COMMAND_LINE]\n  \
         KERNEL        a bzImage, e.g. /boot/vmlinuz-$(uname -r)\n  \
         INITRAMFS     a cpio archive (newc) with an /init\n  \
         COMMAND_LINE  the kernel's command line, default:\n                \
         console=ttyS0 acpi=off reboot=k,panic_warm panic=-1 quiet\n"
    );
    assert!(run.stdout.is_empty(), "{run:?}");
}

#[test]
fn the_step_names_what_it_cannot_boot() {
    let kernel = linux_kernel();
    let kernel = kernel.to_str().unwrap();
    let dir = common::scratch("step09-errors");
    let empty = dir.join("empty.cpio");
    std::fs::write(&empty, b"").unwrap();
    let empty = empty.to_str().unwrap();
    let cases = [
        (
            ["/no/such/vmlinuz", empty],
            "step09: cannot read the kernel /no/such/vmlinuz: No such file or directory (os \
             error 2)\n"
                .to_string(),
        ),
        (
            [kernel, "/no/such/initrd"],
            "step09: cannot read the initramfs /no/such/initrd: No such file or directory (os \
             error 2)\n"
                .to_string(),
        ),
        (
            [empty, empty],
            format!(
                "step09: {empty} is not a bzImage we can boot: Kernel Loader: failed to load \
                 bzImage kernel image: Kernel Loader: Invalid bzImage\n"
            ),
        ),
        (
            [kernel, empty],
            format!("step09: the initramfs {empty} is empty\n"),
        ),
        (
            [kernel, "/dev/zero"],
            "step09: the initramfs /dev/zero is larger than the guest's 256 MiB of RAM\n"
                .to_string(),
        ),
    ];
    for (args, stderr) in cases {
        let run = run_step(&args);
        assert_eq!(run.status, 1, "{args:?}: {run:?}");
        assert_eq!(run.stderr, stderr, "{args:?}: {run:?}");
    }
    // A command line longer than the kernel's `cmdline_size` (2047 for Debian's).
    let long = "x".repeat(3000);
    let run = run_step(&[kernel, empty, &long]);
    assert_eq!(run.status, 1, "{run:?}");
    assert!(
        run.stderr
            .starts_with("step09: the command line is 3000 bytes; this kernel takes at most "),
        "{run:?}"
    );
}

/// On hardware KVM: the chapter's run. The step boots the kernel with the chapter's initramfs;
/// once /init's shell prompts, the test types each command of TYPED after the prompt before
/// it (so that the output is in a fixed order), and the last one resets the machine: the step
/// exits 0. What it printed is the chapter's transcript.
#[test]
#[ignore = "needs hardware KVM: run in the rig (tests/hw-kvm/run)"]
fn step09_boots_linux_to_a_shell() {
    common::require_kvm();
    let (command, shown) = transcript();
    assert_eq!(
        command,
        "cargo run --quiet --example step09_linux -- /boot/vmlinuz-$(uname -r) initrd.cpio"
    );
    let dir = common::scratch("step09-boot");
    let initrd = make_initramfs(&dir);
    let kernel = linux_kernel();
    let started = Instant::now();
    let mut child = Command::new(step09())
        .arg(&kernel)
        .arg(&initrd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start step09_linux");
    let mut stdin = child.stdin.take().unwrap();
    let (mut stdout_pipe, mut stderr_pipe) =
        (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let printed = Arc::new(Mutex::new(String::new()));
    let reader = {
        let printed = Arc::clone(&printed);
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stdout_pipe.read(&mut chunk) {
                let text = String::from_utf8_lossy(&chunk[..n]);
                // As it comes, for the rig's console (--nocapture).
                eprint!("{text}");
                printed.lock().unwrap().push_str(&text);
            }
        })
    };
    let errors = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    // Waits until what the step printed satisfies `done`, within the bound.
    let wait_for = |what: &str, done: &dyn Fn(&str) -> bool| {
        while !done(&printed.lock().unwrap()) {
            assert!(
                started.elapsed() < BOOT_BOUND,
                "no {what} after {BOOT_BOUND:?}: {}",
                printed.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("/init marker", &|text| text.contains(MARKER));
    let to_init = started.elapsed();
    // Each line after its own prompt: the shell's first, then one after each command.
    for (sent, line) in TYPED.iter().enumerate() {
        wait_for("prompt", &|text| {
            text.matches(PROMPT).count() > sent && text.ends_with(PROMPT)
        });
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
    }
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > BOOT_BOUND {
            let _ = child.kill();
            panic!(
                "step09_linux still running after {BOOT_BOUND:?}: {}",
                printed.lock().unwrap()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    reader.join().unwrap();
    let stderr = errors.join().unwrap();
    eprintln!(
        "\nstep09: /init after {:.1} s, the VM ended after {:.1} s",
        to_init.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let stdout = printed.lock().unwrap().replace('\r', "");
    assert_eq!(status, Some(0), "stderr: {stderr}\nstdout: {stdout}");
    assert_eq!(stderr, "", "{stdout}");

    // The lines the test itself controls, exactly: the kernel's release (from its own setup
    // header), the command line as /proc/cmdline reads it back, and the reset.
    let release = common::kernel_release(&std::fs::read(&kernel).unwrap());
    let lines: Vec<&str> = stdout.lines().collect();
    for expected in [
        MARKER.to_string(),
        format!("{PROMPT}Linux {release}"),
        format!("{PROMPT}{DEFAULT_CMDLINE}"),
    ] {
        assert!(
            lines.contains(&expected.as_str()),
            "no {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("[vmm] the guest reset the machine"),
        "{stdout}"
    );
    assert!(
        lines_match(&shown, &lines),
        "{CHAPTER_PATH}: the step printed\n{stdout}\nbut the chapter shows\n{}",
        shown.join("\n")
    );
}

/// On hardware KVM: a kernel that panics (here: `rdinit=` names a file the initramfs lacks, so
/// the kernel looks for a root file system, finds none, and panics) resets the machine at once (`panic=-1`) with the warm-reset flag set
/// (`reboot=k,panic_warm`), and the step says so and exits 1.
#[test]
#[ignore = "needs hardware KVM: run in the rig (tests/hw-kvm/run)"]
fn step09_reports_a_kernel_panic() {
    common::require_kvm();
    let dir = common::scratch("step09-panic");
    let initrd = make_initramfs(&dir);
    let cmdline = format!("{DEFAULT_CMDLINE} rdinit=/no/such/init");
    let mut child = Command::new(step09())
        .arg(linux_kernel())
        .arg(&initrd)
        .arg(&cmdline)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start step09_linux");
    let (mut stdout_pipe, mut stderr_pipe) =
        (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = thread::spawn(move || {
        let mut printed = String::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = stdout_pipe.read(&mut chunk) {
            let text = String::from_utf8_lossy(&chunk[..n]);
            eprint!("{text}");
            printed.push_str(&text);
        }
        printed
    });
    let errors = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > BOOT_BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("step09_linux still running after {BOOT_BOUND:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = reader.join().unwrap().replace('\r', "");
    let stderr = errors.join().unwrap();
    assert_eq!(status, Some(1), "stderr: {stderr}\nstdout: {stdout}");
    assert_eq!(stderr, "", "{stdout}");
    assert!(
        stdout.contains(&format!("[vmm] command line at 0x20000: {cmdline}\n")),
        "{stdout}"
    );
    assert!(stdout.contains("Kernel panic - not syncing: "), "{stdout}");
    assert!(!stdout.contains(MARKER), "{stdout}");
    let last = stdout.lines().last().unwrap();
    assert!(
        last.starts_with("[vmm] the kernel panicked and reset the machine, after ")
            && last.ends_with(" VM exits"),
        "{stdout}"
    );
}
