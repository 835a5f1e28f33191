//! Multiboot v1 kernels (the GNU Multiboot Specification 0.6.96): 32-bit protected mode, paging
//! off, EAX = 0x2BADB002, EBX = the physical address of a multiboot information structure with
//! the memory sizes, a memory map, the command line and the boot loader's name.
//!
//! The kernel is loaded through its ELF program headers, or, when its header sets flag 16 (the
//! "a.out kludge"), at the addresses the header itself gives, which is how a flat binary can be
//! a multiboot kernel.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::elf::{ElfImage, entry_in_ram};
use super::{
    BOOT_CMDLINE_OFFSET, BOOT_LOADER_NAME, BOOT_LOADER_NAME_OFFSET, BOOT_MEMORY_MAP_OFFSET,
    LoaderError, check_load_range, write_cmdline,
};
use crate::arch::x86::layout::{BOOT_INFO_ADDRESS, INITIAL_STACK_TOP, low_ram_end, memory_map};
use crate::arch::x86::modes::EntryRegisters;

/// What the boot loader puts in EAX, so the kernel knows it was booted by a multiboot loader.
pub const BOOTLOADER_MAGIC: u32 = 0x2bad_b002;

/// Header flags (the kernel's requests). Bits 0-15 are requirements: a loader that cannot meet
/// one must refuse the kernel.
const FLAG_PAGE_ALIGN_MODULES: u32 = 1 << 0;
const FLAG_MEMORY_INFO: u32 = 1 << 1;
const FLAG_VIDEO_MODE: u32 = 1 << 2;
const FLAG_ADDRESSES: u32 = 1 << 16;

/// Info flags (what the loader provides).
const INFO_MEMORY: u32 = 1 << 0;
const INFO_CMDLINE: u32 = 1 << 2;
const INFO_MEMORY_MAP: u32 = 1 << 6;
const INFO_LOADER_NAME: u32 = 1 << 9;

fn word(image: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(image.get(at..at + 4)?.try_into().ok()?))
}

/// Loads a multiboot kernel whose header is at `header` in `image`, writes the multiboot
/// information, and returns the entry registers.
pub fn load(
    name: &str,
    image: &[u8],
    header: usize,
    memory: &GuestMemoryMmap,
    cmdline: &str,
) -> Result<EntryRegisters, LoaderError> {
    let unsupported = |what: &'static str| LoaderError::MultibootUnsupported {
        name: name.to_string(),
        what,
    };
    // `detect` found magic, flags and checksum, so these three words exist.
    let flags = word(image, header + 4).ok_or(unsupported("its header is cut short"))?;
    if flags & FLAG_VIDEO_MODE != 0 {
        return Err(unsupported(
            "it asks for a video mode (header flag 2), and mini-kvm has no display",
        ));
    }
    let known = FLAG_PAGE_ALIGN_MODULES | FLAG_MEMORY_INFO | FLAG_VIDEO_MODE;
    if flags & 0xffff & !known != 0 {
        return Err(unsupported(
            "it requires a feature this loader does not know (header flags 3-15)",
        ));
    }

    let entry = if flags & FLAG_ADDRESSES != 0 {
        load_by_header_addresses(name, image, header, memory)?
    } else {
        if !image.starts_with(b"\x7fELF") {
            return Err(unsupported(
                "it has no address fields (header flag 16) and is not an ELF file, so there is no \
                 saying where it goes",
            ));
        }
        let elf = ElfImage::parse(name, image)?;
        if elf.is_64 {
            return Err(unsupported(
                "it is an ELF64 file without the address fields (flag 16); multiboot v1 kernels are 32-bit",
            ));
        }
        elf.check_placement(name, memory)?;
        elf.load(image, memory)?;
        elf.entry
    };
    if !entry_in_ram(memory, entry) {
        return Err(LoaderError::EntryOutsideMemory {
            name: name.to_string(),
            entry,
        });
    }

    write_info(memory, cmdline)?;
    Ok(EntryRegisters {
        entry,
        stack: INITIAL_STACK_TOP,
        rax: u64::from(BOOTLOADER_MAGIC),
        rbx: BOOT_INFO_ADDRESS,
        rsi: 0,
    })
}

