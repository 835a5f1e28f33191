//! Several guests in one run: each in its own VM, labelled lines, input routing, exit statuses.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use common::terminal::TerminalSession;
use common::{mini_kvm, mini_kvm_command, mini_kvm_with, require_kvm, test_guest};

/// The lines of guest `label` (e.g. "[2:counter]"), label stripped, each with its newline.
fn lines_of(stdout: &str, label: &str) -> String {
    let prefix = format!("{label} ");
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(|line| format!("{line}\n"))
        .collect()
}

#[test]
fn four_guests_each_print_exactly_their_single_run_output() {
    require_kvm();
    let names = ["hello", "counter", "multiplication", "fibonacci"];
    let run = mini_kvm(&["run", names[0], names[1], names[2], names[3]], b"");
    assert_eq!(run.status, 0, "{run:?}");
    let stdout = run.stdout_text();
    // Not a terminal: no colour.
    assert!(!stdout.contains('\x1b'), "{stdout:?}");
    let mut labelled_lines = 0;
    for (index, name) in names.iter().enumerate() {
        let single = mini_kvm(&["run", name], b"");
        assert_eq!(single.status, 0);
        let label = format!("[{}:{name}]", index + 1);
        let mine = lines_of(&stdout, &label);
        assert_eq!(mine, single.stdout_text(), "{label} in:\n{stdout}");
        labelled_lines += mine.lines().count();
    }
    // Every line belongs to exactly one guest: nothing mixed, nothing extra.
    assert_eq!(stdout.lines().count(), labelled_lines, "{stdout}");
    // The summary on stderr.
    for row in [
        "[1:hello]                0  exited 0",
        "[2:counter]              0  exited 0",
        "[3:multiplication]       0  exited 0",
        "[4:fibonacci]            0  exited 0",
    ] {
        assert!(run.stderr.contains(row), "no {row:?} in:\n{}", run.stderr);
    }
}

/// README.md's transcript of three guests (```console,tested-by=tests/multi_guest.rs): the
/// guests' lines come in the order they print them, which varies from run to run, so the lines
/// are compared as a set; the summary, on stderr, follows them.
#[test]
fn the_readmes_three_guests_are_the_real_output() {
    require_kvm();
    // Compiled in: the rig, which runs this test too, has no sources.
    let readme = include_str!("../README.md");
    let command = "mini-kvm run hello counter fibonacci";
    let block = format!("```console,tested-by=tests/multi_guest.rs\n$ {command}\n");
    let start = readme
        .find(&block)
        .expect("README.md shows the three guests")
        + block.len();
    let shown: Vec<&str> = readme[start..]
        .split("\n```\n")
        .next()
        .unwrap()
        .lines()
        .collect();
    // The guests' lines, then the summary table from its heading on.
    let heading = shown
        .iter()
        .position(|line| line.starts_with("guest "))
        .expect("the summary table");
    let (labelled, summary) = shown.split_at(heading);
    let run = mini_kvm(&["run", "hello", "counter", "fibonacci"], b"");
    assert_eq!(run.status, 0, "{run:?}");
    let stdout = run.stdout_text();
    let mut printed: Vec<&str> = stdout.lines().collect();
    let mut expected = labelled.to_vec();
    printed.sort();
    expected.sort();
    assert_eq!(printed, expected, "{run:?}");
    assert_eq!(run.stderr.lines().collect::<Vec<_>>(), summary, "{run:?}");
}

#[test]
fn the_same_guest_twice_and_files_mixed_with_names() {
    require_kvm();
    let exit42 = test_guest("exit42");
    let run = mini_kvm(&["run", "hello", exit42.to_str().unwrap(), "hello"], b"");
    assert_eq!(run.status, 42, "{run:?}");
    assert_eq!(
        lines_of(&run.stdout_text(), "[1:hello]"),
        "Hello, KVM!\n",
        "{run:?}"
    );
    assert_eq!(lines_of(&run.stdout_text(), "[3:hello]"), "Hello, KVM!\n");
    assert!(
        run.stderr.contains("[2:exit42.bin]      42  exited 42"),
        "{run:?}"
    );
}

