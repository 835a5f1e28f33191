//! Every transcript in the documentation is the real output of its command: README.md, docs/
//! and the book (book/src/). The Korean edition (book/ko/) shows the English transcripts, which
//! tests/book_ko.rs checks, so they are not run twice.
//!
//! **The format.** A fenced block whose info string starts with `console` is a transcript. A line
//! that starts with `$ ` is a command; the lines after it, up to the next command or the end of
//! the block, are what a terminal shows: the command's stdout and stderr together, in the order it
//! wrote them (the test gives it one pipe for both). Where the output varies from run to run,
//! the document writes `…` (U+2026): inside a line it stands for any text within that line; a
//! line that is only `…` (indented or not) stands for any number of lines, none included.
//!
//! **Exit statuses.** A command that exits with a status other than 0 must be followed by
//! `$ echo $?` and the status, as in a shell: a transcript cannot hide a failure.
//!
//! **Commands.** Each block runs in a fresh directory of its own, in which the test guests
//! (tests/guests/**.S, which `cargo build` assembles) are at hand as `NAME.bin` and `NAME.elf`.
//! A command is one of
//! * `cargo run --quiet --example NAME`: the example binary cargo has built (the book's steps);
//! * `cargo run --release -- ARGS`: `mini-kvm ARGS`, as built for the test (cargo's own lines,
//!   which vary, are shown as `…`);
//! * a shell command line (bash) whose programs are all in [`PROGRAMS`]: `mini-kvm` is the
//!   binary under test, the environment is without the caller's mini-kvm variables
//!   (`common::CALLER_VARIABLES`), and stdin is empty unless the line pipes something in
//!   (`printf 'hi\n' | mini-kvm run echo`);
//! * `echo $?`: the status of the command before.
//!
//! **Kinds of block**, by their info string:
//! * `console`: run and compared here, on any host;
//! * `console,kvm_pvm`: output of a kvm_pvm host (software KVM: the development and CI machines,
//!   on which the docs are recorded), which hardware KVM would not print (`--stats`' host line,
//!   `--verbose`'s "after" instructions, an emulation failure): run and compared where /dev/kvm is
//!   kvm_pvm, and listed as not checked elsewhere;
//! * `console,tested-by=tests/FILE.rs`: reproduced by a dedicated test in FILE, which names the
//!   document (for what this test cannot run: output in an order that varies, say, or the gdb
//!   sessions of docs/gdb.md, replayed by [`the_gdb_sessions_of_docs_gdb_md_are_real`] below);
//! * `console,unchecked`: run by nothing; each is in [`UNCHECKED`], with the reason.
//!
//! A `$ ` line in any other block fails the test, so that nothing shown as a transcript goes
//! unchecked.
//!
//! The book's steps are built by `cargo build --examples`, which a full `cargo test` does on its
//! way. With `cargo test --test transcripts` alone, build them first: a step older than its source
//! fails the test instead of testing stale code.

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The programs a transcript's shell command may run.
const PROGRAMS: &[&str] = &[
    "mini-kvm", "printf", "head", "sed", "cut", "cp", "dd", "truncate",
];

/// The transcripts nothing runs, by document and first command (once per block), and why.
const UNCHECKED: &[(&str, &str, &str)] = &[
    (
        "docs/testing.md",
        "tests/hw-kvm/run",
        "the rig's message on a machine that lacks its packages (this one has them)",
    ),
    (
        "docs/testing.md",
        "tests/hw-kvm/run",
        "a rig run (QEMU, minutes) with a failure planted on purpose",
    ),
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The Markdown files under `dir`, at any depth, in a stable order.
fn markdown_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            found.extend(markdown_under(&path));
        } else if path.extension().is_some_and(|ext| ext == "md") {
            found.push(path);
        }
    }
    found
}

/// The documents whose transcripts are run: README.md, docs/, book/README.md and book/src/.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md"), repo().join("book/README.md")];
    files.extend(markdown_under(&repo().join("docs")));
    files.extend(markdown_under(&repo().join("book/src")));
    files
}