/// The a.out kludge: the header says where its own bytes go (`header_addr`), which part of the
/// file to load (`load_addr`..`load_end_addr`), how much zeroed memory follows (`bss_end_addr`)
/// and where to start (`entry_addr`).
fn load_by_header_addresses(
    name: &str,
    image: &[u8],
    header: usize,
    memory: &GuestMemoryMmap,
) -> Result<u64, LoaderError> {
    let bad = |what: &'static str| LoaderError::MultibootUnsupported {
        name: name.to_string(),
        what,
    };
    let field =
        |index: usize| word(image, header + 12 + index * 4).ok_or(bad("its header is cut short"));
    let (header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr) =
        (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
    // The file offset that goes to load_addr: the header's offset minus its distance from it.
    let distance = header_addr
        .checked_sub(load_addr)
        .ok_or(bad("its header_addr is below its load_addr"))? as usize;
    let file_start = header
        .checked_sub(distance)
        .ok_or(bad("its load_addr lies before the start of the file"))?;
    let load_size = if load_end_addr == 0 {
        image.len() - file_start
    } else {
        (load_end_addr
            .checked_sub(load_addr)
            .ok_or(bad("load_end_addr is below load_addr"))? as usize)
            .min(image.len() - file_start)
    };
    let end = if bss_end_addr == 0 {
        u64::from(load_addr) + load_size as u64
    } else {
        u64::from(bss_end_addr).max(u64::from(load_addr) + load_size as u64)
    };
    check_load_range(
        name,
        memory,
        u64::from(load_addr),
        end - u64::from(load_addr),
    )?;
    memory.write_slice(
        &image[file_start..file_start + load_size],
        GuestAddress(u64::from(load_addr)),
    )?;
    Ok(u64::from(entry_addr))
}

