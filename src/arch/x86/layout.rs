//! Every guest-physical address mini-kvm uses, in one file (docs/memory-map.md draws it).
//!
//! ```text
//!  0x0000_0000  low RAM: real-mode IVT and BDA, the VMM's tables (0x1000-0x8fff), stack,
//!               flat images at 0x10000, kernels at 1 MiB ...
//!  0xc000_0000  the MMIO hole (1 GiB, never RAM): device windows, the IOAPIC, the local APICs
//!  0x1_0000_0000  RAM above 4 GiB, when a guest has more than 3 GiB
//! ```
//!
//! RAM larger than the hole's start is split around it: two memory slots, the second one
//! continuing at 4 GiB, and the memory maps handed to kernels say so ([`ram_regions`]).

/// A page: the unit of KVM's dirty log and of x86 paging.
pub const PAGE_SIZE: u64 = 0x1000;

/// Where a flat real-mode image is loaded: segment 0x1000, offset 0.
pub const REAL_MODE_SEGMENT: u16 = 0x1000;
pub const REAL_MODE_LOAD_ADDRESS: u64 = (REAL_MODE_SEGMENT as u64) << 4;
/// Real mode can address 1 MiB (plus the 64 KiB "high memory area" above it, which we don't use).
pub const REAL_MODE_ADDRESS_LIMIT: u64 = 1 << 20;

/// The VMM's own tables for guests outside real mode, in low guest RAM. A guest image may not
/// overlap `VMM_TABLES_START..VMM_TABLES_END`.
pub const VMM_TABLES_START: u64 = 0x1000;
pub const VMM_TABLES_END: u64 = 0x9000;
/// The GDT the VMM builds (src/arch/x86/gdt.rs): 6 descriptors.
pub const GDT_ADDRESS: u64 = 0x1000;
/// A 32-bit TSS (104 bytes): KVM wants a valid task register outside real mode.
pub const TSS_ADDRESS: u64 = 0x1080;
/// The MP table (src/arch/x86/mptable.rs), in the rest of the GDT's page: the Intel MP spec's
/// "first kilobyte of the Extended BIOS Data Area", found through the BDA word at
/// [`BDA_EBDA_SEGMENT`]. Room for [`MPTABLE_SIZE`] bytes.
pub const MPTABLE_ADDRESS: u64 = 0x1100;
pub const MPTABLE_SIZE: u64 = 0x2000 - MPTABLE_ADDRESS;
/// The BIOS Data Area word that holds the EBDA's segment (address >> 4).
pub const BDA_EBDA_SEGMENT: u64 = 0x40e;
/// The BIOS Data Area word that tells a PC BIOS whether a reset is warm ([`WARM_RESET`]: skip
/// the memory test) or cold (0). Linux writes it before each reset (src/vmm/vm.rs reads it).
pub const BIOS_WARM_RESET_FLAG: u64 = 0x472;
pub const WARM_RESET: u16 = 0x1234;
/// One page for the boot protocols: the multiboot info or PVH `hvm_start_info`, the memory map,
/// the command line.
pub const BOOT_INFO_ADDRESS: u64 = 0x2000;
pub const BOOT_INFO_SIZE: u64 = 0x1000;
/// Page tables (src/arch/x86/paging.rs): the 32-bit page directory, or PML4, PDPT and 4 PDs.
pub const PAGE_TABLES_ADDRESS: u64 = 0x3000;
/// Where flat protected- and long-mode images are loaded (the same address as real mode's).
pub const FLAT_LOAD_ADDRESS: u64 = REAL_MODE_LOAD_ADDRESS;
/// ESP/RSP at entry for every guest that does not start in real mode: the stack grows down from
/// the load address, below the image and above the VMM's tables.
pub const INITIAL_STACK_TOP: u64 = 0x10000;

