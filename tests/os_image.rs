//! The teaching OS image contains no instruction our hosts' KVM cannot emulate (docs/testing.md):
//! every executable section of the kernel and of the user programs is decoded with iced-x86,
//! and any SSE, x87, MMX, AVX, popcnt, crc32 (SSE4.2), cmpxchg16b or xsave instruction fails
//! the test, listed with its address.
//!
//! SSE *moves* would run, but the OS is built without SSE at all (build.rs, OS_RUSTFLAGS), so
//! any SSE instruction means the flags did not apply (or precompiled `core` code slipped in,
//! e.g. through `core::fmt`).

use std::path::Path;

use iced_x86::{Decoder, DecoderOptions, Formatter, GasFormatter, Instruction};

/// CPUID features whose instructions the host KVM cannot emulate, by name prefix.
const FORBIDDEN: &[&str] = &[
    "SSE",
    "SSSE3",
    "AVX",
    "FMA",
    "F16C",
    "FPU",
    "MMX",
    "D3NOW",
    "POPCNT",
    "CMPXCHG16B",
    "XSAVE",
    "FXSR",
    "AES",
    "PCLMULQDQ",
    "SHA",
];

fn forbidden(instruction: &Instruction) -> Option<String> {
    instruction
        .cpuid_features()
        .iter()
        .map(|feature| format!("{feature:?}"))
        .find(|name| FORBIDDEN.iter().any(|prefix| name.starts_with(prefix)))
}

/// One section of an ELF64 file: name, address, bytes, executable.
struct Section<'a> {
    name: String,
    address: u64,
    bytes: &'a [u8],
    executable: bool,
}

fn sections(elf: &[u8]) -> Vec<Section<'_>> {
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap());
    assert_eq!(&elf[..5], b"\x7fELF\x02", "not an ELF64 file");
    let (table, entry_size, count, names_index) = (
        u64_at(0x28) as usize,
        u16_at(0x3a),
        u16_at(0x3c),
        u16_at(0x3e),
    );
    let header = |i: usize| table + i * entry_size;
    let names_offset = u64_at(header(names_index) + 0x18) as usize;
    (0..count)
        .map(|i| {
            let h = header(i);
            let name_start = names_offset + u32_at(h);
            let name_end = name_start + elf[name_start..].iter().position(|&b| b == 0).unwrap();
            let (kind, flags) = (u32_at(h + 4), u64_at(h + 8));
            let (offset, size) = (u64_at(h + 0x18) as usize, u64_at(h + 0x20) as usize);
            const SHT_NOBITS: usize = 8;
            const SHF_EXECINSTR: u64 = 4;
            Section {
                name: String::from_utf8_lossy(&elf[name_start..name_end]).into_owned(),
                address: u64_at(h + 0x10),
                bytes: if kind == SHT_NOBITS || size == 0 {
                    &[]
                } else {
                    &elf[offset..offset + size]
                },
                executable: flags & SHF_EXECINSTR != 0,
            }
        })
        .collect()
}

/// Decodes `bytes` (at `address`, `bitness`-bit code) and returns the offending instructions.
fn check_code(bytes: &[u8], address: u64, bitness: u32) -> (usize, Vec<String>) {
    let mut decoder = Decoder::with_ip(bitness, bytes, address, DecoderOptions::NONE);
    let mut formatter = GasFormatter::new();
    let mut instruction = Instruction::default();
    let (mut decoded, mut bad) = (0, Vec::new());
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        decoded += 1;
        if let Some(feature) = forbidden(&instruction) {
            let mut text = String::new();
            formatter.format(&instruction, &mut text);
            bad.push(format!("{:#x}: {text} ({feature})", instruction.ip()));
        }
    }
    (decoded, bad)
}

fn check_elf(path: &Path) -> Vec<String> {
    let elf = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut bad = Vec::new();
    let mut decoded = 0;
    for section in sections(&elf).iter().filter(|s| s.executable) {
        // The multiboot entry stub runs in 32-bit protected mode (src/kernel/boot.rs).
        let bitness = if section.name == ".boot32" { 32 } else { 64 };
        let (count, found) = check_code(section.bytes, section.address, bitness);
        decoded += count;
        bad.extend(
            found
                .into_iter()
                .map(|b| format!("{} {}: {b}", path.display(), section.name)),
        );
    }
    assert!(decoded > 100, "{}: almost no code decoded", path.display());
    bad
}

#[test]
fn the_os_image_has_no_instruction_the_host_kvm_cannot_emulate() {
    let dir = Path::new(env!("OUT_DIR")).join("os");
    let mut bad = check_elf(&dir.join("kernel.elf"));
    bad.extend(check_elf(&dir.join("user.elf")));
    assert!(
        bad.is_empty(),
        "instructions KVM's emulator cannot run, in the teaching OS:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_check_finds_what_it_looks_for() {
    // xorps %xmm0,%xmm0; popcnt %eax,%eax; crc32b %al,%eax; fld1; cmpxchg16b (%rax);
    // xsave (%rax); then harmless code: mov %rax,%rbx; ret.
    let code = [
        0x0f, 0x57, 0xc0, 0xf3, 0x0f, 0xb8, 0xc0, 0xf2, 0x0f, 0x38, 0xf0, 0xc0, 0xd9, 0xe8, 0x48,
        0x0f, 0xc7, 0x08, 0x0f, 0xae, 0x20, 0x48, 0x89, 0xc3, 0xc3,
    ];
    let (decoded, bad) = check_code(&code, 0x1000, 64);
    assert_eq!(decoded, 8);
    assert_eq!(bad.len(), 6, "{bad:#?}");
    assert!(bad[0].starts_with("0x1000: xorps"), "{bad:#?}");
}