/// Writes the multiboot information structure, its memory map, the boot loader's name and the
/// command line into the boot-information page (docs/memory-map.md).
fn write_info(memory: &GuestMemoryMmap, cmdline: &str) -> Result<(), LoaderError> {
    let ram_size = super::ram_size(memory);
    let mut map = Vec::new();
    for (start, length, kind) in memory_map(ram_size) {
        map.extend_from_slice(&20u32.to_le_bytes()); // size of the rest of this entry
        map.extend_from_slice(&start.to_le_bytes());
        map.extend_from_slice(&length.to_le_bytes());
        map.extend_from_slice(&kind.e820_type().to_le_bytes());
    }
    let cmdline_address = write_cmdline(memory, cmdline)?;
    let loader_name_address = BOOT_INFO_ADDRESS + BOOT_LOADER_NAME_OFFSET;
    memory.write_slice(BOOT_LOADER_NAME, GuestAddress(loader_name_address))?;
    let map_address = BOOT_INFO_ADDRESS + BOOT_MEMORY_MAP_OFFSET;
    memory.write_slice(&map, GuestAddress(map_address))?;
    debug_assert!(BOOT_MEMORY_MAP_OFFSET + map.len() as u64 <= BOOT_LOADER_NAME_OFFSET);
    debug_assert!(BOOT_LOADER_NAME_OFFSET + BOOT_LOADER_NAME.len() as u64 <= BOOT_CMDLINE_OFFSET);

    // KiB of RAM from 0 up to 640 KiB ("lower") and from 1 MiB up to the first hole ("upper"),
    // as a PC BIOS reports.
    let lower_kib = ram_size.min(640 << 10) >> 10;
    let upper_kib = low_ram_end(ram_size).saturating_sub(1 << 20) >> 10;
    let mut info = [0u32; 22];
    info[0] = INFO_MEMORY | INFO_CMDLINE | INFO_MEMORY_MAP | INFO_LOADER_NAME;
    info[1] = lower_kib as u32;
    info[2] = upper_kib.min(u64::from(u32::MAX)) as u32;
    info[4] = cmdline_address as u32;
    info[11] = map.len() as u32; // mmap_length
    info[12] = map_address as u32; // mmap_addr
    info[16] = loader_name_address as u32;
    let bytes: Vec<u8> = info.iter().flat_map(|w| w.to_le_bytes()).collect();
    memory.write_slice(&bytes, GuestAddress(BOOT_INFO_ADDRESS))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::detect::MULTIBOOT_HEADER_MAGIC;

    const MIB: u64 = 1 << 20;

    /// A multiboot kernel loaded by its header's addresses (flag 16): the header at file offset
    /// 0 and load address 1 MiB, 16 bytes of code after it, entry just after the header.
    fn kernel(flags: u32) -> Vec<u8> {
        let header_addr = MIB as u32;
        let words = [
            MULTIBOOT_HEADER_MAGIC,
            flags,
            0u32.wrapping_sub(MULTIBOOT_HEADER_MAGIC.wrapping_add(flags)),
            header_addr,          // header_addr
            header_addr,          // load_addr
            0,                    // load_end_addr: the whole file
            header_addr + 0x1000, // bss_end_addr
            header_addr + 32,     // entry_addr
        ];
        let mut image: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        image.extend_from_slice(&[0xf4; 16]);
        image
    }

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), (4 * MIB) as usize)]).unwrap()
    }

    fn refusal(image: &[u8]) -> String {
        match load("k", image, 0, &memory(), "") {
            Ok(_) => "accepted".to_string(),
            Err(LoaderError::MultibootUnsupported { what, .. }) => what.to_string(),
            Err(other) => other.to_string(),
        }
    }

    #[test]
    fn a_kernel_with_header_addresses_is_loaded_where_it_asks() {
        let memory = memory();
        let image = kernel(FLAG_ADDRESSES | FLAG_MEMORY_INFO);
        let registers = load("k", &image, 0, &memory, "quiet").unwrap();
        assert_eq!(registers.entry, MIB + 32);
        assert_eq!(registers.rax, u64::from(BOOTLOADER_MAGIC));
        assert_eq!(registers.rbx, BOOT_INFO_ADDRESS);
        let mut loaded = vec![0u8; image.len()];
        memory.read_slice(&mut loaded, GuestAddress(MIB)).unwrap();
        assert_eq!(loaded, image);
    }

    #[test]
    fn header_flags_and_fields_are_checked() {
        assert_eq!(
            refusal(&kernel(FLAG_ADDRESSES | FLAG_VIDEO_MODE)),
            "it asks for a video mode (header flag 2), and mini-kvm has no display"
        );
        assert_eq!(
            refusal(&kernel(FLAG_ADDRESSES | 1 << 3)),
            "it requires a feature this loader does not know (header flags 3-15)"
        );
        let mut image = kernel(FLAG_ADDRESSES);
        image[16..20].copy_from_slice(&(MIB as u32 + 64).to_le_bytes()); // load_addr > header_addr
        assert_eq!(refusal(&image), "its header_addr is below its load_addr");
        let mut image = kernel(FLAG_ADDRESSES);
        image[12..16].copy_from_slice(&(MIB as u32 + 64).to_le_bytes()); // header 64 bytes in
        assert_eq!(
            refusal(&image),
            "its load_addr lies before the start of the file"
        );
        let mut image = kernel(FLAG_ADDRESSES);
        image[20..24].copy_from_slice(&(MIB as u32 - 4).to_le_bytes()); // load_end_addr
        assert_eq!(refusal(&image), "load_end_addr is below load_addr");
        let mut image = kernel(FLAG_ADDRESSES);
        image[28..32].copy_from_slice(&(64 * MIB as u32).to_le_bytes()); // entry_addr
        assert!(refusal(&image).contains("entry"), "{}", refusal(&image));
        assert_eq!(
            refusal(&kernel(FLAG_ADDRESSES)[..24]),
            "its header is cut short"
        );
        // Without flag 16 the file must be an ELF, and this one is not.
        assert_eq!(
            refusal(&kernel(0)),
            "it has no address fields (header flag 16) and is not an ELF file, so there is no \
             saying where it goes"
        );
    }
}
