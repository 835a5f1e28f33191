//! The book's chapter "Trace one exit" (book/src/trace-one-exit.md) follows one byte of `hello`
//! with gdb and strace. Its transcripts are ```` ```console,tested-by=tests/trace_one_exit.rs ````
//! blocks, which the book's own checker leaves to this test: here each command is run again, in
//! the chapter's order and in one scratch directory (the chapter's `trace.txt` is written by one
//! command and read by the next), and what it prints is compared with the chapter line by line.
//!
//! A command runs under `sh`, with the mini-kvm under test first on `PATH`, its stdout and
//! stderr together as a terminal shows them, tabs expanded to the next multiple of 8 as a
//! terminal does. In an expected line, `…` (U+2026) stands for any text within that line (an
//! address, a host-dependent detail). A command that waits for gdb (`mini-kvm run --gdb=...`) is
//! the chapter's first terminal: it is started in the background, the next command (gdb) runs
//! once it waits, and its output is compared when it has ended.
//!
//! The commands may only be mini-kvm, gdb, strace and grep: a chapter is not a shell script.
//! It needs gdb and strace (`.ci/run` installs them). It reads the book, so the hardware-KVM rig
//! leaves it out (tests/hw-kvm/run, `host_only`).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;

use common::{CALLER_VARIABLES, WATCHDOG, require_kvm, run_watched, scratch, wait_watched};

const CHAPTER: &str = "book/src/trace-one-exit.md";
const INFO_STRING: &str = "```console,tested-by=tests/trace_one_exit.rs";
/// What a chapter's command may start with.
const PROGRAMS: [&str; 4] = ["mini-kvm ", "gdb ", "strace ", "grep "];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chapter_text() -> String {
    std::fs::read_to_string(repo().join(CHAPTER)).unwrap_or_else(|e| panic!("{CHAPTER}: {e}"))
}

/// One command of the chapter and the lines it shows for it.
#[derive(Debug, PartialEq)]
struct Shown {
    line: usize,
    command: String,
    output: Vec<String>,
}

/// The commands of the chapter's blocks for this test, in order.
fn shown_commands(text: &str) -> Vec<Shown> {
    let mut found: Vec<Shown> = Vec::new();
    let mut in_block = false;
    for (index, line) in text.lines().enumerate() {
        if line.starts_with("```") {
            in_block = !in_block && line == INFO_STRING;
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            found.push(Shown {
                line: index + 1,
                command: command.to_string(),
                output: Vec::new(),
            });
        } else {
            let current = found
                .last_mut()
                .unwrap_or_else(|| panic!("{CHAPTER}:{}: a block starts with `$ `", index + 1));
            current.output.push(line.to_string());
        }
    }
    found
}

/// Whether `actual` is what the chapter shows as `expected`, where `…` stands for any text.
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

/// A line as a terminal shows it: each tab up to the next column that is a multiple of 8.
fn expand_tabs(line: &str) -> String {
    let mut shown = String::new();
    for c in line.chars() {
        if c == '\t' {
            shown.push(' ');
            while !shown.chars().count().is_multiple_of(8) {
                shown.push(' ');
            }
        } else {
            shown.push(c);
        }
    }
    shown
}

fn assert_shows(shown: &Shown, printed: &str) {
    let actual: Vec<String> = printed.lines().map(expand_tabs).collect();
    let same = actual.len() == shown.output.len()
        && shown
            .output
            .iter()
            .zip(&actual)
            .all(|(expected, actual)| line_matches(expected, actual));
    assert!(
        same,
        "{CHAPTER}:{}: `{}` printed\n{}\nbut the chapter shows\n{}",
        shown.line,
        shown.command,
        actual.join("\n"),
        shown.output.join("\n")
    );
}

/// `sh -c COMMAND` in `dir`, stderr into stdout, the mini-kvm under test first on PATH.
fn shell(dir: &Path, command: &str) -> Command {
    assert!(
        PROGRAMS.iter().any(|program| command.starts_with(program)),
        "{CHAPTER}: `{command}`: a transcript here runs only {PROGRAMS:?}"
    );
    let mini_kvm = Path::new(env!("CARGO_BIN_EXE_mini-kvm"));
    let path = format!(
        "{}:{}",
        mini_kvm.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut sh = Command::new("sh");
    // `exec`: the watchdog's kill reaches the program, not a shell waiting for it.
    sh.args(["-c", &format!("exec 2>&1\nexec {command}")])
        .current_dir(dir)
        .env("PATH", path);
    for variable in CALLER_VARIABLES {
        sh.env_remove(variable);
    }
    sh
}

/// A tool the chapter runs, or a clear failure saying how to get it.
fn require_tool(name: &str, package: &str) {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "{CHAPTER} runs {name}, and this machine has none: apt-get install {package}"
    );
}

/// The first terminal: `mini-kvm run --gdb=...`, running until gdb is done with it.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
    reader: thread::JoinHandle<()>,
}