/// Where a Linux bzImage's kernel goes (its `code32_start`), and where its command line waits
/// for it (a bzImage's zero page fills the whole boot-information page).
pub const LINUX_KERNEL_ADDRESS: u64 = 0x10_0000;
pub const LINUX_CMDLINE_ADDRESS: u64 = 0x2_0000;
/// The longest command line mini-kvm gives Linux, less its NUL (and at most the kernel's own
/// `cmdline_size`).
pub const LINUX_CMDLINE_MAX: u64 = 4095;

/// The ACPI tables (src/arch/x86/acpi.rs), in the BIOS area of a PC, where a kernel searches
/// for the RSDP when nobody tells it where it is: from the RSDP up to the end of the first MiB.
/// Linux's memory map leaves 0xa0000-0xfffff out (loader/linux.rs), so nothing overwrites them.
pub const ACPI_RSDP_ADDRESS: u64 = 0xe_0000;
pub const ACPI_TABLES_END: u64 = 0x10_0000;

/// The 32-bit MMIO hole: from here to 4 GiB nothing is RAM. Devices live here.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
pub const MMIO_HOLE_END: u64 = 1 << 32;
/// The virtio-mmio transports (src/devices/virtio): [`VIRTIO_SLOTS`] fixed pages from here,
/// slot i at `VIRTIO_MMIO_START + i * VIRTIO_SLOT_SIZE` with IRQ `VIRTIO_FIRST_IRQ + i`. Fixed,
/// so that a guest without ACPI (the teaching OS) knows where to look.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
pub const VIRTIO_SLOT_SIZE: u64 = 0x1000;
pub const VIRTIO_SLOTS: usize = 8;
/// The first IRQ of the virtio slots (0-4 are the timer, keyboard, cascade, COM2 and COM1), so
/// slots 0-7 have IRQs 5-12.
pub const VIRTIO_FIRST_IRQ: u32 = 5;
/// Where device windows (MMIO ranges handed out by the device manager) start and end: the hole
/// after the virtio slots, up to the framebuffer.
pub const DEVICE_WINDOWS_START: u64 = 0xd010_0000;
pub const DEVICE_WINDOWS_END: u64 = FRAMEBUFFER_ADDRESS;
/// The display's linear framebuffer (src/devices/display/vbe.rs), where QEMU's and Bochs' VBE
/// adapters put it: 16 MiB of memory that is not RAM, a KVM slot of its own when there is a
/// display.
pub const FRAMEBUFFER_ADDRESS: u64 = 0xe000_0000;
pub const FRAMEBUFFER_SIZE: u64 = 16 << 20;
/// The VGA text buffer (src/devices/display/vga_text.rs): 80x25 cells of 2 bytes at 0xB8000,
/// in a window of 32 KiB that the display logs writes to.
pub const VGA_TEXT_WINDOW: u64 = 0xb_8000;
pub const VGA_TEXT_WINDOW_SIZE: u64 = 0x8000;
/// KVM's in-kernel IOAPIC, at the address every PC has it.
pub const IOAPIC_ADDRESS: u64 = 0xfec0_0000;
/// Every CPU's local APIC, at the address of the IA32_APIC_BASE MSR's reset value.
pub const LOCAL_APIC_ADDRESS: u64 = 0xfee0_0000;
/// RAM that does not fit below the hole continues here.
pub const HIGH_RAM_START: u64 = 1 << 32;

// The tables sharing the first page of the VMM's area do not overlap (checked at compile time).
const _: () = assert!(MPTABLE_ADDRESS >= TSS_ADDRESS + 104);
const _: () = assert!(MPTABLE_ADDRESS + MPTABLE_SIZE <= BOOT_INFO_ADDRESS);
const _: () = assert!(DEVICE_WINDOWS_END <= IOAPIC_ADDRESS);
const _: () = assert!(FRAMEBUFFER_ADDRESS + FRAMEBUFFER_SIZE <= IOAPIC_ADDRESS);
const _: () =
    assert!(VIRTIO_MMIO_START + VIRTIO_SLOTS as u64 * VIRTIO_SLOT_SIZE <= DEVICE_WINDOWS_START);

