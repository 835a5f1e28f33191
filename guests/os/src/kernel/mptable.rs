//! How many CPUs the machine has, from the Intel MP table, the way PCs told operating systems
//! before ACPI. mini-kvm writes one (its src/arch/x86/mptable.rs, `--cpus N`):
//!
//! ```text
//! BIOS data area, 0x40e: the EBDA's segment ──> "_MP_" floating pointer (16 bytes, in the
//! EBDA's first KiB) ──> "PCMP" configuration table: a 44-byte header, then entries; each
//! processor entry (type 0, 20 bytes) is one CPU, the others are 8 bytes.
//! ```
//!
//! The kernel only counts the CPUs: it runs on CPU 0 and leaves the others waiting for the
//! INIT and STARTUP messages that would start them (mini-kvm's `smp` guest shows that part).
//! [`cpu_count`] runs before paging::init unmaps page 0, where the BIOS data area lives.

/// Where the BIOS data area keeps the EBDA's segment.
const BDA_EBDA_SEGMENT: u64 = 0x40e;
const HEADER_SIZE: u64 = 44;
const PROCESSOR: u8 = 0;
const PROCESSOR_ENTRY_SIZE: u64 = 20;
const OTHER_ENTRY_SIZE: u64 = 8;
const CPU_ENABLED: u8 = 1;

fn byte(address: u64) -> u8 {
    // SAFETY: the boot mapping identity-maps the first GiB, and the MP table lies in low RAM.
    unsafe { core::ptr::read_volatile(address as *const u8) }
}

fn u16_at(address: u64) -> u16 {
    u16::from_le_bytes([byte(address), byte(address + 1)])
}

fn u32_at(address: u64) -> u32 {
    u32::from_le_bytes([
        byte(address),
        byte(address + 1),
        byte(address + 2),
        byte(address + 3),
    ])
}

/// The bytes of a table sum to 0 (mod 256): its checksum byte makes it so.
fn checksum_ok(address: u64, length: u64) -> bool {
    (0..length).fold(0u8, |sum, i| sum.wrapping_add(byte(address + i))) == 0
}

/// The number of enabled CPUs the MP table lists, or `None` when there is no valid table.
pub fn cpu_count(ram_end: u64) -> Option<u64> {
    let ebda = u64::from(u16_at(BDA_EBDA_SEGMENT)) << 4;
    if ebda == 0 || ebda + 1024 > ram_end {
        return None;
    }
    let floating = (ebda..ebda + 1024).step_by(16).find(|&at| {
        [byte(at), byte(at + 1), byte(at + 2), byte(at + 3)] == *b"_MP_" && checksum_ok(at, 16)
    })?;
    let table = u64::from(u32_at(floating + 4));
    let length = u64::from(u16_at(table + 4));
    let valid = table != 0
        && table + length <= ram_end
        && [
            byte(table),
            byte(table + 1),
            byte(table + 2),
            byte(table + 3),
        ] == *b"PCMP"
        && checksum_ok(table, length);
    if !valid {
        return None;
    }
    let entries = u16_at(table + 34);
    let mut at = table + HEADER_SIZE;
    let mut cpus = 0;
    for _ in 0..entries {
        if at >= table + length {
            break;
        }
        if byte(at) == PROCESSOR {
            if byte(at + 3) & CPU_ENABLED != 0 {
                cpus += 1;
            }
            at += PROCESSOR_ENTRY_SIZE;
        } else {
            at += OTHER_ENTRY_SIZE;
        }
    }
    Some(cpus)
}
