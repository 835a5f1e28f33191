//! The Global Descriptor Table and Task State Segment the VMM builds in guest memory for guests
//! that start outside real mode (docs/memory-map.md).
//!
//! `KVM_SET_SREGS` loads the *hidden* part of each segment register (base, limit, attributes)
//! directly, so a guest could start in protected mode with no GDT at all, until its first
//! `mov %ax, %ds` or interrupt reloads a segment from the table. We therefore also write the
//! same descriptors into guest memory and point GDTR at them: the guest's view and the CPU's agree.
//!
//! One table serves 32-bit and 64-bit guests:
//!
//! | selector | descriptor |
//! |---|---|
//! | 0x00 | null |
//! | 0x08 | 32-bit code, base 0, limit 4 GiB, ring 0 |
//! | 0x10 | data, base 0, limit 4 GiB, ring 0 (DS, ES, FS, GS, SS) |
//! | 0x18 | 64-bit code (L=1), ring 0 |
//! | 0x20 | TSS (16 bytes: a 64-bit TSS descriptor is two slots; its first half is also a valid 32-bit one) |

use kvm_bindings::kvm_segment;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::ArchError;
use super::layout::{GDT_ADDRESS, TSS_ADDRESS};

pub const CODE32_SELECTOR: u16 = 0x08;
pub const DATA_SELECTOR: u16 = 0x10;
pub const CODE64_SELECTOR: u16 = 0x18;
pub const TSS_SELECTOR: u16 = 0x20;

/// The size of a 32-bit TSS; its limit is this minus one.
const TSS_SIZE: u64 = 104;

/// Access byte bits: present, descriptor type "code/data" (S), and the type field.
const PRESENT: u8 = 0x80;
const CODE_OR_DATA: u8 = 0x10;
const TYPE_CODE_READ: u8 = 0xa; // execute/read
const TYPE_DATA_WRITE: u8 = 0x2; // read/write
const TYPE_TSS_BUSY: u8 = 0xb; // a TSS loaded in TR is "busy"

/// Flag nibble bits: granularity (limit in 4 KiB units), 32-bit default size, 64-bit code.
const GRANULARITY_4K: u8 = 0x8;
const SIZE_32: u8 = 0x4;
const LONG_MODE: u8 = 0x2;

/// One segment as both the 8-byte descriptor in the GDT and the `kvm_segment` KVM loads.
#[derive(Clone, Copy)]
struct Descriptor {
    base: u32,
    /// 20-bit limit, in bytes or in 4 KiB units (GRANULARITY_4K).
    limit: u32,
    access: u8,
    flags: u8,
}

impl Descriptor {
    const fn flat(type_: u8, flags: u8) -> Descriptor {
        Descriptor {
            base: 0,
            limit: 0xfffff,
            access: PRESENT | CODE_OR_DATA | type_,
            flags: GRANULARITY_4K | flags,
        }
    }

    const CODE32: Descriptor = Descriptor::flat(TYPE_CODE_READ, SIZE_32);
    const DATA: Descriptor = Descriptor::flat(TYPE_DATA_WRITE, SIZE_32);
    const CODE64: Descriptor = Descriptor::flat(TYPE_CODE_READ, LONG_MODE);
    const TSS: Descriptor = Descriptor {
        base: TSS_ADDRESS as u32,
        limit: (TSS_SIZE - 1) as u32,
        access: PRESENT | TYPE_TSS_BUSY,
        flags: 0,
    };

    /// The x86 descriptor layout: limit and base are split over the 8 bytes. (A `const fn`, so
    /// the table below is computed at compile time; hence `as` rather than `From`.)
    const fn encode(self) -> u64 {
        let base = self.base as u64;
        let limit = self.limit as u64;
        (limit & 0xffff)
            | (base & 0xff_ffff) << 16
            | (self.access as u64) << 40
            | (limit >> 16 & 0xf) << 48
            | (self.flags as u64) << 52
            | (base >> 24 & 0xff) << 56
    }

    fn segment(self, selector: u16) -> kvm_segment {
        let granular = self.flags & GRANULARITY_4K != 0;
        kvm_segment {
            base: u64::from(self.base),
            // KVM wants the limit in bytes: scaled up when the granularity is 4 KiB.
            limit: if granular {
                (self.limit << 12) | 0xfff
            } else {
                self.limit
            },
            selector,
            type_: self.access & 0xf,
            present: (self.access & PRESENT != 0).into(),
            dpl: 0,
            db: (self.flags & SIZE_32 != 0).into(),
            s: (self.access & CODE_OR_DATA != 0).into(),
            l: (self.flags & LONG_MODE != 0).into(),
            g: granular.into(),
            avl: 0,
            unusable: 0,
            padding: 0,
        }
    }
}

/// The table, in selector order (the TSS takes two slots).
const GDT: [u64; 6] = [
    0,
    Descriptor::CODE32.encode(),
    Descriptor::DATA.encode(),
    Descriptor::CODE64.encode(),
    Descriptor::TSS.encode(),
    0, // bits 32-63 of the TSS base (0) in long mode
];

/// GDTR's limit: the table's size minus one.
pub const GDT_LIMIT: u16 = (GDT.len() * 8 - 1) as u16;

/// Writes the GDT and a zeroed TSS into guest memory.
pub fn write_gdt_and_tss(memory: &GuestMemoryMmap) -> Result<(), ArchError> {
    let bytes: Vec<u8> = GDT.iter().flat_map(|d| d.to_le_bytes()).collect();
    memory.write_slice(&bytes, GuestAddress(GDT_ADDRESS))?;
    // A zeroed TSS: no ring-0 stack (a guest that switches rings sets up its own TSS), and an
    // I/O permission bitmap offset of 0 that points inside the TSS limit, i.e. no bitmap.
    memory.write_slice(&[0u8; TSS_SIZE as usize], GuestAddress(TSS_ADDRESS))?;
    Ok(())
}

/// The segment registers for 32-bit code: CS, then the data segment for DS/ES/FS/GS/SS.
pub fn protected_mode_segments() -> (kvm_segment, kvm_segment) {
    (
        Descriptor::CODE32.segment(CODE32_SELECTOR),
        Descriptor::DATA.segment(DATA_SELECTOR),
    )
}

/// CS for 64-bit code.
pub fn long_mode_code_segment() -> kvm_segment {
    Descriptor::CODE64.segment(CODE64_SELECTOR)
}

/// The task register: the TSS above.
pub fn task_register() -> kvm_segment {
    Descriptor::TSS.segment(TSS_SELECTOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_match_the_textbook_values() {
        assert_eq!(GDT[1], 0x00cf_9a00_0000_ffff);
        assert_eq!(GDT[2], 0x00cf_9200_0000_ffff);
        assert_eq!(GDT[3], 0x00af_9a00_0000_ffff);
        assert_eq!(GDT[4], 0x0000_8b00_1080_0067);
    }

    #[test]
    fn segments_are_flat() {
        let (code, data) = protected_mode_segments();
        assert_eq!(
            (code.base, code.limit, code.db, code.type_),
            (0, 0xffff_ffff, 1, 0xa)
        );
        assert_eq!((data.base, data.limit, data.s), (0, 0xffff_ffff, 1));
        let code64 = long_mode_code_segment();
        assert_eq!((code64.l, code64.db), (1, 0));
    }
}