/// A document's path from the repository's root, as the messages and [`UNCHECKED`] write it.
fn relative(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// How a transcript block is checked (the kinds are at the top of this file).
#[derive(Debug, PartialEq)]
enum Kind {
    Run,
    KvmPvm,
    TestedBy(String),
    Unchecked,
}

/// One command of a transcript and the lines it shows.
#[derive(Debug, PartialEq)]
struct CommandLine {
    line: usize,
    text: String,
    output: Vec<String>,
}

/// A transcript block: its kind, where it is and its commands.
#[derive(Debug)]
struct Transcript {
    file: String,
    line: usize,
    kind: Kind,
    commands: Vec<CommandLine>,
}

fn kind_of(file: &str, line: usize, info: &str) -> Kind {
    let mut flags = info.split(',').skip(1);
    let kind = match flags.next() {
        None => Kind::Run,
        Some("kvm_pvm") => Kind::KvmPvm,
        Some("unchecked") => Kind::Unchecked,
        Some(flag) => match flag.strip_prefix("tested-by=") {
            Some(test) => Kind::TestedBy(test.to_string()),
            None => panic!("{file}:{line}: ```{info}: unknown kind {flag:?}"),
        },
    };
    assert!(
        flags.next().is_none(),
        "{file}:{line}: ```{info}: one kind per block"
    );
    kind
}

/// The transcripts of one Markdown text (the format is at the top of this file).
fn transcripts(file: &str, text: &str) -> Vec<Transcript> {
    let mut found: Vec<Transcript> = Vec::new();
    // The current block: whether it is a transcript.
    let mut block: Option<bool> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            block = match block {
                Some(_) => None,
                None if info == "console" || info.starts_with("console,") => {
                    found.push(Transcript {
                        file: file.to_string(),
                        line: number,
                        kind: kind_of(file, number, info),
                        commands: Vec::new(),
                    });
                    Some(true)
                }
                None => Some(false),
            };
            continue;
        }
        match block {
            None => {}
            // A command with its output outside a transcript would go unchecked.
            Some(false) => assert!(
                !trimmed.starts_with("$ "),
                "{file}:{number}: a `$ ` command outside a ```console block"
            ),
            Some(true) => {
                let commands = &mut found.last_mut().unwrap().commands;
                if let Some(command) = line.strip_prefix("$ ") {
                    commands.push(CommandLine {
                        line: number,
                        text: command.to_string(),
                        output: Vec::new(),
                    });
                } else {
                    commands
                        .last_mut()
                        .unwrap_or_else(|| {
                            panic!(
                                "{file}:{number}: a console block must start with a `$ ` command"
                            )
                        })
                        .output
                        .push(line.to_string());
                }
            }
        }
    }
    assert!(block.is_none(), "{file}: a code block is not closed");
    for transcript in &found {
        assert!(
            !transcript.commands.is_empty(),
            "{file}:{}: an empty console block",
            transcript.line
        );
    }
    found
}

/// Whether `actual` is what the document shows as `expected`, where `…` stands for any text.
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

/// Whether the `actual` lines are what the document shows: each expected line matches its line,
/// and a line that is only `…` stands for any number of lines.
fn lines_match(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((line, rest)) if line.trim() == "…" => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((line, rest)) => actual
            .split_first()
            .is_some_and(|(first, others)| line_matches(line, first) && lines_match(rest, others)),
    }
}