#[test]
fn first_non_zero_status_wins_and_a_faulting_guest_ends_alone() {
    require_kvm();
    let triple = test_guest("triple_fault");
    let exit42 = test_guest("exit42");
    let forever = test_guest("forever");
    let run = mini_kvm(
        &[
            "run",
            "--timeout",
            "2",
            "counter",
            triple.to_str().unwrap(),
            forever.to_str().unwrap(),
            exit42.to_str().unwrap(),
            "matrix",
        ],
        b"",
    );
    // In guest order: counter 0, triple_fault 125 (first non-zero), forever 124, exit42 42.
    assert_eq!(run.status, 125, "{run:?}");
    let stdout = run.stdout_text();
    assert_eq!(lines_of(&stdout, "[1:counter]"), "0123456789\n");
    assert_eq!(lines_of(&stdout, "[2:triple_fault.bin]"), "before\n");
    assert_eq!(lines_of(&stdout, "[3:forever.bin]"), "looping\n");
    assert_eq!(
        lines_of(&stdout, "[5:matrix]"),
        "Matrix 8x8 multiplication\nC[0][0] = 162\nC[7][7] = 198\nsum = 16632\n"
    );
    for row in [
        "[1:counter]                0  exited 0",
        "[2:triple_fault.bin]     125  faulted: triple fault",
        "[3:forever.bin]          124  timed out",
        "[4:exit42.bin]            42  exited 42",
        "[5:matrix]                 0  exited 0",
        "mini-kvm: guest 'triple_fault.bin' faulted: triple fault (KVM_EXIT_SHUTDOWN)",
        "mini-kvm: guest 'forever.bin' was still running after 2.0 s (--timeout): stopped",
    ] {
        assert!(run.stderr.contains(row), "no {row:?} in:\n{}", run.stderr);
    }
}

#[test]
fn stats_add_exit_counts_to_the_summary() {
    require_kvm();
    let run = mini_kvm(&["run", "--stats", "hello", "minimal"], b"");
    assert_eq!(run.status, 0, "{run:?}");
    for row in [
        "guest        status    VM exits  how it ended",
        "[1:hello]         0           2  exited 0",
        "[2:minimal]       0           1  halted",
        "VM exits of 'hello': 2",
        "VM exits of 'minimal': 1",
    ] {
        assert!(run.stderr.contains(row), "no {row:?} in:\n{}", run.stderr);
    }
}

#[test]
fn raw_output_has_no_labels() {
    require_kvm();
    let run = mini_kvm(&["run", "--raw", "hello", "counter"], b"");
    assert_eq!(run.status, 0, "{run:?}");
    let mut lines: Vec<&str> = run.stdout_text().leak().lines().collect();
    lines.sort();
    assert_eq!(lines, ["0123456789", "Hello, KVM!"], "{run:?}");
}

#[test]
fn stdin_goes_to_the_first_guest_or_to_the_one_input_names() {
    require_kvm();
    let run = mini_kvm(&["run", "echo", "echo"], b"to the first\n");
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(lines_of(&run.stdout_text(), "[1:echo]"), "to the first\n");
    assert_eq!(lines_of(&run.stdout_text(), "[2:echo]"), "", "{run:?}");

    let run = mini_kvm(&["run", "--input", "2", "hello", "echo"], b"abc\n");
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(lines_of(&run.stdout_text(), "[2:echo]"), "abc\n", "{run:?}");

    let run = mini_kvm(&["run", "--input", "3", "hello", "echo"], b"");
    assert_eq!(run.status, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("mini-kvm: error: --input 3: there is no guest 3 (this run has 2)"),
        "{run:?}"
    );
    let run = mini_kvm(&["run", "--input", "0", "hello"], b"");
    common::assert_error(
        &run,
        2,
        "error: invalid value '0' for '--input <N>': 0 is not in 1..=65535",
    );
}

#[test]
fn a_partial_last_line_is_flushed_with_its_label() {
    require_kvm();
    // `echo` prints its input unchanged: here a line without a newline.
    let run = mini_kvm(&["run", "echo", "hello"], b"no newline");
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(lines_of(&run.stdout_text(), "[1:echo]"), "no newline\n");
}

#[test]
fn more_than_the_limit_is_refused() {
    let mut args = vec!["run"];
    args.extend(std::iter::repeat_n("minimal", 65));
    let run = mini_kvm(&args, b"");
    assert_eq!(run.status, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("mini-kvm: error: 65 guests is too many: mini-kvm runs at most 64 at once"),
        "{run:?}"
    );
}

