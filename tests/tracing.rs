//! `--verbose` (one line per VM exit) and `--stats` (a table at the end) print what they promise.

mod common;

use common::{assert_contains_all, mini_kvm, require_kvm, stats_value, test_guest, total_exits};

#[test]
fn verbose_traces_every_exit_with_its_instruction_and_port_data() {
    require_kvm();
    // Without coalescing, each byte `hello` writes to the UART is an exit of its own.
    let run = mini_kvm(&["run", "--verbose", "--no-coalesce", "hello"], b"");
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stdout, b"Hello, KVM!\n", "tracing goes to stderr only");
    let exits: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("exit #"))
        .collect();
    assert_eq!(exits.len(), 13, "{run:?}");
    for (i, (line, byte)) in exits.iter().zip(b"Hello, KVM!\n").enumerate() {
        assert!(
            line.starts_with(&format!("exit #{} IO_OUT ", i + 1)),
            "{line}"
        );
        // CS:IP in real mode, and the `out` that caused the exit, decoded (AT&T syntax).
        assert!(line.contains(" at 1000:"), "{line}");
        assert!(line.contains("out %al,%dx  [ee]"), "{line}");
        assert!(
            line.contains(&format!("port 0x03f8 (uart) out, size 1, data {byte:#04x}")),
            "{line}"
        );
    }
    assert!(exits[0].ends_with("data 0x48 'H'"), "{}", exits[0]);
    let last = exits[12];
    assert!(
        last.contains("port 0x0500 (hypercall) out, size 1, data 0x00"),
        "{last}"
    );
    assert_contains_all(
        &run.stderr,
        &[
            "    hypercall 0x00 EXIT(arg0=0x0, arg1=0x0, arg2=",
            "-> guest exits with status 0",
        ],
    );
}

#[test]
fn verbose_shows_coalesced_writes_before_the_exit_that_drained_them() {
    require_kvm();
    let run = mini_kvm(&["run", "--verbose", "hello"], b"");
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stdout, b"Hello, KVM!\n");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 14, "{run:?}");
    // The first byte is an exit of its own: it turns coalescing on.
    assert!(lines[0].starts_with("exit #1 IO_OUT "), "{}", lines[0]);
    assert!(lines[0].ends_with("data 0x48 'H'"), "{}", lines[0]);
    // The other 11 queue on the ring and are shown when the next exit drains them, before it.
    for (line, byte) in lines[1..12].iter().zip(b"ello, KVM!\n") {
        assert!(
            line.starts_with(&format!(
                "  coalesced write: port 0x03f8 (uart), size 1, data {byte:#04x}"
            )),
            "{line}"
        );
    }
    assert!(lines[12].starts_with("exit #2 IO_OUT "), "{}", lines[12]);
    assert!(lines[13].contains("hypercall 0x00 EXIT"), "{}", lines[13]);
}

#[test]
fn verbose_shows_hlt_and_unclaimed_ports() {
    require_kvm();
    let run = mini_kvm(&["run", "--verbose", "minimal"], b"");
    assert_eq!(run.status, 0, "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{run:?}");
    assert!(
        lines[0].starts_with("exit #1 HLT      at 1000:0001"),
        "{run:?}"
    );

    let guest = test_guest("unknown_port");
    let run = mini_kvm(&["run", "--verbose", guest.to_str().unwrap()], b"");
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stdout, b"255\n65535\n", "{run:?}");
    assert_contains_all(
        &run.stderr,
        &[
            "port 0x1234 (unclaimed) in, size 1, data 0xff",
            "port 0x1234 (unclaimed) in, size 2, data 0xffff",
            "unclaimed port 0x1234: reads: 2",
            "unclaimed port 0x1234: writes: 1",
            "unclaimed port 0x0080: writes: 1",
        ],
    );
}

#[test]
fn stats_table_counts_exits_by_reason_and_port_and_splits_the_time() {
    require_kvm();
    let run = mini_kvm(&["run", "--stats", "multiplication"], b"");
    assert_eq!(run.status, 0, "{run:?}");
    let stats = &run.stderr;
    let total = total_exits(stats) as f64;
    // Every exit of this guest is an `out` to the hypercall port: 8 rows of 9 entries, each a
    // few hypercalls, plus EXIT.
    assert_eq!(stats_value(stats, "IO_OUT"), total, "{stats}");
    assert_eq!(stats_value(stats, "0x0500 out"), total, "{stats}");
    assert_contains_all(
        stats,
        &[
            "  host KVM: ",
            "0x0500 out",
            "hypercall",
            "per exit (avg, us)",
        ],
    );
    let guest = stats_value(stats, "in guest (KVM_RUN)");
    let vmm = stats_value(stats, "in VMM");
    let all = stats_value(stats, "total run time");
    assert!((guest + vmm - all).abs() < 0.01, "{stats}");
    assert!(guest > 0.0 && all > 0.0, "{stats}");
}

#[test]
fn stats_of_a_faulting_guest_are_still_printed() {
    require_kvm();
    let guest = test_guest("triple_fault");
    let run = mini_kvm(&["run", "--stats", guest.to_str().unwrap()], b"");
    assert_eq!(run.status, 125, "{run:?}");
    assert!(run.stderr.contains("SHUTDOWN"), "{run:?}");
    assert_eq!(run.stdout, b"before\n", "{run:?}");
    // "before\n" in one WRITE hypercall, then the shutdown.
    assert_eq!(total_exits(&run.stderr), 2, "{run:?}");
    assert_eq!(stats_value(&run.stderr, "SHUTDOWN"), 1.0, "{run:?}");
}
