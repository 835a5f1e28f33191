//! Coalesced port I/O: writes to the UART's transmit register and the debug console queue on
//! KVM's ring instead of exiting, from the guest's first write to one of them on; the output is
//! byte for byte the same, in the same order.

mod common;

use common::{mini_kvm, require_kvm, stats_value, test_guest, total_exits};

#[test]
fn hello_needs_two_exits_instead_of_thirteen() {
    require_kvm();
    let coalesced = mini_kvm(&["run", "--stats", "hello"], b"");
    let plain = mini_kvm(&["run", "--stats", "--no-coalesce", "hello"], b"");
    for run in [&coalesced, &plain] {
        assert_eq!(run.status, 0, "{run:?}");
        assert_eq!(run.stdout, b"Hello, KVM!\n", "{run:?}");
    }
    // The first byte exits (and turns coalescing on), the other 11 queue, then EXIT.
    assert_eq!(total_exits(&coalesced.stderr), 2, "{coalesced:?}");
    assert_eq!(total_exits(&plain.stderr), 13, "{plain:?}");
    // The UART writes are still counted: 1 exit, and 11 writes that made no exit.
    assert!(
        coalesced
            .stderr
            .contains("coalesced (no exit)      writes  device")
    );
    let coalesced_stats = coalesced
        .stderr
        .split("coalesced (no exit)")
        .collect::<Vec<_>>();
    assert_eq!(stats_value(coalesced_stats[0], "0x03f8 out"), 1.0);
    assert_eq!(stats_value(coalesced_stats[1], "0x03f8 out"), 11.0);
    assert_eq!(stats_value(&plain.stderr, "0x03f8 out"), 12.0);
}

#[test]
fn order_across_coalesced_and_exiting_ports_is_kept() {
    require_kvm();
    // UART 'A' (an exit, which turns coalescing on), debugcon 'B' (coalesced), PUTCHAR 'C'
    // and WRITE "D\n" (exits), EXIT.
    let guest = test_guest("mixed_output");
    for extra in [&[][..], &["--no-coalesce"][..]] {
        let mut args = vec!["run", "--stats"];
        args.extend_from_slice(extra);
        args.push(guest.to_str().unwrap());
        let run = mini_kvm(&args, b"");
        assert_eq!(run.status, 0, "{run:?}");
        assert_eq!(run.stdout, b"ABCD\n", "{run:?}");
        let expected_exits = if extra.is_empty() { 4 } else { 5 };
        assert_eq!(total_exits(&run.stderr), expected_exits, "{run:?}");
    }
}

#[test]
fn writes_queued_before_a_timeout_are_not_lost() {
    require_kvm();
    let guest = test_guest("uart_then_spin");
    let run = mini_kvm(&["run", "--timeout", "0.5", guest.to_str().unwrap()], b"");
    assert_eq!(run.status, 124, "{run:?}");
    assert_eq!(run.stdout, b"spinning\n", "{run:?}");
}

#[test]
fn a_guest_that_prints_nothing_never_registers_coalescing() {
    // Registering costs a KVM grace period at teardown: `minimal` must not pay it. Its single
    // exit is the `hlt`, and nothing shows up as coalesced.
    require_kvm();
    let run = mini_kvm(&["run", "--stats", "minimal"], b"");
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(total_exits(&run.stderr), 1, "{run:?}");
    assert!(!run.stderr.contains("coalesced"), "{run:?}");
}
