//! Tests that need hardware KVM (kvm_intel or kvm_amd), which our development and CI machines lack:
//! their /dev/kvm is kvm_pvm, which runs every guest instruction in KVM's emulator (docs/testing.md).
//!
//! Each test here is `#[ignore = "needs hardware KVM: run in the rig (tests/hw-kvm/run)"]`: a host
//! `cargo test` lists it as ignored with that reason, and the hardware-KVM rig, which runs every
//! test executable with `--include-ignored` on kvm_amd, runs it. On a machine with hardware KVM,
//! `cargo test -- --include-ignored` runs them too.

mod common;

use common::{host_kvm_module, mini_kvm, require_kvm, test_guest};

/// Fails, saying why, unless /dev/kvm is backed by hardware virtualization.
fn require_hardware_kvm() {
    require_kvm();
    let module = host_kvm_module();
    assert!(
        module == "kvm_amd" || module == "kvm_intel",
        "this test needs hardware KVM (kvm_amd or kvm_intel), and /dev/kvm here is {module}: \
         run it in the hardware-KVM rig, tests/hw-kvm/run"
    );
}

#[test]
#[ignore = "needs hardware KVM: run in the rig (tests/hw-kvm/run)"]
fn popcnt_runs_natively_on_hardware_kvm() {
    require_hardware_kvm();
    let guest = test_guest("popcnt");
    let run = mini_kvm(&["run", guest.to_str().unwrap()], b"");
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stdout, b"popcnt:4\n", "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
}