/// Default guest RAM: 1 MiB, the whole real-mode address space.
pub const DEFAULT_MEMORY_SIZE: u64 = 1 << 20;
/// Smallest RAM we accept: the load address plus one 64 KiB segment for code, data and stack.
pub const MIN_MEMORY_SIZE: u64 = REAL_MODE_LOAD_ADDRESS + 0x10000;
/// Largest RAM we accept: far more than any guest here needs, and it keeps typos like `--mem
/// 64000G` from reaching mmap.
pub const MAX_MEMORY_SIZE: u64 = 64 << 30;

/// The guest-physical ranges (start, length) of `ram_size` bytes of RAM: one range below the MMIO
/// hole, and a second one from 4 GiB when the RAM does not fit below it.
pub fn ram_regions(ram_size: u64) -> Vec<(u64, u64)> {
    let low = ram_size.min(MMIO_HOLE_START);
    let mut regions = vec![(0, low)];
    if ram_size > low {
        regions.push((HIGH_RAM_START, ram_size - low));
    }
    regions
}

/// What a memory map entry describes (the E820 types: 1 RAM, 2 reserved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    Ram,
    /// The VMM's tables and the boot information: a kernel must not overwrite them while it
    /// still needs them.
    Reserved,
}

impl MemoryKind {
    /// The E820 (and multiboot, and PVH) type number.
    pub fn e820_type(self) -> u32 {
        match self {
            MemoryKind::Ram => 1,
            MemoryKind::Reserved => 2,
        }
    }
}

/// Guest RAM as a kernel is told about it (multiboot, PVH, and later E820): (start, length,
/// kind). The VMM's tables are reserved; the MMIO hole is simply not listed.
pub fn memory_map(ram_size: u64) -> Vec<(u64, u64, MemoryKind)> {
    let mut map = Vec::with_capacity(4);
    for (start, len) in ram_regions(ram_size) {
        if start == 0 {
            map.push((0, VMM_TABLES_START, MemoryKind::Ram));
            map.push((
                VMM_TABLES_START,
                VMM_TABLES_END - VMM_TABLES_START,
                MemoryKind::Reserved,
            ));
            map.push((VMM_TABLES_END, len - VMM_TABLES_END, MemoryKind::Ram));
        } else {
            map.push((start, len, MemoryKind::Ram));
        }
    }
    map
}

/// The end of the RAM below the hole: where low-memory images and tables must end.
pub fn low_ram_end(ram_size: u64) -> u64 {
    ram_size.min(MMIO_HOLE_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_ram_is_one_region() {
        assert_eq!(ram_regions(1 << 20), vec![(0, 1 << 20)]);
        assert_eq!(ram_regions(MMIO_HOLE_START), vec![(0, MMIO_HOLE_START)]);
    }

    #[test]
    fn large_ram_is_split_around_the_hole() {
        assert_eq!(
            ram_regions(4 << 30),
            vec![(0, 0xc000_0000), (0x1_0000_0000, 1 << 30)]
        );
        assert_eq!(low_ram_end(4 << 30), MMIO_HOLE_START);
    }

    #[test]
    fn the_memory_map_reserves_the_tables_and_skips_the_hole() {
        use MemoryKind::*;
        assert_eq!(
            memory_map(2 << 20),
            vec![
                (0, 0x1000, Ram),
                (0x1000, 0x8000, Reserved),
                (0x9000, 0x1f7000, Ram)
            ]
        );
        assert_eq!(
            memory_map(5 << 30)[2..],
            [(0x9000, 0xbfff7000, Ram), (1 << 32, 2 << 30, Ram)]
        );
    }

    #[test]
    fn the_hole_holds_the_apics_and_the_device_windows() {
        for address in [IOAPIC_ADDRESS, LOCAL_APIC_ADDRESS, DEVICE_WINDOWS_START] {
            assert!((MMIO_HOLE_START..MMIO_HOLE_END).contains(&address));
        }
    }
}
