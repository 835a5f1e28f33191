//! The hypercall ABI (docs/hypercall-abi.md) and the other guest ports, call by call, from real
//! guests: results, error codes for bad pointers, lengths and call numbers, input and output.

mod common;

use common::{Run, mini_kvm, require_kvm, test_guest};

fn run_test_guest(name: &str, input: &[u8]) -> Run {
    require_kvm();
    let guest = test_guest(name);
    mini_kvm(&["run", "--timeout", "30", guest.to_str().unwrap()], input)
}

#[test]
fn every_call_and_every_error_result() {
    let run = run_test_guest("hc_errors", b"");
    assert_eq!(
        run.stdout_text(),
        "unknown=65535\n\
         write_crosses_ram_end=65534\n\
         write_outside_ram=65534\n\
         write_len0=0\n\
         write(hi)=2\n\
         read_cap0=65533\n\
         read_crosses_ram_end=65534\n\
         exit300=65533\n\
         putchar(!)=0\n\
         putnum(12345)=0\n\
         newline(\n)=0\n\
         getchar_eof=65535\n\
         read_eof=0\n\
         clock=ok\n",
        "{run:?}"
    );
    // EXIT(7) after all that: the status is the process's.
    assert_eq!(run.status, 7, "{run:?}");
    assert!(
        run.stderr.is_empty(),
        "failed calls are reported only with --verbose: {run:?}"
    );
}

#[test]
fn failed_calls_are_reported_with_verbose() {
    require_kvm();
    let guest = test_guest("hc_errors");
    let run = mini_kvm(&["run", "--verbose", guest.to_str().unwrap()], b"");
    assert_eq!(run.status, 7, "{run:?}");
    for line in [
        "hypercall 0x42 unknown(arg0=",
        ") -> -1 (unknown call number)",
        "hypercall 0x05 WRITE(arg0=0xff00, arg1=0x200, arg2=",
        ") -> -2 (EFAULT: the buffer is not (all) in guest memory)",
        "hypercall 0x06 READ(arg0=",
        ") -> -3 (invalid argument)",
        "hypercall 0x00 EXIT(arg0=0x12c, arg1=",
        "hypercall 0x00 EXIT(arg0=0x7, arg1=",
        "-> guest exits with status 7",
    ] {
        assert!(run.stderr.contains(line), "no {line:?} in:\n{}", run.stderr);
    }
}

#[test]
fn getchar_and_read_share_the_input() {
    let run = run_test_guest("hc_read", b"xhello");
    assert_eq!(run.stdout_text(), "120\ngot 5: hello\neof\n", "{run:?}");
    assert_eq!(run.status, 0);

    let alphabet: Vec<u8> = std::iter::once(b'x').chain(b'a'..=b'z').collect();
    let run = run_test_guest("hc_read", &alphabet);
    assert_eq!(
        run.stdout_text(),
        "120\ngot 16: abcdefghijklmnop\ngot 10: qrstuvwxyz\neof\n",
        "{run:?}"
    );

    let run = run_test_guest("hc_read", b"");
    assert_eq!(run.stdout_text(), "65535\neof\n", "{run:?}");
    assert_eq!(run.status, 0);
}

#[test]
fn uart_receives_stdin_and_transmits_to_stdout() {
    let run = run_test_guest("uart_echo", b"abc\n");
    assert_eq!(run.stdout, b"abc\n", "{run:?}");
    assert_eq!(run.status, 0);
}

#[test]
fn output_from_every_device_keeps_its_order() {
    let run = run_test_guest("mixed_output", b"");
    assert_eq!(run.stdout, b"ABCD\n", "{run:?}");
    assert_eq!(run.status, 0);
}

#[test]
fn unclaimed_ports_read_all_ones() {
    let run = run_test_guest("unknown_port", b"");
    assert_eq!(run.stdout, b"255\n65535\n", "{run:?}");
    assert_eq!(run.status, 0);
}

#[test]
fn qemu_debug_console_and_isa_debug_exit() {
    let run = run_test_guest("debug_exit", b"");
    assert_eq!(run.stdout, b"bye\n", "{run:?}");
    assert_eq!(run.status, 33, "{run:?}");
}
