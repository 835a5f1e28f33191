//! Kernels by format (ELF32, ELF64, PVH, multiboot), detected by content and started in the
//! mode their format defines, with their boot information; and every loader error.

mod common;

use std::fs;

use common::{assert_error, mini_kvm, require_kvm, scratch, test_kernel};

const SETUP_ERROR: i32 = 1;

fn check(args: &[&str], expected: &str) {
    require_kvm();
    let run = mini_kvm(args, b"");
    assert_eq!(run.status, 0, "{args:?}: {run:?}");
    assert_eq!(run.stdout_text(), expected, "{args:?}: {run:?}");
    assert!(run.stderr.is_empty(), "{args:?}: {run:?}");
}

fn kernel(name: &str) -> String {
    test_kernel(name).to_str().unwrap().to_string()
}

#[test]
fn elf32_starts_in_protected_mode_at_its_entry() {
    check(
        &["run", "--mem", "2M", &kernel("elf32")],
        "ELF32 kernel: protected mode at e_entry 1048576\n",
    );
}

#[test]
fn elf64_starts_in_long_mode_at_its_entry() {
    check(
        &["run", "--mem", "2M", &kernel("elf64")],
        "ELF64 kernel: long mode, RIP 1048576\n",
    );
}

#[test]
fn pvh_starts_at_the_note_entry_with_start_info() {
    check(
        &[
            "run",
            "--mem",
            "2M",
            "--cmdline",
            "pvh args",
            &kernel("pvh"),
        ],
        "PVH: 32-bit entry, hvm_start_info magic 0x336ec578\n\
         memory map: 3 entries\n\
         cmdline: pvh args\n",
    );
}

#[test]
fn multiboot_gets_magic_memory_map_and_command_line() {
    check(
        &[
            "run",
            "--mem",
            "4M",
            "--cmdline",
            "hello world",
            &kernel("multiboot"),
        ],
        "multiboot: EAX = 0x2BADB002\n\
         mem_lower 640 KiB, mem_upper 3072 KiB\n\
         memory map: 3 entries\n\
         boot loader: mini-kvm\n\
         cmdline: hello world\n",
    );
}

/// RAM beyond the MMIO hole's start (3 GiB) continues at 4 GiB: a fourth memory map entry, and
/// mem_upper counts only the RAM below the hole (3 GiB - 1 MiB). The RAM is never touched.
#[test]
fn ram_above_the_mmio_hole_is_a_fourth_memory_map_entry() {
    check(
        &[
            "run",
            "--mem",
            "5G",
            "--cmdline",
            "big",
            &kernel("multiboot"),
        ],
        "multiboot: EAX = 0x2BADB002\n\
         mem_lower 640 KiB, mem_upper 3144704 KiB\n\
         memory map: 4 entries\n\
         boot loader: mini-kvm\n\
         cmdline: big\n",
    );
    check(
        &["run", "--mem", "5G", &kernel("pvh")],
        "PVH: 32-bit entry, hvm_start_info magic 0x336ec578\n\
         memory map: 4 entries\n\
         cmdline: \n",
    );
}

#[test]
fn multiboot_without_a_command_line_gets_an_empty_one() {
    require_kvm();
    let run = mini_kvm(&["run", "--mem", "2M", &kernel("multiboot")], b"");
    assert_eq!(run.status, 0, "{run:?}");
    assert!(run.stdout_text().ends_with("cmdline: \n"), "{run:?}");
}

#[test]
fn a_kernel_beyond_guest_ram_is_refused() {
    assert_error(
        &mini_kvm(&["run", &kernel("elf32")], b""),
        SETUP_ERROR,
        "mini-kvm: error: elf32.elf does not fit in guest memory: it loads 0x100000-0x100059, \
         but guest RAM ends at 0x100000: give the guest more memory with --mem (e.g. --mem 2M)",
    );
}

/// Copies a test kernel with some bytes patched.
fn patched(test: &str, name: &str, patches: &[(usize, &[u8])]) -> String {
    let mut bytes = fs::read(test_kernel(name)).unwrap();
    for (offset, value) in patches {
        bytes[*offset..*offset + value.len()].copy_from_slice(value);
    }
    let path = scratch(test).join(format!("{name}.elf"));
    fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn an_elf_for_another_machine_is_refused() {
    // e_machine is the 16-bit field at offset 18.
    let arm = patched("elf-arm", "elf32", &[(18, &40u16.to_le_bytes())]);
    assert_error(
        &mini_kvm(&["run", "--mem", "2M", &arm], b""),
        SETUP_ERROR,
        "mini-kvm: error: elf32.elf is an ELF32 file for ARM (e_machine 40), not for x86: \
         mini-kvm runs x86 guests only",
    );
    let aarch64 = patched("elf-aarch64", "elf64", &[(18, &183u16.to_le_bytes())]);
    assert_error(
        &mini_kvm(&["run", "--mem", "2M", &aarch64], b""),
        SETUP_ERROR,
        "mini-kvm: error: elf64.elf is an ELF64 file for AArch64 (e_machine 183), not for x86",
    );
}

#[test]
fn a_segment_over_the_vmm_tables_is_refused() {
    // The first program header of our ELF32 kernels is at e_phoff = 52; p_paddr is at +12.
    let low = patched("elf-low", "elf32", &[(52 + 12, &0x2000u32.to_le_bytes())]);
    assert_error(
        &mini_kvm(&["run", &low], b""),
        SETUP_ERROR,
        "mini-kvm: error: elf32.elf loads 0x2000-0x2059, overlapping the VMM's own tables at \
         0x1000-0x9000 (GDT, TSS, boot information, page tables; see docs/memory-map.md): link \
         it at 0x9000 or above (1 MiB is usual for kernels)",
    );
}

#[test]
fn mode_flags_do_not_apply_to_kernels() {
    assert_error(
        &mini_kvm(
            &["run", "--mem", "2M", "--mode", "long", &kernel("elf32")],
            b"",
        ),
        SETUP_ERROR,
        "mini-kvm: error: elf32.elf is an ELF32 file, which starts in the mode its format \
         defines: --mode and --paging apply only to flat binaries",
    );
    assert_error(
        &mini_kvm(
            &["run", "--mem", "2M", "--cmdline", "x", &kernel("elf64")],
            b"",
        ),
        SETUP_ERROR,
        "mini-kvm: error: elf64.elf is an ELF64 file: --cmdline applies only to multiboot, \
         PVH and Linux kernels",
    );
}

#[test]
fn a_command_line_too_long_for_the_boot_page_is_refused() {
    let long = "x".repeat(4000);
    assert_error(
        &mini_kvm(
            &[
                "run",
                "--mem",
                "2M",
                "--cmdline",
                &long,
                &kernel("multiboot"),
            ],
            b"",
        ),
        SETUP_ERROR,
        "mini-kvm: error: the command line is 4000 bytes: at most 3583 fit in the boot \
         information page",
    );
}

#[test]
fn a_kernel_that_ends_in_cli_hlt_ends_the_run() {
    // No --timeout: the watchdog of the test helpers fails the test if the run never ends.
    check(&["run", "--mem", "2M", &kernel("cli_hlt")], "halting\n");
}