impl Background {
    /// Starts `command` and returns once it waits for gdb (its first line).
    fn start(dir: &Path, command: &str) -> (Background, String) {
        let mut child = shell(dir, command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
        let out = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        let reader = thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        let first = lines.recv_timeout(WATCHDOG).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("`{command}` printed nothing within {WATCHDOG:?}")
        });
        (
            Background {
                child,
                lines,
                reader,
            },
            first,
        )
    }

    /// Waits for it to end: everything it printed after its first line.
    fn finish(mut self, command: &str) -> String {
        let status = wait_watched(&mut self.child, command);
        assert!(status.success(), "`{command}` ended with {status}");
        self.reader.join().unwrap();
        self.lines.try_iter().map(|line| line + "\n").collect()
    }
}

#[test]
fn every_transcript_of_the_chapter_is_what_the_tools_print() {
    require_kvm();
    require_tool("gdb", "gdb");
    require_tool("strace", "strace");
    let shown = shown_commands(&chapter_text());
    // The chapter's story: gdb at the `out`, strace without and with coalescing.
    let commands: Vec<&str> = shown.iter().map(|s| s.command.as_str()).collect();
    assert!(
        commands
            .iter()
            .any(|c| c.starts_with("mini-kvm run --gdb="))
            && commands.iter().any(|c| c.starts_with("gdb "))
            && commands.iter().filter(|c| c.starts_with("strace ")).count() == 2,
        "{CHAPTER}: not the transcripts this test expects: {commands:?}"
    );
    let dir = scratch("trace_one_exit");
    let mut waiting: Option<(&Shown, Background, String)> = None;
    for step in &shown {
        if step.command.starts_with("mini-kvm run --gdb=") {
            let (background, first) = Background::start(&dir, &step.command);
            waiting = Some((step, background, first));
            continue;
        }
        let mut command = shell(&dir, &step.command);
        let run = run_watched(&mut command, b"", &mut |_, _| {});
        assert_eq!(
            run.status, 0,
            "{CHAPTER}:{}: `{}`: {run:?}",
            step.line, step.command
        );
        assert_shows(step, &run.stdout_text());
        // The gdb session is over: the first terminal's guest has ended.
        if let Some((gdb_step, background, first)) = waiting.take() {
            let rest = background.finish(&gdb_step.command);
            assert_shows(gdb_step, &format!("{first}\n{rest}"));
        }
    }
    assert!(
        waiting.is_none(),
        "{CHAPTER}: nothing attached to the gdb stub"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The chapter's listing of `hello` and its size, against the guest build.rs assembled.
#[test]
fn the_listing_of_hello_is_the_built_guest() {
    let mut image = Vec::new();
    std::fs::File::open(Path::new(env!("OUT_DIR")).join("guests/real/hello.bin"))
        .and_then(|mut file| file.read_to_end(&mut image))
        .expect("build.rs assembles guests/real/hello.S");
    let text = chapter_text();
    assert!(
        text.contains(&format!("a real-mode program of {} bytes", image.len())),
        "{CHAPTER} gives hello's size, and it is {} bytes",
        image.len()
    );
    // Linear address (0x10000 + offset) and the opcode the listing names there.
    for (address, opcode, instruction) in [
        (0x10006, 0xac, "lodsb"),
        (0x10007, 0x84, "test %al, %al"),
        (0x10009, 0x74, "jz done"),
        (0x1000b, 0xee, "out %al, (%dx)"),
        (0x1000c, 0xeb, "jmp next_char"),
    ] {
        assert_eq!(image[address - 0x10000], opcode, "{address:#x}");
        let listed = text
            .lines()
            .find(|line| line.starts_with(&format!("{address:#x} ")))
            .unwrap_or_else(|| panic!("{CHAPTER} lists nothing at {address:#x}"));
        assert!(listed.contains(instruction), "{listed}");
    }
}

#[test]
fn the_comparison_catches_differences() {
    let text = "x\n```console,tested-by=tests/trace_one_exit.rs\n$ grep a b\none\n\n$ gdb c\n\
                ```\n```console\n$ mini-kvm list\nnot ours\n```\n";
    assert_eq!(
        shown_commands(text),
        [
            Shown {
                line: 3,
                command: "grep a b".into(),
                output: vec!["one".into(), String::new()],
            },
            Shown {
                line: 6,
                command: "gdb c".into(),
                output: Vec::new(),
            },
        ]
    );
    assert!(line_matches("0x… = 0", "0x7ffd1 = 0"));
    assert!(!line_matches("0x… = 0", "0x7ffd1 = 1"));
    assert!(!line_matches("ab", "abc"));
    assert_eq!(expand_tabs("=> 0x1000b:\tout"), "=> 0x1000b:     out");
    assert_eq!(expand_tabs("a\tb\tc"), "a       b       c");
}
