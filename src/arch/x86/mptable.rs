//! The MP table (Intel MultiProcessor Specification 1.4): how a guest learns how many CPUs it
//! has, their local APIC IDs, and where the IOAPIC is, the way PCs told their operating systems
//! before ACPI.
//!
//! ```text
//! BDA 0x40e: EBDA segment ──> MP floating pointer "_MP_" (16 bytes)
//!                               └──> configuration table "PCMP": header (44 bytes), then entries:
//!                                      processor × N (20 bytes each: APIC ID, BSP flag)
//!                                      bus (8: "ISA")
//!                                      IOAPIC (8: ID, address 0xfec00000)
//!                                      I/O interrupt × 16 (8 each: ISA IRQ n -> IOAPIC pin n)
//!                                      local interrupt × 2 (8 each: ExtINT -> LINT0, NMI -> LINT1)
//! ```
//!
//! The spec lets the floating pointer sit in "the first kilobyte of the Extended BIOS Data
//! Area", found through the BIOS Data Area word at 0x40e: mini-kvm puts the EBDA in its own
//! reserved tables (layout.rs), so the table needs no memory of its own. The ISA IRQs go to the
//! IOAPIC pins of the same number, as KVM's default interrupt routing wires them.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::ArchError;
use super::layout::{
    BDA_EBDA_SEGMENT, IOAPIC_ADDRESS, LOCAL_APIC_ADDRESS, MPTABLE_ADDRESS, MPTABLE_SIZE,
};

const FLOATING_POINTER_SIZE: usize = 16;
const HEADER_SIZE: usize = 44;
const PROCESSOR_ENTRY_SIZE: usize = 20;
const SHORT_ENTRY_SIZE: usize = 8;
const ISA_IRQS: u8 = 16;

/// Entry types.
const PROCESSOR: u8 = 0;
const BUS: u8 = 1;
const IOAPIC: u8 = 2;
const IO_INTERRUPT: u8 = 3;
const LOCAL_INTERRUPT: u8 = 4;
/// Interrupt types of interrupt entries.
const INT: u8 = 0;
const NMI: u8 = 1;
const EXT_INT: u8 = 3;
/// Processor flags: enabled, bootstrap processor.
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;
/// The local APIC version KVM's in-kernel APIC reports, and the IOAPIC's.
const LOCAL_APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
/// A processor signature (family 6) and feature flags (FPU, APIC), as firmware copies from CPUID.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

/// The most CPUs the table has room for in its space (layout::MPTABLE_SIZE).
pub const MAX_CPUS: usize = (MPTABLE_SIZE as usize
    - FLOATING_POINTER_SIZE
    - HEADER_SIZE
    - SHORT_ENTRY_SIZE * (3 + ISA_IRQS as usize))
    / PROCESSOR_ENTRY_SIZE;

const _: () = assert!(MAX_CPUS >= 64);

/// The whole structure for `cpus` CPUs (APIC IDs 0..cpus, CPU 0 the bootstrap processor), as
/// it sits at MPTABLE_ADDRESS.
pub fn build(cpus: usize) -> Vec<u8> {
    assert!((1..=MAX_CPUS).contains(&cpus), "{cpus} CPUs do not fit");
    let table_address = MPTABLE_ADDRESS as u32 + FLOATING_POINTER_SIZE as u32;
    let ioapic_id = cpus as u8; // the first ID after the CPUs'

    let mut entries = Vec::new();
    for apic_id in 0..cpus as u8 {
        entries.extend_from_slice(&[
            PROCESSOR,
            apic_id,
            LOCAL_APIC_VERSION,
            CPU_ENABLED | if apic_id == 0 { CPU_BSP } else { 0 },
        ]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
    }
    entries.extend_from_slice(&[BUS, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
    entries.extend_from_slice(&[IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_ADDRESS as u32).to_le_bytes());
    for irq in 0..ISA_IRQS {
        // Flags 0: polarity and trigger mode as the bus defines them (ISA: high, edge).
        entries.extend_from_slice(&[IO_INTERRUPT, INT, 0, 0, 0, irq, ioapic_id, irq]);
    }
    // Every local APIC (0xff): the 8259 PIC on LINT0, NMI on LINT1.
    entries.extend_from_slice(&[LOCAL_INTERRUPT, EXT_INT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[LOCAL_INTERRUPT, NMI, 0, 0, 0, 0, 0xff, 1]);
    let entry_count = cpus + 1 + 1 + ISA_IRQS as usize + 2;

    let mut table = Vec::with_capacity(HEADER_SIZE + entries.len());
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((HEADER_SIZE + entries.len()) as u16).to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum, below
    table.extend_from_slice(b"MINI-KVM");
    table.extend_from_slice(b"SMP GUESTS  ");
    table.extend_from_slice(&0u32.to_le_bytes()); // no OEM table
    table.extend_from_slice(&0u16.to_le_bytes());
    table.extend_from_slice(&(entry_count as u16).to_le_bytes());
    table.extend_from_slice(&(LOCAL_APIC_ADDRESS as u32).to_le_bytes());
    table.extend_from_slice(&[0, 0, 0, 0]); // no extended table, reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut floating = Vec::with_capacity(FLOATING_POINTER_SIZE + table.len());
    floating.extend_from_slice(b"_MP_");
    floating.extend_from_slice(&table_address.to_le_bytes());
    floating.push(1); // length in 16-byte units
    floating.push(4); // spec revision 1.4
    floating.push(0); // checksum, below
    floating.extend_from_slice(&[0; 5]); // feature bytes: a table is present, no IMCR
    floating[10] = checksum(&floating);
    floating.extend_from_slice(&table);
    floating
}

/// Writes the MP table for `cpus` CPUs, and the BDA's EBDA pointer that leads to it.
pub fn write(memory: &GuestMemoryMmap, cpus: usize) -> Result<(), ArchError> {
    memory.write_slice(&build(cpus), GuestAddress(MPTABLE_ADDRESS))?;
    memory.write_obj(
        (MPTABLE_ADDRESS >> 4) as u16,
        GuestAddress(BDA_EBDA_SEGMENT),
    )?;
    Ok(())
}

/// The byte that makes `bytes` sum to 0 (mod 256) when it replaces a zero in them.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
    }

    #[test]
    fn checksums_and_counts() {
        let mp = build(4);
        assert_eq!(&mp[..4], b"_MP_");
        assert_eq!(sum(&mp[..16]), 0);
        let table = &mp[16..];
        assert_eq!(&table[..4], b"PCMP");
        let length = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(length, table.len());
        assert_eq!(sum(table), 0);
        assert_eq!(
            u16::from_le_bytes([table[34], table[35]]),
            4 + 1 + 1 + 16 + 2
        );
        // Processor entries: APIC IDs 0..4, CPU 0 the BSP.
        for cpu in 0..4 {
            let entry = &table[44 + 20 * cpu..];
            assert_eq!(entry[0], PROCESSOR);
            assert_eq!(entry[1], cpu as u8);
            assert_eq!(entry[3], if cpu == 0 { 3 } else { 1 });
        }
        assert_eq!(
            u32::from_le_bytes(mp[4..8].try_into().unwrap()),
            MPTABLE_ADDRESS as u32 + 16
        );
    }

    #[test]
    fn the_largest_table_fits_its_room() {
        assert!(build(MAX_CPUS).len() as u64 <= MPTABLE_SIZE);
    }
}
