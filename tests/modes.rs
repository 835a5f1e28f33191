//! CPU modes for flat binaries and the built-in protected- and long-mode guests, on /dev/kvm:
//! exact outputs and statuses, and the errors of `--mode`, `--paging` and a host KVM without
//! 32-bit paging.

mod common;

use std::fs;

use common::{assert_error, host_kvm_module, mini_kvm, require_kvm, scratch, test_guest};

const SETUP_ERROR: i32 = 1;
const USAGE_ERROR: i32 = 2;

fn check(args: &[&str], expected: &str) {
    require_kvm();
    let run = mini_kvm(args, b"");
    assert_eq!(run.status, 0, "{args:?}: {run:?}");
    assert_eq!(run.stdout_text(), expected, "{args:?}: {run:?}");
}

#[test]
fn pm_hello_runs_in_protected_mode() {
    check(&["run", "pm_hello"], "Hello from 32-bit protected mode!\n");
}

#[test]
fn long_hello_runs_in_long_mode_with_64_bit_arguments() {
    check(
        &["run", "long_hello"],
        "Hello from 64-bit long mode!\n2^40 = 1099511627776\n",
    );
}

#[test]
fn a_flat_binary_from_disk_in_protected_mode() {
    let probe = test_guest("paging_probe");
    check(
        &["run", "--mode", "protected", probe.to_str().unwrap()],
        "protected mode, paging off\n",
    );
}

/// `mov $42,%ebx; mov $0,%al; mov $0x500,%dx; out %al,(%dx)`: the same bytes mean the same in
/// 32-bit and in 64-bit code, so one file checks both modes' entry at 0x10000.
const EXIT_42: &[u8] = &[
    0xbb, 0x2a, 0, 0, 0, 0xb0, 0x00, 0x66, 0xba, 0x00, 0x05, 0xee,
];

#[test]
fn flat_binaries_start_at_0x10000_in_protected_and_long_mode() {
    require_kvm();
    let dir = scratch("modes-exit42");
    let image = dir.join("exit42.bin");
    fs::write(&image, EXIT_42).unwrap();
    for mode in ["protected", "long"] {
        let run = mini_kvm(&["run", "--mode", mode, image.to_str().unwrap()], b"");
        assert_eq!(run.status, 42, "--mode {mode}: {run:?}");
        assert!(run.stderr.is_empty(), "--mode {mode}: {run:?}");
    }
}

#[test]
fn verbose_names_the_entry_mode() {
    require_kvm();
    let run = mini_kvm(&["run", "--verbose", "long_hello"], b"");
    assert_eq!(run.status, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("mini-kvm: 'long_hello' is a flat binary: starting in long mode"),
        "{run:?}"
    );
}

#[test]
fn real_mode_gets_an_irqchip_only_with_the_flag() {
    require_kvm();
    let timer = test_guest("timer_real");
    let run = mini_kvm(&["run", "--irqchip", timer.to_str().unwrap()], b"");
    assert_eq!(
        (run.status, run.stdout_text().as_str()),
        (0, "3 ticks\n"),
        "{run:?}"
    );
    // Without it: no PIC, no PIT, and the `hlt` waits for ever, which mini-kvm reports.
    let run = mini_kvm(&["run", timer.to_str().unwrap()], b"");
    assert_eq!(run.status, 127, "{run:?}");
    assert!(
        run.stderr
            .contains("`hlt` with interrupts enabled, but the guest has no interrupt controller"),
        "{run:?}"
    );
}

/// On kvm_pvm, 32-bit paging cannot run: mini-kvm says so before starting the guest. On
/// hardware KVM the same command must work (the rig runs `pm_paging_on_hardware_kvm`).
#[test]
fn paging_on_a_host_without_32_bit_paging_is_refused_by_name() {
    require_kvm();
    let probe = test_guest("paging_probe");
    for (args, hardware_output) in [
        (vec!["run", "pm_paging"], PM_PAGING_OUTPUT),
        (
            vec![
                "run",
                "--mode",
                "protected",
                "--paging",
                probe.to_str().unwrap(),
            ],
            PAGING_PROBE_OUTPUT,
        ),
    ] {
        let run = mini_kvm(&args, b"");
        match host_kvm_module() {
            "kvm_pvm" => assert_error(
                &run,
                SETUP_ERROR,
                "mini-kvm: error: the host KVM (kvm_pvm) cannot run 32-bit paging: \
                 KVM_SET_SREGS dropped CR0.PG",
            ),
            "kvm_amd" | "kvm_intel" => {
                assert_eq!(run.status, 0, "{args:?}: {run:?}");
                assert_eq!(run.stdout_text(), hardware_output, "{args:?}: {run:?}");
                assert_eq!(run.stderr, "", "{args:?}: {run:?}");
            }
            other => panic!("unknown host KVM module {other}: cannot say what {args:?} does"),
        }
    }
}

