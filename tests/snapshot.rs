//! Snapshots (docs/snapshot.md): a guest saved by `mini-kvm run --snapshot-on-output TEXT
//! --snapshot DIR` and taken on by `mini-kvm restore DIR` in a new process prints, after the
//! same input, exactly what a run never stopped prints, and ends with the same status: a
//! built-in guest between two lines, and the teaching OS in the middle of a shell session, with
//! its timer and keyboard interrupts live (the PIC, IOAPIC, PIT and local APIC states). A bad
//! snapshot gets its exact error, and no guest runs; what this version cannot save is refused
//! before the guest starts.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::Instant;

use common::os::{MENU, transcript};
use common::{Run, assert_error, mini_kvm, mini_kvm_command, require_kvm, scratch, test_guest};

fn path_text(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The message a snapshotting run ends with.
fn saved_message(guest: &str, dir: &Path, ram_kib: u64, written_kib: u64) -> String {
    format!(
        "mini-kvm: guest '{guest}' saved to the snapshot {dir} and stopped ({ram_kib} KiB of RAM, \
         {written_kib} KiB of it written); go on with: mini-kvm restore {dir}\n",
        dir = dir.display()
    )
}

/// Runs `mini-kvm ARGS` with `input` on a stdin that stays open until mini-kvm has ended, as
/// a person's terminal does: the guest never sees the end of its input.
fn run_with_open_stdin(args: &[&str], input: &[u8]) -> Run {
    let mut child = mini_kvm_command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mini-kvm");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    let mut stdout_pipe = child.stdout.take().unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stdout = thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout_pipe.read_to_end(&mut bytes);
        bytes
    });
    let stderr = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    // mini-kvm's own --timeout bounds the wait.
    let status = child.wait().unwrap();
    drop(stdin);
    Run {
        status: status.code().expect("mini-kvm was killed"),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

#[test]
fn a_guest_restored_between_two_lines_prints_the_rest_exactly() {
    require_kvm();
    let dir = scratch("multiplication").join("snap");
    let whole = mini_kvm(&["run", "--timeout", "60", "multiplication"], b"");
    assert_eq!(whole.status, 0, "{whole:?}");
    assert_eq!(whole.stdout_text().lines().count(), 8, "{whole:?}");

    let saved = mini_kvm(
        &[
            "run",
            "--timeout",
            "60",
            "--snapshot-on-output",
            "4x9=36",
            "--snapshot",
            path_text(&dir),
            "multiplication",
        ],
        b"",
    );
    assert_eq!(saved.status, 0, "{saved:?}");
    assert_eq!(saved.stderr, saved_message("multiplication", &dir, 1024, 4));
    // The snapshot was taken at the first exit after the text: the guest had printed up to it.
    let before = saved.stdout_text();
    assert!(before.ends_with("4x9=36"), "{saved:?}");

    let restored = mini_kvm(&["restore", "--timeout", "60", path_text(&dir)], b"");
    assert_eq!(restored.stderr, "", "{restored:?}");
    assert_eq!(restored.status, whole.status, "{restored:?}");
    assert_eq!(
        format!("{before}{}", restored.stdout_text()),
        whole.stdout_text()
    );

    // The RAM file keeps the holes of the pages the guest never wrote: 1 MiB long, one page on
    // disk (the guest's code and data; the file system may round up to its block).
    let ram = std::fs::metadata(dir.join("ram")).unwrap();
    assert_eq!(ram.len(), 1 << 20);
    assert!(ram.blocks() * 512 < 64 << 10, "{} blocks", ram.blocks());

    // A snapshot restores as often as one likes: the RAM file is mapped copy-on-write, never
    // written.
    let again = mini_kvm(&["restore", "--timeout", "60", path_text(&dir)], b"");
    assert_eq!(again.stdout, restored.stdout, "{again:?}");
}

#[test]
fn a_guest_saved_after_a_number_of_exits_goes_on_exactly() {
    require_kvm();
    // `multiplication` makes one exit per hypercall (PUTNUM, PUTCHAR...): a few hundred.
    let dir = scratch("after-exits").join("snap");
    let whole = mini_kvm(&["run", "--timeout", "60", "multiplication"], b"");
    let saved = mini_kvm(
        &[
            "run",
            "--timeout",
            "60",
            "--snapshot-after-exits",
            "100",
            "--snapshot",
            path_text(&dir),
            "multiplication",
        ],
        b"",
    );
    assert_eq!(saved.status, 0, "{saved:?}");
    let before = saved.stdout_text();
    assert!(
        !before.is_empty() && before.len() < whole.stdout.len(),
        "{saved:?}"
    );
    let restored = mini_kvm(&["restore", "--timeout", "60", path_text(&dir)], b"");
    assert_eq!(restored.status, whole.status, "{restored:?}");
    assert_eq!(
        format!("{before}{}", restored.stdout_text()),
        whole.stdout_text()
    );

    // More exits than the guest makes: it ends first.
    let run = mini_kvm(
        &[
            "run",
            "--snapshot-after-exits",
            "1000000",
            "--snapshot",
            path_text(&dir),
            "hello",
        ],
        b"",
    );
    assert_eq!(
        run.stderr,
        "mini-kvm: guest 'hello' ended before 1000000 VM exits: no snapshot was taken\n"
    );
    assert_eq!(run.status, 0, "{run:?}");

    // --snapshot needs its moment; the two moments exclude each other.
    let run = mini_kvm(&["run", "--snapshot", path_text(&dir), "hello"], b"");
    assert_error(
        &run,
        1,
        "--snapshot DIR needs its moment: --snapshot-on-output TEXT or --snapshot-after-exits N",
    );
    let run = mini_kvm(
        &[
            "run",
            "--snapshot-after-exits",
            "5",
            "--snapshot-on-output",
            "x",
            "--snapshot",
            path_text(&dir),
            "hello",
        ],
        b"",
    );
    assert_eq!(run.status, 2, "{run:?}");
    assert!(run.stderr.contains("cannot be used with"), "{run:?}");
}

#[test]
fn a_kernel_saved_while_its_timer_ticks_counts_on_after_a_restore() {
    require_kvm();
    // `interrupts`, a protected-mode kernel, counts ten PIT ticks right after printing this
    // line, then reads a line from the keyboard: saved there, the PIT's channel 0, the PIC and
    // the kernel's tick count must all go on from where they were.
    let dir = scratch("ticking").join("snap");
    let whole = mini_kvm(&["run", "--timeout", "60", "interrupts"], b"hello\n");
    assert_eq!(whole.status, 0, "{whole:?}");
    let saved = mini_kvm(
        &[
            "run",
            "--timeout",
            "60",
            "--snapshot-on-output",
            "interrupts on\n",
            "--snapshot",
            path_text(&dir),
            "interrupts",
        ],
        b"",
    );
    assert_eq!(saved.status, 0, "{saved:?}");
    assert!(
        saved
            .stdout_text()
            .ends_with("PIT: channel 0 at 100 Hz; interrupts on\n")
    );
    let restored = mini_kvm(&["restore", "--timeout", "60", path_text(&dir)], b"hello\n");
    assert_eq!(restored.status, whole.status, "{restored:?}");
    assert!(
        restored.stdout_text().starts_with("timer: 10 ticks\n"),
        "{restored:?}"
    );
    assert_eq!(
        format!("{}{}", saved.stdout_text(), restored.stdout_text()),
        whole.stdout_text()
    );
}

#[test]
fn bytes_in_the_uart_fifo_and_its_interrupt_go_on_after_a_restore() {
    require_kvm();
    // tests/guests/uart_irq.S sleeps in `hlt` and echoes what IRQ 4 brings: saved after its
    // first echo, the rest of the line waits in the UART's receive FIFO, and its interrupt
    // (the PIC's state, the UART's interrupt enable) must bring it after the restore.
    let guest = test_guest("uart_irq");
    let dir = scratch("uart-fifo").join("snap");
    let saved = mini_kvm(
        &[
            "run",
            "--irqchip",
            "--timeout",
            "60",
            "--snapshot-on-output",
            "a",
            "--snapshot",
            path_text(&dir),
            path_text(&guest),
        ],
        b"abc\n",
    );
    assert_eq!(saved.stdout_text(), "a", "{saved:?}");
    assert_eq!(saved.status, 0, "{saved:?}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    assert_eq!(
        state["devices"]["uart"]["receive_fifo"],
        serde_json::json!(b"bc\n")
    );
    assert_eq!(state["devices"]["uart"]["interrupt_enable"], 1);
    let restored = mini_kvm(&["restore", "--timeout", "60", path_text(&dir)], b"");
    assert_eq!(restored.stdout_text(), "bc\n", "{restored:?}");
    assert_eq!(restored.status, 0, "{restored:?}");
}

/// The calculator's session, cut after its first result.
const FIRST_PART: &str = "6\n42 + 58\n";
const SECOND_PART: &str = "7 * 6\nq\n0\n";

#[test]
fn the_os_restored_in_the_middle_of_a_shell_session_finishes_it_exactly() {
    require_kvm();
    let dir = scratch("os-session").join("snap");
    let whole = mini_kvm(
        &["run", "--timeout", "60", "os"],
        format!("{FIRST_PART}{SECOND_PART}").as_bytes(),
    );
    let intro = "\n=== Simple Calculator ===\nEnter two numbers and operator (+, -, *, /)\n\
        Example: 12 + 5\nType 'q' to quit\n\n";
    let calculator = format!(
        "{intro}Calculate: 42 + 58\nResult: 100\nCalculate: 7 * 6\nResult: 42\n\
         Calculate: q\nExiting calculator\n"
    );
    assert_eq!(
        whole.stdout_text(),
        transcript(&[("6", &calculator), ("0", "")]).replace(&format!("0\n{MENU}"), "0\n"),
        "{whole:?}"
    );
    assert_eq!(whole.status, 0, "{whole:?}");

    // The first part typed, the terminal left open: saved once the result is out, the OS's
    // timer ticking and its keyboard interrupt enabled.
    let saved = run_with_open_stdin(
        &[
            "run",
            "--timeout",
            "120",
            "--snapshot-on-output",
            "Result: 100\n",
            "--snapshot",
            path_text(&dir),
            "os",
        ],
        FIRST_PART.as_bytes(),
    );
    assert_eq!(saved.status, 0, "{saved:?}");
    assert!(
        saved.stderr.starts_with(&format!(
            "mini-kvm: guest 'os' saved to the snapshot {} and stopped (16384 KiB of RAM, ",
            dir.display()
        )),
        "{saved:?}"
    );
    let before = saved.stdout_text();
    assert!(before.ends_with("Result: 100\n"), "{saved:?}");

    let restored = mini_kvm(
        &["restore", "--timeout", "60", path_text(&dir)],
        SECOND_PART.as_bytes(),
    );
    assert_eq!(restored.stderr, "", "{restored:?}");
    assert_eq!(restored.status, whole.status, "{restored:?}");
    assert_eq!(
        format!("{before}{}", restored.stdout_text()),
        whole.stdout_text()
    );
}

#[test]
fn input_typed_ahead_of_the_guest_goes_with_the_snapshot() {
    require_kvm();
    // `echo` takes its input a byte at a time (GETCHAR): at the snapshot, "def\n" has arrived
    // and waits in mini-kvm's input buffer, not yet in the guest.
    let dir = scratch("typed-ahead").join("snap");
    let saved = mini_kvm(
        &[
            "run",
            "--timeout",
            "60",
            "--snapshot-on-output",
            "abc\n",
            "--snapshot",
            path_text(&dir),
            "echo",
        ],
        b"abc\ndef\n",
    );
    assert_eq!(saved.status, 0, "{saved:?}");
    assert_eq!(saved.stdout_text(), "abc\n", "{saved:?}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["input"], serde_json::json!(b"def\n"));
    // The restored guest reads it first, then its own stdin (empty: the end of input, on which
    // `echo` exits with 0).
    let restored = mini_kvm(&["restore", "--timeout", "60", path_text(&dir)], b"");
    assert_eq!(restored.stdout_text(), "def\n", "{restored:?}");
    assert_eq!(restored.status, 0, "{restored:?}");

    // The teaching OS takes typed-ahead keys at once, into its own line buffer in guest RAM:
    // with all of a session's input given to the first process, the restored one needs none.
    let dir = scratch("typed-ahead-os").join("snap");
    let input = format!("{FIRST_PART}{SECOND_PART}");
    let whole = mini_kvm(&["run", "--timeout", "60", "os"], input.as_bytes());
    let saved = mini_kvm(
        &[
            "run",
            "--timeout",
            "60",
            "--snapshot-on-output",
            "Result: 100\n",
            "--snapshot",
            path_text(&dir),
            "os",
        ],
        input.as_bytes(),
    );
    assert_eq!(saved.status, 0, "{saved:?}");
    let restored = mini_kvm(&["restore", "--timeout", "60", path_text(&dir)], b"");
    assert_eq!(restored.status, whole.status, "{restored:?}");
    assert_eq!(
        format!("{}{}", saved.stdout_text(), restored.stdout_text()),
        whole.stdout_text()
    );
}

/// A good snapshot of `fibonacci` (real mode, no irqchip: quick), taken once per test.
fn fibonacci_snapshot(test: &str) -> PathBuf {
    require_kvm();
    let dir = scratch(test).join("snap");
    let saved = mini_kvm(
        &[
            "run",
            "--snapshot-on-output",
            "13",
            "--snapshot",
            path_text(&dir),
            "fibonacci",
        ],
        b"",
    );
    assert_eq!(saved.status, 0, "{saved:?}");
    dir
}

/// `mini-kvm restore DIR` fails with `message` (the whole of stderr) and runs no guest.
fn assert_refused(dir: &Path, message: &str) {
    let run = mini_kvm(&["restore", path_text(dir)], b"");
    assert_error(&run, 1, message);
    assert_eq!(
        run.stderr,
        format!("mini-kvm: error: {message}\n"),
        "{run:?}"
    );
}

fn edit_state(dir: &Path, edit: impl Fn(String) -> String) {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changed nothing");
    std::fs::write(&path, edited).unwrap();
}

#[test]
fn a_missing_snapshot_is_refused() {
    require_kvm();
    let dir = scratch("missing").join("nothing-here");
    assert_refused(
        &dir,
        &format!(
            "no snapshot at {}: there is no such directory",
            dir.display()
        ),
    );
    std::fs::create_dir_all(&dir).unwrap();
    assert_refused(
        &dir,
        &format!(
            "no snapshot at {}: cannot read state.json: No such file or directory (os error 2)",
            dir.display()
        ),
    );
}

#[test]
fn a_truncated_or_corrupted_state_file_is_refused() {
    let dir = fibonacci_snapshot("corrupted");
    let state = dir.join("state.json");
    let original = std::fs::read_to_string(&state).unwrap();

    std::fs::write(&state, &original[..original.len() / 2]).unwrap();
    let run = mini_kvm(&["restore", path_text(&dir)], b"");
    let lines = original[..original.len() / 2].lines().count();
    assert_error(
        &run,
        1,
        &format!(
            "{} is not a readable snapshot state: EOF while parsing",
            state.display()
        ),
    );
    assert!(
        run.stderr.contains(&format!("at line {lines} column")),
        "{run:?}"
    );

    // A state file far larger than any snapshot's (sparse: no disk space): refused before it
    // is read whole.
    let huge = std::fs::File::create(&state).unwrap();
    huge.set_len(1 << 30).unwrap();
    drop(huge);
    assert_refused(
        &dir,
        &format!(
            "{} is not a readable snapshot state: it is larger than 16 MiB, which no snapshot's \
             state is",
            state.display()
        ),
    );

    std::fs::write(&state, "{ not json").unwrap();
    assert_refused(
        &dir,
        &format!(
            "{} is not a readable snapshot state: key must be a string at line 1 column 3",
            state.display()
        ),
    );

    std::fs::write(
        &state,
        original.replace("mini-kvm snapshot", "something else"),
    )
    .unwrap();
    assert_refused(
        &dir,
        &format!(
            "{} is not a readable snapshot state: it does not say \"format\": \"mini-kvm snapshot\"",
            state.display()
        ),
    );

    // A register that is not a number: the parser says which and where.
    std::fs::write(&state, &original).unwrap();
    edit_state(&dir, |text| {
        let rip = text.find("\"rip\": \"").unwrap() + "\"rip\": \"".len();
        let end = rip + text[rip..].find('"').unwrap();
        format!("{}0xnot-hex{}", &text[..rip], &text[end..])
    });
    let line = std::fs::read_to_string(&state)
        .unwrap()
        .lines()
        .position(|line| line.contains("0xnot-hex"))
        .unwrap()
        + 1;
    let run = mini_kvm(&["restore", path_text(&dir)], b"");
    assert_error(
        &run,
        1,
        &format!(
            "{} is not a readable snapshot state: '0xnot-hex' is not a hex number at line {line} column",
            state.display()
        ),
    );

    // A local APIC page cut short (KVM's structures are checked for their size).
    std::fs::write(&state, &original).unwrap();
    edit_state(&dir, |text| {
        text.replacen("\"events\": \"", "\"events\": \"00", 1)
    });
    assert_refused(
        &dir,
        &format!(
            "the snapshot's state is not valid: events: {} bytes where {} were expected",
            size_of::<kvm_bindings::kvm_vcpu_events>() + 1,
            size_of::<kvm_bindings::kvm_vcpu_events>()
        ),
    );
}

#[test]
fn another_version_or_host_is_refused() {
    let dir = fibonacci_snapshot("version");
    let state = dir.join("state.json");
    edit_state(&dir, |text| {
        text.replace("\"version\": 1,", "\"version\": 2,")
    });
    assert_refused(
        &dir,
        &format!(
            "{} is a version 2 snapshot, and this mini-kvm reads version 1 only: take the snapshot \
             again with this mini-kvm",
            state.display()
        ),
    );
    edit_state(&dir, |text| {
        text.replace("\"version\": 2,", "\"version\": 1,")
    });

    let text = std::fs::read_to_string(&state).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let kvm = value["host"]["kvm"].as_str().unwrap().to_string();
    let vendor = value["host"]["cpu_vendor"].as_str().unwrap().to_string();
    let other = if kvm == "kvm_intel" {
        "kvm_amd"
    } else {
        "kvm_intel"
    };
    edit_state(&dir, |text| {
        text.replace(
            &format!("\"kvm\": \"{kvm}\""),
            &format!("\"kvm\": \"{other}\""),
        )
    });
    assert_refused(
        &dir,
        &format!(
            "the snapshot was taken on {other} on an {vendor} CPU, and this host is {kvm} on an \
             {vendor} CPU: a snapshot goes on only on the same host KVM and CPU vendor (its CPU \
             state and MSRs are theirs)"
        ),
    );
}

#[test]
fn a_ram_file_of_the_wrong_size_is_refused() {
    let dir = fibonacci_snapshot("ram-size");
    let ram = dir.join("ram");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&ram)
        .unwrap()
        .set_len(4096)
        .unwrap();
    assert_refused(
        &dir,
        &format!(
            "{} is 4096 bytes, and the snapshot's guest RAM is 1048576 bytes: the RAM file is cut \
             short or belongs to another snapshot",
            ram.display()
        ),
    );
    // RAM regions where mini-kvm would not put them (over the devices' windows).
    edit_state(&dir, |text| {
        text.replacen(
            "\"guest_address\": \"0x0\"",
            "\"guest_address\": \"0xd0000000\"",
            1,
        )
    });
    assert_refused(
        &dir,
        "the snapshot's state is not valid: its RAM regions are not where mini-kvm puts 1048576 \
         bytes of RAM",
    );
    edit_state(&dir, |text| {
        text.replacen(
            "\"guest_address\": \"0xd0000000\"",
            "\"guest_address\": \"0x0\"",
            1,
        )
    });
    std::fs::remove_file(&ram).unwrap();
    assert_refused(
        &dir,
        &format!(
            "cannot open the RAM file {}: No such file or directory (os error 2)",
            ram.display()
        ),
    );
}

#[test]
fn what_this_version_cannot_save_is_refused_before_the_guest_runs() {
    require_kvm();
    let dir = scratch("refused").join("snap");
    let dir = path_text(&dir);
    for (options, what) in [
        (&["--cpus", "2", "smp"][..], "several vCPUs (--cpus)"),
        (&["--rng", "os"][..], "the virtio entropy device (--rng)"),
        (
            &["--screen-dump", "/dev/null", "vga_text"][..],
            "the display (--display, --screen-dump, --screenshot)",
        ),
        (&["hello", "counter"][..], "several guests"),
        (&["--gdb", "hello"][..], "a debugger's state (--gdb)"),
        (&["--disk", "/dev/null", "os"][..], "a virtio disk (--disk)"),
    ] {
        let mut args = vec!["run", "--snapshot-on-output", "x", "--snapshot", dir];
        args.extend_from_slice(options);
        let run = mini_kvm(&args, b"");
        assert_error(
            &run,
            1,
            &format!(
                "--snapshot: this version of snapshots cannot save {what} yet \
                 (docs/snapshot.md lists what it saves)"
            ),
        );
    }
    assert!(!Path::new(dir).exists());

    let run = mini_kvm(
        &[
            "run",
            "--snapshot-on-output",
            "",
            "--snapshot",
            dir,
            "hello",
        ],
        b"",
    );
    assert_error(
        &run,
        1,
        "--snapshot-on-output needs a text to wait for (e.g. --snapshot-on-output '> ')",
    );
    // A guest that ends before the text: its own end, and a note that nothing was saved.
    let run = mini_kvm(
        &[
            "run",
            "--snapshot-on-output",
            "never printed",
            "--snapshot",
            dir,
            "hello",
        ],
        b"",
    );
    assert_eq!(run.stdout_text(), "Hello, KVM!\n", "{run:?}");
    assert_eq!(
        run.stderr,
        "mini-kvm: guest 'hello' ended before its output showed \"never printed\": no snapshot \
         was taken\n"
    );
    assert_eq!(run.status, 0, "{run:?}");
    assert!(!Path::new(dir).join("state.json").exists());

    // A directory that cannot be made is an error before the guest runs.
    let file = scratch("refused-file").join("a-file");
    std::fs::write(&file, b"").unwrap();
    let run = mini_kvm(
        &[
            "run",
            "--snapshot-on-output",
            "x",
            "--snapshot",
            path_text(&file),
            "hello",
        ],
        b"",
    );
    assert_error(
        &run,
        1,
        &format!(
            "cannot create the snapshot directory {}: File exists (os error 17)",
            file.display()
        ),
    );
}

/// Prints how long a restore takes against a cold start, and what the snapshot takes on disk
/// (`cargo test --test snapshot -- --ignored --nocapture`). No assertion on the times: they are
/// for reading.
#[test]
#[ignore = "a measurement: run it with --ignored --nocapture"]
fn restore_time_against_a_cold_start() {
    require_kvm();
    let dir = scratch("timing").join("snap");
    // Saved at the shell's first prompt: the boot is behind it.
    let saved = run_with_open_stdin(
        &[
            "run",
            "--snapshot-on-output",
            "Select: ",
            "--snapshot",
            path_text(&dir),
            "os",
        ],
        b"",
    );
    assert_eq!(saved.status, 0, "{saved:?}");
    let time = |args: &[&str]| {
        let started = Instant::now();
        let run = mini_kvm(args, b"0\n");
        assert_eq!(run.status, 0, "{run:?}");
        started.elapsed()
    };
    for _ in 0..3 {
        let cold = time(&["run", "os"]);
        let restored = time(&["restore", path_text(&dir)]);
        println!(
            "os (16 MiB) to the shell's prompt and out: cold start {:.1} ms, restore {:.1} ms",
            cold.as_secs_f64() * 1e3,
            restored.as_secs_f64() * 1e3
        );
    }
    for file in ["ram", "state.json"] {
        let metadata = std::fs::metadata(dir.join(file)).unwrap();
        println!(
            "{file}: {} bytes long, {} bytes on disk",
            metadata.len(),
            metadata.blocks() * 512
        );
    }
}