/// The example binary `name`, built by cargo next to the mini-kvm binary
/// (target/<triple>/debug/examples/), and not older than its source.
fn example_binary(name: &str) -> PathBuf {
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

/// The programs of a shell command line, checked against [`PROGRAMS`]; `None` if the line uses
/// more of the shell than pipes, quotes, `NAME=VALUE` and `>`.
fn shell_programs(command: &str) -> Option<Vec<&str>> {
    if ["; ", "&", "`", "$(", "||"]
        .iter()
        .any(|s| command.contains(s))
    {
        return None;
    }
    let programs: Vec<&str> = command
        .split(" | ")
        .map(|stage| {
            stage
                .split_whitespace()
                .find(|word| !word.contains('='))
                .unwrap_or("")
        })
        .collect();
    programs
        .iter()
        .all(|program| PROGRAMS.contains(program))
        .then_some(programs)
}

/// The process a transcript's command runs, in `dir`.
fn process_for(transcript: &Transcript, command: &CommandLine, dir: &Path) -> Command {
    let text = command.text.as_str();
    if let Some(name) = text
        .strip_prefix("cargo run --quiet --example ")
        .filter(|name| !name.contains(' '))
    {
        let mut process = Command::new(example_binary(name));
        process.current_dir(dir);
        return process;
    }
    let shell_line = match text.strip_prefix("cargo run --release -- ") {
        Some(args) => format!("mini-kvm {args}"),
        None => text.to_string(),
    };
    if shell_programs(&shell_line).is_none() {
        panic!(
            "{}:{}: `{text}`: a transcript runs `mini-kvm`, `cargo run --quiet --example NAME`, \
             `cargo run --release -- ARGS` or a simple shell line of {PROGRAMS:?} (or mark the \
             block, see tests/transcripts.rs)",
            transcript.file, command.line
        );
    }
    let mini_kvm_dir = Path::new(env!("CARGO_BIN_EXE_mini-kvm")).parent().unwrap();
    let mut process = Command::new("bash");
    process
        .args(["--noprofile", "--norc", "-c", &shell_line])
        .current_dir(dir)
        .env("PATH", format!("{}:/usr/bin:/bin", mini_kvm_dir.display()))
        .env("LC_ALL", "C.UTF-8");
    for variable in common::CALLER_VARIABLES {
        process.env_remove(variable);
    }
    process
}

/// Runs `process` with empty stdin and one pipe for stdout and stderr, as a terminal shows them:
/// what it printed, and its status.
fn run_interleaved(mut process: Command, what: &str) -> (String, i32) {
    let (mut reader, writer) = std::io::pipe().expect("a pipe");
    process
        .stdin(Stdio::null())
        .stdout(writer.try_clone().expect("a second end of the pipe"))
        .stderr(writer);
    let mut child = process
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    // The command holds the pipe's write ends: drop it, so that the reader sees the end.
    drop(process);
    let collector = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = reader.read_to_end(&mut bytes);
        bytes
    });
    let status = common::wait_watched(&mut child, what);
    let bytes = collector.join().unwrap();
    let code = status
        .code()
        .unwrap_or_else(|| panic!("{what} was killed by {status}"));
    (String::from_utf8_lossy(&bytes).into_owned(), code)
}