#[test]
fn a_guest_cannot_see_another_guests_memory() {
    // mark_ram fills its whole first MiB with a marker and spins; scan_ram, once told to go,
    // counts markers in its whole first MiB: it must find only the one it wrote itself. The
    // scan starts only after mark_ram has said "marked", and mark_ram spins until it is stopped,
    // so both guests' memories are live during the scan.
    require_kvm();
    let mut child = mini_kvm_command()
        // The timeout is only a watchdog: a broken run ends and the reads below fail.
        .args(["run", "--timeout", "60", "--input", "2"])
        .arg(test_guest("mark_ram"))
        .arg(test_guest("scan_ram"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "[1:mark_ram.bin] marked\n");
    stdin.write_all(b"g").unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "[2:scan_ram.bin] markers seen: 1\n");
    // mark_ram would spin forever: end the run.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    require_kvm();
    // tmux shows the screen with its colours as SGR sequences of its own.
    let colour = terminal_screen("colour", "run hello counter", &[]);
    assert!(
        colour.contains("\x1b[36m[1:hello] \x1b[39mHello, KVM!"),
        "{colour:?}"
    );
    assert!(
        colour.contains("\x1b[33m[2:counter] \x1b[39m0123456789"),
        "{colour:?}"
    );
    let plain = terminal_screen("no-color-flag", "run --no-color hello counter", &[]);
    assert!(
        plain.contains("[1:hello] Hello, KVM!") && !plain.contains("\x1b["),
        "{plain:?}"
    );
    let plain = terminal_screen("no-color-env", "run hello counter", &[("NO_COLOR", "1")]);
    assert!(
        plain.contains("[1:hello] Hello, KVM!") && !plain.contains("\x1b["),
        "{plain:?}"
    );
    // Not a terminal: no colour (the other tests' runs all check this too).
    let piped = mini_kvm_with(mini_kvm_command().args(["run", "hello", "counter"]), b"");
    assert!(!piped.stdout_text().contains('\x1b'));
}
/// Runs mini-kvm on a real terminal and returns the screen, with its colours as escape
/// sequences.
fn terminal_screen(test: &str, args: &str, env: &[(&str, &str)]) -> String {
    let session = TerminalSession::on_screen(test, args, env);
    let status = session.finish();
    assert_eq!(status, 0, "{}", session.screen(false));
    session.wait_for_screen(&["STATUS=0"]);
    session.screen(true)
}

#[test]
fn a_guest_cannot_forge_another_guests_label() {
    require_kvm();
    let forger = test_guest("forge_label");
    let run = mini_kvm(&["run", forger.to_str().unwrap(), "hello"], b"");
    assert_eq!(run.status, 0, "{run:?}");
    let stdout = run.stdout_text();
    // The carriage return and the escape sequence are shown, not obeyed.
    assert_eq!(
        lines_of(&stdout, "[1:forge_label.bin]"),
        "^M^[[2K[2:hello] Hello, KVM!\n",
        "{run:?}"
    );
    assert_eq!(lines_of(&stdout, "[2:hello]"), "Hello, KVM!\n", "{run:?}");
    assert!(
        !stdout.contains('\r') && !stdout.contains('\x1b'),
        "{run:?}"
    );
    // --raw: the guest's bytes as they are.
    let raw = mini_kvm(&["run", "--raw", forger.to_str().unwrap()], b"");
    assert_eq!(raw.stdout, b"\r\x1b[2K[2:hello] Hello, KVM!\n", "{raw:?}");
}

#[test]
fn a_line_without_end_is_cut_every_64_kib() {
    require_kvm();
    let endless = test_guest("no_newline");
    // Waits for two cut lines and hello's line (an event, not a short --timeout), then stops it.
    let marker = b" [line cut: over 64 KiB without a newline]\n";
    let (stdout, _) = common::run_until(
        mini_kvm_command().args(["run", endless.to_str().unwrap(), "hello"]),
        |out| {
            out.windows(marker.len()).filter(|w| w == marker).count() >= 2
                && out.windows(12).any(|w| w == b"Hello, KVM!\n")
        },
    );
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    let cut = lines_of(&stdout, "[1:no_newline.bin]");
    let lines: Vec<&str> = cut.lines().collect();
    assert!(lines.len() >= 2, "{} lines", lines.len());
    // Every line but the last (written when it was stopped) was cut at 64 KiB, plus at most
    // one write of the guest (its 128-byte text).
    for line in &lines[..lines.len() - 1] {
        let text = line
            .strip_suffix(" [line cut: over 64 KiB without a newline]")
            .unwrap_or_else(|| panic!("no marker at the end of a {}-byte line", line.len()));
        assert!(text.bytes().all(|b| b == b'x'));
        assert!(
            (65536..65536 + 128).contains(&text.len()),
            "{} bytes",
            text.len()
        );
    }
    assert_eq!(lines_of(&stdout, "[2:hello]"), "Hello, KVM!\n");
}
