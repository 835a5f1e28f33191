//! QEMU's firmware configuration device (src/devices/fw_cfg.rs), read by a guest of our own
//! (tests/guests/kernels32/fw_cfg.S) through its ports 0x510 and 0x511, as guests written for
//! QEMU read it.

mod common;

use common::{mini_kvm, require_kvm, test_kernel};

fn fw_cfg_output(args: &[&str]) -> String {
    require_kvm();
    let kernel = test_kernel("fw_cfg");
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.push(kernel.to_str().unwrap());
    let run = mini_kvm(&all, b"");
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");
    run.stdout_text()
}

#[test]
fn a_guest_reads_the_machine_from_fw_cfg() {
    assert_eq!(
        fw_cfg_output(&["--mem", "4M", "--cpus", "2", "--cmdline", "hello fw_cfg"]),
        "fw_cfg signature: QEMU\n\
         id: 1\n\
         cpus: 2, max cpus: 2\n\
         ram: 4194304 bytes (high dword 0)\n\
         cmdline: hello fw_cfg\n\
         files: 1\n\
         file etc/e820: 60 bytes at selector 32\n\
         e820: 0 KiB, 4 KiB long, type 1\n\
         e820: 4 KiB, 32 KiB long, type 2\n\
         e820: 36 KiB, 4060 KiB long, type 1\n"
    );
}

#[test]
fn ram_above_4_gib_and_no_command_line() {
    // 5 GiB: 3 GiB below the MMIO hole, 2 GiB from 4 GiB on; the 64-bit RAM size says 5 GiB.
    assert_eq!(
        fw_cfg_output(&["--mem", "5G"]),
        "fw_cfg signature: QEMU\n\
         id: 1\n\
         cpus: 1, max cpus: 1\n\
         ram: 1073741824 bytes (high dword 1)\n\
         cmdline: (none)\n\
         files: 1\n\
         file etc/e820: 80 bytes at selector 32\n\
         e820: 0 KiB, 4 KiB long, type 1\n\
         e820: 4 KiB, 32 KiB long, type 2\n\
         e820: 36 KiB, 3145692 KiB long, type 1\n\
         e820: 4194304 KiB, 2097152 KiB long, type 1\n"
    );
}