/// A fresh directory for one transcript, with the test guests in it.
fn transcript_dir(number: usize) -> PathBuf {
    let dir = common::scratch(&format!("transcript-{number}"));
    let guests = Path::new(env!("OUT_DIR")).join("test-guests");
    for entry in fs::read_dir(&guests).expect("build.rs's test guests") {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|ext| ext == "bin" || ext == "elf")
        {
            std::os::unix::fs::symlink(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

/// Runs every command of `transcript` and compares what it printed with what the document shows.
fn check(transcript: &Transcript, number: usize) {
    let dir = transcript_dir(number);
    let mut previous: Option<(usize, i32)> = None;
    for command in &transcript.commands {
        let at = format!("{}:{}", transcript.file, command.line);
        if command.text == "echo $?" {
            let (line, status) =
                previous.unwrap_or_else(|| panic!("{at}: `echo $?` before any command"));
            assert_eq!(
                command.output,
                [status.to_string()],
                "{at}: the command at line {line} exited with {status}"
            );
            previous = None;
            continue;
        }
        if let Some((line, status)) = previous {
            assert_eq!(
                status, 0,
                "{}:{line}: exited with {status}: show it with `$ echo $?` after it",
                transcript.file
            );
        }
        let what = format!("{at}: `{}`", command.text);
        let (printed, status) = run_interleaved(process_for(transcript, command, &dir), &what);
        let actual: Vec<&str> = printed.lines().collect();
        assert!(
            lines_match(&command.output, &actual),
            "{what} printed\n{}\nbut the document shows\n{}",
            actual.join("\n"),
            command.output.join("\n")
        );
        previous = Some((command.line, status));
    }
    if let Some((line, status)) = previous {
        assert_eq!(
            status, 0,
            "{}:{line}: exited with {status}: show it with `$ echo $?` after it",
            transcript.file
        );
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn every_transcript_is_the_real_output() {
    common::require_kvm();
    let on_kvm_pvm = common::host_kvm_module() == "kvm_pvm";
    let (mut run, mut tested_by, mut unchecked, mut other_host) = (0, 0, 0, Vec::new());
    let mut commands = 0;
    let mut unchecked_found = Vec::new();
    for path in documents() {
        let file = relative(&path);
        for transcript in transcripts(&file, &read(&path)) {
            let first = &transcript.commands[0].text;
            match &transcript.kind {
                Kind::Run => {}
                Kind::KvmPvm if on_kvm_pvm => {}
                Kind::KvmPvm => {
                    other_host.push(format!("{file}:{}", transcript.line));
                    continue;
                }
                Kind::TestedBy(test) => {
                    let source = fs::read_to_string(repo().join(test)).unwrap_or_else(|_| {
                        panic!(
                            "{file}:{}: tested by {test}, which does not exist",
                            transcript.line
                        )
                    });
                    assert!(
                        test.starts_with("tests/") && source.contains(&file),
                        "{file}:{}: {test} must be a test that names {file}",
                        transcript.line
                    );
                    tested_by += 1;
                    continue;
                }
                Kind::Unchecked => {
                    unchecked_found.push((file.clone(), first.clone()));
                    unchecked += 1;
                    continue;
                }
            }
            run += 1;
            commands += transcript.commands.len();
            check(&transcript, run);
        }
    }
    // Each unchecked block is listed with its reason, and each listed one is still there.
    let mut listed: Vec<(String, String)> = UNCHECKED
        .iter()
        .map(|(doc, command, _)| (doc.to_string(), command.to_string()))
        .collect();
    listed.sort();
    unchecked_found.sort();
    assert_eq!(
        unchecked_found, listed,
        "the ```console,unchecked blocks (left) and UNCHECKED in tests/transcripts.rs (right) \
         differ: list each unchecked block there, with the reason"
    );
    eprintln!(
        "transcripts: {run} blocks ({commands} commands) run and compared, {tested_by} \
         reproduced by dedicated tests, {unchecked} not checked (UNCHECKED), {} recorded on \
         kvm_pvm and not checked on this host{}",
        other_host.len(),
        if other_host.is_empty() {
            String::new()
        } else {
            format!(": {}", other_host.join(", "))
        }
    );
    assert!(run > 0, "no transcript was run");
}

#[test]
fn the_transcript_format_catches_differences() {
    let text = "Intro.\n\n```console\n$ cargo run --quiet --example step01_first_exit\n\
                one\ntwo … three\n$ echo $?\n0\n```\n\n```sh\ncargo build  # not a transcript\n\
                ```\n\n```console,kvm_pvm\n$ mini-kvm run hello\n…\n```\n";
    let found = transcripts("t.md", text);
    assert_eq!(found.len(), 2);
    assert_eq!((found[0].line, &found[0].kind), (3, &Kind::Run));
    assert_eq!(found[0].commands[0].line, 4);
    assert_eq!(found[0].commands[0].output, ["one", "two … three"]);
    assert_eq!(found[0].commands[1].text, "echo $?");
    assert_eq!(found[1].kind, Kind::KvmPvm);
    assert_eq!(
        kind_of("t.md", 1, "console,tested-by=tests/gdb.rs"),
        Kind::TestedBy("tests/gdb.rs".into())
    );
    for refused in [
        "```text\n$ ls\n```\n",
        "```console\nno command\n```\n",
        "```console,later\n$ ls\n```\n",
        "```console\n$ ls\n",
    ] {
        let text = refused.to_string();
        let result = std::panic::catch_unwind(move || transcripts("t.md", &text));
        assert!(result.is_err(), "{refused:?} must be refused");
    }
    assert!(line_matches("two … three", "two and three"));
    assert!(line_matches("two … three", "two  three"));
    assert!(!line_matches("two … three", "two and four"));
    assert!(!line_matches("one", "one more"));
    assert!(!line_matches("one", "on"));
    assert!(line_matches("a…b…c", "a1b2c"));
    assert!(!line_matches("a…b…c", "a1c2b"));
    let lines = |text: &str| -> Vec<String> { text.lines().map(String::from).collect() };
    assert!(lines_match(&lines("a\n…\nd"), &["a", "b", "c", "d"]));
    assert!(lines_match(&lines("a\n  …\nd"), &["a", "d"]));
    assert!(lines_match(&lines("…"), &[]));
    assert!(lines_match(&lines("a\n…"), &["a", "b"]));
    assert!(!lines_match(&lines("a\n…\nd"), &["a", "b", "c"]));
    assert!(!lines_match(&lines("a\nb"), &["a", "b", "c"]));
    assert!(!lines_match(&lines("a\nb\nc"), &["a", "b"]));
    assert_eq!(
        shell_programs("printf 'hi\\n' | mini-kvm run echo"),
        Some(vec!["printf", "mini-kvm"])
    );
    assert_eq!(
        shell_programs("MINI_KVM_DEVICE=/dev/null mini-kvm run hello"),
        Some(vec!["mini-kvm"])
    );
    assert_eq!(shell_programs("rm -rf x"), None);
    assert_eq!(shell_programs("mini-kvm run hello; rm x"), None);
    assert_eq!(shell_programs("mini-kvm run $(cat x)"), None);
}

#[test]
fn a_failing_status_must_be_shown() {
    common::require_kvm();
    let check_text = |text: &str| {
        let text = text.to_string();
        std::panic::catch_unwind(move || {
            for (number, transcript) in transcripts("t.md", &text).iter().enumerate() {
                check(transcript, 1000 + number);
            }
        })
        .is_ok()
    };
    let error = "mini-kvm: error: unknown guest 'nosuch': the built-in guests are os, …";
    assert!(check_text(&format!(
        "```console\n$ mini-kvm run nosuch\n{error}\n$ echo $?\n1\n```\n"
    )));
    // The same without its status, or with a wrong one, or with wrong output.
    assert!(!check_text(&format!(
        "```console\n$ mini-kvm run nosuch\n{error}\n```\n"
    )));
    assert!(!check_text(&format!(
        "```console\n$ mini-kvm run nosuch\n{error}\n$ echo $?\n2\n```\n"
    )));
    assert!(!check_text(
        "```console\n$ mini-kvm run hello\nHello, KVM\n```\n"
    ));
    // Stdout and stderr in the order written; a pipe gives input; the test guests are there.
    assert!(check_text(
        "```console\n$ printf 'hi\\n' | mini-kvm run echo\nhi\n$ mini-kvm run ./exit42.bin\n\
         $ echo $?\n42\n```\n"
    ));
}

/// A mini-kvm run waiting for gdb (`mini-kvm run --gdb ...`), and the first line it printed.
struct WaitingGuest {
    child: std::process::Child,
    banner: String,
    /// Where gdb connects, from the banner.
    target: String,
}

impl WaitingGuest {
    fn start(args: &str, dir: &Path) -> WaitingGuest {
        let mut child = common::mini_kvm_command()
            .args(args.split_whitespace())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mini-kvm");
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = send.send(line);
            }
        });
        let banner = lines
            .recv_timeout(common::WATCHDOG)
            .unwrap_or_else(|_| panic!("`mini-kvm {args}` said nothing on stderr"));
        let target = banner
            .split(" waits for gdb on ")
            .nth(1)
            .and_then(|rest| rest.split(": gdb").next())
            .unwrap_or_else(|| panic!("no 'waits for gdb' line: {banner:?}"))
            .to_string();
        WaitingGuest {
            child,
            banner,
            target,
        }
    }
}

/// docs/gdb.md's sessions (```console,tested-by=tests/transcripts.rs): `mini-kvm run --gdb ...`
/// in one terminal, whose first line is compared, and gdb at its prompt in another. The test
/// replays each gdb session with `gdb -batch`, each `(gdb) COMMAND` line an `-ex COMMAND`, on a
/// waiting mini-kvm whose socket replaces the page's `…`; gdb must print what the page shows,
/// but for what its batch mode prints differently: no `Continuing.` (its prompt's), and
/// `[answered Y; input not from terminal]` where the page shows the `y` typed at a question.
#[test]
fn the_gdb_sessions_of_docs_gdb_md_are_real() {
    common::require_kvm();
    let found = Command::new("gdb")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(found, "this test drives the real gdb: apt-get install gdb");
    let file = "docs/gdb.md";
    let dir = common::scratch("gdb-sessions");
    // The OS's symbols, which the page writes just before (a transcript of its own).
    let symbols = common::mini_kvm_with(
        common::mini_kvm_command()
            .args(["symbols", "os", "-o", "os.elf"])
            .current_dir(&dir),
        b"",
    );
    assert_eq!(symbols.status, 0, "{symbols:?}");
    let mut waiting: Option<WaitingGuest> = None;
    let mut sessions = 0;
    let this_test = Kind::TestedBy("tests/transcripts.rs".to_string());
    for block in transcripts(file, &read(&repo().join(file))) {
        if block.kind != this_test {
            continue;
        }
        let [command] = &block.commands[..] else {
            panic!("{file}:{}: one command per session block", block.line)
        };
        let at = format!("{file}:{}", command.line);
        if let Some(args) = command.text.strip_prefix("mini-kvm ") {
            let guest = WaitingGuest::start(args, &dir);
            assert!(
                lines_match(&command.output, &[guest.banner.as_str()]),
                "{at}: mini-kvm printed\n{}\nbut the page shows\n{}",
                guest.banner,
                command.output.join("\n")
            );
            waiting = Some(guest);
            continue;
        }
        // gdb [FILE] -ex 'target remote TARGET'
        let rest = command
            .text
            .strip_prefix("gdb ")
            .unwrap_or_else(|| panic!("{at}: a session runs mini-kvm or gdb"));
        let (symbols, remote) = match rest.split_once(" -ex ") {
            Some((symbols, remote)) if !rest.starts_with("-ex ") => (Some(symbols), remote),
            _ => (None, rest.strip_prefix("-ex ").unwrap()),
        };
        let shown_target = remote
            .strip_prefix("'target remote ")
            .and_then(|target| target.strip_suffix('\''))
            .unwrap_or_else(|| panic!("{at}: gdb [FILE] -ex 'target remote TARGET'"));
        let mut guest = waiting
            .take()
            .unwrap_or_else(|| panic!("{at}: no mini-kvm waits for this gdb (show it before)"));
        assert!(
            line_matches(shown_target, &guest.target),
            "{at}: mini-kvm listens on {}",
            guest.target
        );
        let mut gdb = Command::new("gdb");
        gdb.args(["-batch", "-nx"]).current_dir(&dir);
        gdb.args(symbols);
        gdb.args(["-ex", &format!("target remote {}", guest.target)]);
        for line in &command.output {
            if let Some(gdb_command) = line.strip_prefix("(gdb) ") {
                gdb.args(["-ex", gdb_command]);
            }
        }
        let (printed, _) = run_interleaved(gdb, &format!("{at}: gdb"));
        let printed = printed.replace(
            "(y or n) [answered Y; input not from terminal]",
            "(y or n) y",
        );
        let actual: Vec<&str> = printed.lines().map(str::trim_end).collect();
        let expected: Vec<String> = command
            .output
            .iter()
            .filter(|line| !line.starts_with("(gdb) ") && *line != "Continuing.")
            .cloned()
            .collect();
        assert!(
            lines_match(&expected, &actual),
            "{at}: gdb printed\n{}\nbut the page shows (less its prompts)\n{}",
            actual.join("\n"),
            expected.join("\n")
        );
        common::wait_watched(&mut guest.child, "mini-kvm after gdb");
        sessions += 1;
    }
    assert_eq!(sessions, 2, "{file} shows two gdb sessions");
    let _ = fs::remove_dir_all(&dir);
}