const PM_PAGING_OUTPUT: &str = "written at 0x80020000, read at 0x00020000\n\
                                the same dword at both addresses\n\
                                a hypercall pointer in the alias works too\n";
const PAGING_PROBE_OUTPUT: &str = "protected mode, paging on\nalias ok\n";
const INT80_OUTPUT: &str =
    "kernel: entering ring 3\nuser: hello through int $0x80\nkernel: exit(0) from ring 3\n";

#[test]
#[ignore = "needs hardware KVM: run in the rig (tests/hw-kvm/run)"]
fn pm_paging_on_hardware_kvm() {
    check(&["run", "pm_paging"], PM_PAGING_OUTPUT);
}

#[test]
#[ignore = "needs hardware KVM: run in the rig (tests/hw-kvm/run)"]
fn paging_flag_on_hardware_kvm() {
    let probe = test_guest("paging_probe");
    check(
        &[
            "run",
            "--mode",
            "protected",
            "--paging",
            probe.to_str().unwrap(),
        ],
        PAGING_PROBE_OUTPUT,
    );
}

#[test]
fn mode_errors() {
    let probe = test_guest("paging_probe");
    let probe = probe.to_str().unwrap();
    let run = mini_kvm(&["run", "--mode", "unreal", probe], b"");
    assert_eq!(run.status, USAGE_ERROR, "{run:?}");
    assert!(
        run.stderr
            .contains("'unreal' is not a CPU mode: give real, protected or long"),
        "{run:?}"
    );
    for args in [
        vec!["run", "--mode", "long", "--paging", probe],
        vec!["run", "--paging", probe],
    ] {
        assert_error(
            &mini_kvm(&args, b""),
            SETUP_ERROR,
            "mini-kvm: error: --paging needs --mode protected (long mode always has paging; \
             real mode has none)",
        );
    }
    assert_error(
        &mini_kvm(&["run", "--mode", "long", "hello"], b""),
        SETUP_ERROR,
        "mini-kvm: error: 'hello' is a built-in guest that starts in real mode: --mode and \
         --paging apply to flat binaries from disk",
    );
    assert_error(
        &mini_kvm(&["run", "--cmdline", "x", probe], b""),
        SETUP_ERROR,
        "mini-kvm: error: paging_probe.bin is a flat binary: --cmdline applies only to multiboot, \
         PVH and Linux kernels",
    );
}

/// The textbook system call (`int $0x80` from ring 3, `iret` back) on hardware KVM.
#[test]
#[ignore = "needs hardware KVM: run in the rig (tests/hw-kvm/run)"]
fn int_0x80_system_call_on_hardware_kvm() {
    let guest = test_guest("int80");
    check(
        &["run", "--mode", "protected", guest.to_str().unwrap()],
        INT80_OUTPUT,
    );
}

/// On kvm_pvm the same guest stops at its first protected-mode `iret`, which KVM's instruction
/// emulator cannot run: the reason the built-in `interrupts` guest uses sysenter/sysexit.
#[test]
fn int_0x80_guest_on_an_emulating_host() {
    require_kvm();
    match host_kvm_module() {
        "kvm_pvm" => {}
        "kvm_amd" | "kvm_intel" => {
            // Hardware KVM runs it, to the end.
            let guest = test_guest("int80");
            check(
                &["run", "--mode", "protected", guest.to_str().unwrap()],
                INT80_OUTPUT,
            );
            return;
        }
        other => panic!("unknown host KVM module {other}: cannot say what int80 does"),
    }
    let guest = test_guest("int80");
    let run = mini_kvm(
        &["run", "--mode", "protected", guest.to_str().unwrap()],
        b"",
    );
    assert_eq!(run.status, 126, "{run:?}");
    assert_eq!(run.stdout, b"kernel: entering ring 3\n", "{run:?}");
    assert!(
        run.stderr
            .contains("the host KVM could not emulate this instruction")
            && run.stderr.contains(": iret  [cf]\n"),
        "{run:?}"
    );
}
